"""Generation throughput: adaptlab's batched `LocalLM.chat` against one `model.generate` per prompt.

Same loaded model (SmolLM2-135M-Instruct, fp32), greedy, max_new_tokens=48, the same prompts
(corpus questions). Tokens are counted from what `generate` returns: per row, the new tokens up to
and including the first stop token (what a user gets; the pad slots a finished row keeps filling
while its batch runs on are counted separately as `slots`). At temperature 0 the batched texts are
compared with the one-at-a-time texts; left padding changes the shapes of the fp32 matmuls, so a
few greedy paths can flip where two tokens are nearly tied. The count is reported as measured.

    python -m bench.generate [--prompts 32] [--batch-sizes 1,4,8,16,32]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import common
from .common import (MODEL, load_bench_model, machine_info, peak_rss_mb, questions, run_child,
                     write_json_atomic, write_result)

MAX_NEW = 48


class GenCounter:
    """Wraps `model.generate` to count useful new tokens and computed slots."""

    def __init__(self, model, stops: list[int]):
        self.model, self.stops, self.orig = model, set(stops), model.generate
        self.tokens = self.slots = 0
        model.generate = self

    def __call__(self, *args, **kwargs):
        gen = self.orig(*args, **kwargs)
        width = kwargs["input_ids"].shape[1]
        new = gen[:, width:].tolist()
        self.slots += len(new) * len(new[0]) if new else 0
        for row in new:
            n = next((i + 1 for i, t in enumerate(row) if t in self.stops), len(row))
            self.tokens += n
        return gen

    def reset(self):
        self.tokens = self.slots = 0

    def restore(self):
        self.model.generate = self.orig


def _naive(model, tok, chats, stops) -> list[str]:
    import torch

    from adaptlab.models.chat import render_ids

    out = []
    for chat in chats:
        ids = torch.tensor([render_ids(tok, chat, add_generation_prompt=True)], device=common.DEVICE)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=MAX_NEW, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def _common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def child(n_prompts: int, sizes: list[int]) -> dict:
    from adaptlab.lm.base import GenParams
    from adaptlab.lm.local import LocalLM
    from adaptlab.models.chat import stop_token_ids
    import torch

    model, tok = load_bench_model()
    if common.PRECISION == "bf16":
        model = model.to(torch.bfloat16)  # what LocalLM(precision="bf16") loads
    stops = stop_token_ids(tok)
    chats = questions(n_prompts)
    counter = GenCounter(model, stops)
    _naive(model, tok, chats[:1], stops)  # warm-up (thread pool, allocator) outside the timings
    counter.reset()
    t = time.perf_counter()
    ref = _naive(model, tok, chats, stops)
    naive_s = time.perf_counter() - t
    rows = [{"contender": "naive generate loop", "batch_size": 1, "seconds": round(naive_s, 2),
             "tokens": counter.tokens, "slots": counter.slots,
             "tokens_per_s": round(counter.tokens / naive_s, 1), "speedup": 1.0,
             "identical": n_prompts}]
    params = GenParams(max_new_tokens=MAX_NEW, temperature=0.0)
    for bs in sizes:
        lm = LocalLM(MODEL, model=model, tokenizer=tok, batch_size=bs, device=common.DEVICE)
        counter.reset()
        t = time.perf_counter()
        texts = lm.chat(chats, params)
        s = time.perf_counter() - t
        diff = [i for i, (a, b) in enumerate(zip(ref, texts)) if a != b]
        rows.append({"contender": "adaptlab LocalLM.chat", "batch_size": bs, "seconds": round(s, 2),
                     "tokens": counter.tokens, "slots": counter.slots,
                     "tokens_per_s": round(counter.tokens / s, 1),
                     "speedup": round((counter.tokens / s) / rows[0]["tokens_per_s"], 2),
                     "identical": n_prompts - len(diff),
                     "differing": [{"prompt": i, "same_chars": _common_prefix(ref[i], texts[i]),
                                    "naive": ref[i], "batched": texts[i]} for i in diff[:3]]})
        print(f"[bench] generate: batch {bs}: {rows[-1]['tokens_per_s']} tok/s, "
              f"{rows[-1]['identical']}/{n_prompts} identical", file=sys.stderr, flush=True)
    counter.restore()
    rows += _llamacpp_rows(chats, rows[0]["tokens_per_s"])
    return {"machine": machine_info(), "rows": rows, "peak_rss_mb": peak_rss_mb(),
            "samples": [{"prompt": chats[i][0]["content"], "naive": ref[i]} for i in range(2)]}


def _llamacpp_rows(chats, naive_tok_s: float) -> list[dict]:
    """The optional llama.cpp backend on the packaged GGUF (quantized as shipped), one chat at a
    time: tokens as llama.cpp counts them; its texts are not compared (other weights)."""
    import importlib.util

    if common.DEVICE != "cpu" or common.RANDOM_INIT or importlib.util.find_spec("llama_cpp") is None:
        return []
    from adaptlab.lm.base import GenParams
    from adaptlab.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(MODEL, n_ctx=2048)
    params = GenParams(max_new_tokens=MAX_NEW, temperature=0.0)
    lm.chat(chats[:1], params)  # warm-up
    lm.completion_tokens = 0
    t = time.perf_counter()
    lm.chat(chats, params)
    s = time.perf_counter() - t
    tok_s = lm.completion_tokens / s
    print(f"[bench] generate: llama.cpp: {tok_s:.1f} tok/s", file=sys.stderr, flush=True)
    return [{"contender": "adaptlab LlamaCppLM (GGUF as shipped)", "batch_size": 1,
             "seconds": round(s, 2), "tokens": lm.completion_tokens, "slots": lm.completion_tokens,
             "tokens_per_s": round(tok_s, 1), "speedup": round(tok_s / naive_tok_s, 2),
             "identical": None, "gguf": lm.path.name}]


def run(n_prompts: int = 32, sizes=(1, 4, 8, 16, 32), quick: bool = False) -> dict:
    print(f"[bench] generate: {n_prompts} prompts, batch sizes {list(sizes)}", file=sys.stderr, flush=True)
    res = run_child("bench.generate", ["--child", "--prompts", str(n_prompts),
                                       "--batch-sizes", ",".join(map(str, sizes))])
    machine = res.pop("machine")
    data = {"model": MODEL, "precision": common.PRECISION, "greedy": True, "max_new_tokens": MAX_NEW,
            "prompts": n_prompts, **res,
            "notes": ["tokens = new tokens up to and including the first stop token; slots = all "
                      "positions generated, including those of rows already finished",
                      "identical = batched text equal to the one-at-a-time text for the same prompt"]}
    write_result("generate", data, machine, quick)
    return data


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch-sizes", default="1,4,8,16,32")
    p.add_argument("--quick", action="store_true", help="8 prompts, batch 1 and 8, results under bench/results/quick/")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.batch_sizes.split(",") if s]
    if a.child:
        write_json_atomic(Path(a.json_out), child(a.prompts, sizes))
        return
    if a.quick:
        run(8, (1, 8), quick=True)
    else:
        run(a.prompts, sizes)


if __name__ == "__main__":
    main()
