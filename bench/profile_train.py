"""Where an adaptlab LoRA training step spends its time, and what a few changes would buy.

Rebuilds the exact step of `adaptlab.train.loop.tune` (same model setup via the LoRA factory,
`adaptlab.train.methods.lora.LORA.build`, same tokenization, length-grouped batches and collate,
AdamW), then:

1. profiles a few steps with torch.profiler (self CPU time by op, and by category);
2. times the same fixed batches under variants: as tune does it (LM head and cross-entropy only
   on the positions that carry a label); the plain forward with the LM head on every position;
   eager attention; one thread; bf16 autocast;
3. measures padding: the share of padded positions with adaptlab's length-grouped batches against
   random batches (TRL's default sampler), over the same number of steps.

    python -m bench.profile_train [--steps 4]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from .common import MODEL, chat_examples, machine_info, write_json_atomic, write_result

CATEGORIES = [  # first match wins; names are aten op names
    ("matmul (linear/mm/bmm)", ("addmm", "mm", "bmm", "linear", "matmul", "baddbmm")),
    ("attention (sdpa)", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("softmax / cross-entropy", ("softmax", "nll_loss", "cross_entropy")),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv")),
    ("copies / layout", ("copy_", "clone", "contiguous", "cat", "transpose", "to", "empty", "zeros", "fill_",
                          "index", "expand", "view", "reshape", "permute", "slice", "select", "unsqueeze")),
    ("elementwise / norms", ("mul", "add", "sub", "div", "silu", "pow", "mean", "rsqrt", "neg", "exp",
                              "sum", "dropout", "bernoulli", "where", "masked", "sigmoid", "cos", "sin")),
]


def _category(name: str) -> str:
    n = name.lower().removeprefix("aten::")
    for cat, keys in CATEGORIES:
        if any(n == k or n.startswith(k) or k in n for k in keys):
            return cat
    return "other"


def _setup():
    import torch

    from adaptlab.train.methods import lora
    from adaptlab.train.batches import batch_order, tokenize
    from adaptlab.train.config import TuneConfig

    cfg = TuneConfig(model=MODEL, max_steps=12, batch_size=4, seed=0, save_every=0)
    torch.manual_seed(cfg.seed)  # as tune's setup does before the factory builds
    model, tok = lora.LORA.build(cfg)
    train, _ = chat_examples()
    rows = tokenize(tok, train, cfg.max_length, cfg.truncate)
    batches = batch_order([len(r[0]) for r in rows], cfg.batch_size, cfg.seed, 0)
    return cfg, model, tok, rows, batches


def _step_fn(model, tok, rows, opt, mode: str):
    import torch

    from adaptlab.train.batches import collate

    from accelerate import Accelerator

    from adaptlab.train.loop import _loss

    acc = Accelerator(cpu=True)

    def step(idx):
        ids, mask, labels = collate(rows, idx, tok.pad_token_id, "cpu")
        if mode == "full LM head":  # the plain forward: logits and loss on every position
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        elif mode == "bf16 autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = _loss(acc, model, ids, mask, labels, head_only=True)
        else:  # tune's own loss: LM head on the labelled positions only
            loss = _loss(acc, model, ids, mask, labels, head_only=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(mask.sum()), float(loss.detach())

    return step


def _time_variant(model, tok, rows, batches, mode: str, steps: int) -> dict:
    import torch

    threads, attn = torch.get_num_threads(), model.config._attn_implementation
    if mode == "1 thread":
        torch.set_num_threads(1)
    if mode == "eager attention":
        model.get_base_model().set_attn_implementation("eager")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    step = _step_fn(model, tok, rows, opt, mode)
    model.train()
    try:
        step(batches[0])  # warm-up
        t, tokens = time.perf_counter(), 0
        for idx in batches[1 : steps + 1]:
            tokens += step(idx)[0]
        s = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
        model.get_base_model().set_attn_implementation(attn)
    return {"variant": mode, "steps": steps, "s_per_step": round(s / steps, 3),
            "tokens_per_s": round(tokens / s, 1)}


def _profile(model, tok, rows, batches, steps: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    step = _step_fn(model, tok, rows, opt, "as tune")
    model.train()
    step(batches[0])
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for idx in batches[1 : steps + 1]:
            step(idx)
    wall = time.perf_counter() - t
    ev = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ev)
    cats: dict[str, float] = defaultdict(float)
    for e in ev:
        cats[_category(e.key)] += e.self_cpu_time_total / total
    top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:15]
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)
    return {"steps": steps, "s_per_step": round(wall / steps, 3),
            "note": "profiled wall time includes profiler overhead",
            "top_ops": [{"name": e.key, "share": round(e.self_cpu_time_total / total, 4),
                         "calls": e.count} for e in top],
            "categories": {k: round(v, 4) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}}


def _padding(rows, steps: int, batch: int) -> dict:
    from adaptlab.train.batches import batch_order

    lengths = [len(r[0]) for r in rows]
    labelled = sum(sum(1 for y in r[1] if y != -100) for r in rows) / sum(lengths)

    def waste(bs):
        real = sum(lengths[i] for b in bs for i in b)
        return round(1 - real / sum(len(b) * max(lengths[i] for i in b) for b in bs), 3)

    grouped = [b for e in range(4) for b in batch_order(lengths, batch, 0, e)][:steps]
    rng = random.Random(0)
    rand = []
    while len(rand) < steps:
        idx = list(range(len(lengths)))
        rng.shuffle(idx)
        rand += [idx[i : i + batch] for i in range(0, len(idx), batch)]
    return {"lengths": {"min": min(lengths), "median": sorted(lengths)[len(lengths) // 2], "max": max(lengths)},
            "padding_share_length_grouped": waste(grouped), "padding_share_random": waste(rand[:steps]),
            "label_share_of_tokens": round(labelled, 3)}


def child(steps: int, variants: list[str]) -> dict:
    import torch

    torch.manual_seed(0)
    cfg, model, tok, rows, batches = _setup()
    res = {"machine": machine_info(), "padding": _padding(rows, 12, cfg.batch_size),
           "attn_implementation": model.config._attn_implementation}
    res.update(_profile(model, tok, rows, batches, steps))
    res["variants"] = []
    for v in variants:
        n = 2 if v == "bf16 autocast" else steps
        res["variants"].append(_time_variant(model, tok, rows, batches, v, n))
        print(f"[bench] profile: {res['variants'][-1]}", file=sys.stderr, flush=True)
    return res


VARIANTS = ["as tune", "full LM head", "eager attention", "1 thread", "bf16 autocast"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    if a.child:
        write_json_atomic(Path(a.json_out), child(a.steps, variants))
        return
    from .common import run_child

    res = run_child("bench.profile_train", ["--child", "--steps", str(a.steps), "--variants", ",".join(variants)])
    machine = res.pop("machine")
    write_result("profile_train", res, machine)
    for k, v in res["categories"].items():
        print(f"{v * 100:5.1f}%  {k}")
    for v in res["variants"]:
        print(f"{v['variant']:>18}: {v['s_per_step']:.2f} s/step, {v['tokens_per_s']:.1f} tok/s")
    print(res["padding"])


if __name__ == "__main__":
    main()
