"""Fakes shared by the golden generator (old code) and the equivalence test (new code)."""
import hashlib

import numpy as np

from adaptlab.lm.fake import FakeLM


def fake_embed(texts, ref="minilm-l6"):
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, hashlib.md5(w.encode()).digest()[0] % 64] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def reply(chat, p):
    """Depends on the system prompt, the demo turns, the question and the sampling seed."""
    system = chat[0]["content"] if chat[0]["role"] == "system" else ""
    h = hashlib.sha256((repr(chat) + f"{p.seed}/{p.temperature}/{p.max_new_tokens}").encode()).hexdigest()
    q = chat[-1]["content"].splitlines()[0][:60]
    if "voice assistant" in system:
        return f"Well, you know, here's the thing about {q} You'll love it, it's {h[:6]}. Really!"
    return f"The answer to {q} is documented as follows: item {h[:6]}. Furthermore, it is {len(chat)}."


class FakeModel:
    def unload(self):
        return self


class FakeLocalLM(FakeLM):
    def __init__(self, model_ref, precision="fp32", batch_size=8, model=None, tokenizer=None,
                 name=None, **kw):
        super().__init__(reply, name=name or f"local:{model_ref}")
        self.model, self.tok = model or FakeModel(), tokenizer


def fake_tune_files(d, precision):
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_model.safetensors").write_bytes(b"fake adapter " + precision.encode())
    (d / "adapter_config.json").write_text("{}")
    (d / "loss.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    (d / "eval.csv").write_text("step,tone_rate\n2,0.5\n")


RECIPE = {
    "name": "golden",
    "labeled_outputs": "corpora/tone/labeled_outputs.jsonl",
    "judge_calibration_limit": 40,
    "split": {"eval_questions": 12, "val_questions": 4, "train_questions": 30},
    "train_sizes": [8, 16], "main_size": 16, "precisions": ["fp32", "bf16"],
    "curve_every": 0, "max_new_tokens": 16,
    "filters": {"min_topic_sim": 0.0, "min_tone": 0.3},
    "teacher": {"model": "smollm2-135m-instruct", "batch_size": 8},
    "judge": {"model": "smollm2-135m-instruct", "batch_size": 8},
}
