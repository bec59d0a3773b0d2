"""LoRA SFT throughput: adaptlab's loop (`adaptlab.train.loop.tune`) against TRL SFTTrainer + PEFT.

Held equal: model (SmolLM2-135M-Instruct, fp32), the same 120 chats of varied length, LoRA
(r=8, alpha=16, dropout 0.05, q/k/v/o), effective batch 4, lr 2e-4, the number of optimizer steps,
seed 0, no checkpoint saving. Everything else is each stack's default (TRL: gradient checkpointing
on, loss on the whole sequence, random order, no warmup; adaptlab: no checkpointing, loss on
assistant tokens, length-grouped batches, 2 warmup steps). `trl-nogc` is TRL with only gradient
checkpointing switched off, to show how much of the gap that one default explains.

Each contender runs in its own process (peak RSS is its own). Tokens are counted the same way for
every contender: a forward pre-hook on the transformer backbone sums the attention mask of every
training forward (non-padding tokens actually fed). Validation loss is computed after training by
one shared function: mean token cross-entropy on assistant tokens of 24 held-out chats.

    python -m bench.train_sft [--steps 12] [--contenders adaptlab,trl,trl-nogc]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import common
from .common import (MODEL, chat_examples, load_bench_model, matmul_flops, machine_info, peak_rss_mb,
                     run_child, write_json_atomic, write_result)

LORA = dict(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
BATCH, LR, MAX_LEN, SEED = 4, 2e-4, 512, 0
CONTENDERS = ("adaptlab", "trl", "trl-nogc")


# -- shared measurement ------------------------------------------------------------------------
class TokenCounter:
    """Forward pre-hook on the backbone: sums attention-mask ones of every training forward."""

    def __init__(self, backbone):
        self.tokens = self.forwards = 0
        self.handle = backbone.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not module.training:
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        self.forwards += 1


def base_param_count(model) -> int:
    """Parameters of the frozen base (tied embedding/LM head counted once, LoRA excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


def val_loss(model, tok, examples: list[dict], batch: int = 4) -> dict:
    """Mean token cross-entropy over the assistant tokens of `examples` (one definition for all)."""
    import torch

    from adaptlab.train.batches import collate, tokenize

    rows = tokenize(tok, examples, MAX_LEN, truncate=True)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            ids, mask, labels = collate(rows, list(range(s, min(s + batch, len(rows)))),
                                        tok.pad_token_id, device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            y = labels[:, 1:]
            total += float(torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), y.reshape(-1),
                ignore_index=-100, reduction="sum"))
            count += int((y != -100).sum())
    model.train(was_training)
    return {"val_loss": round(total / count, 4), "val_tokens": count}


def _summary(name: str, step_s: list[float], counter: TokenCounter, n_params: int, extra: dict) -> dict:
    loop_s = sum(step_s)
    return {"contender": name, "steps": len(step_s), "loop_seconds": round(loop_s, 2),
            "tokens": counter.tokens, "forwards": counter.forwards,
            "tokens_per_s": round(counter.tokens / loop_s, 1),
            "s_per_step": round(loop_s / len(step_s), 3),
            "median_s_per_step": round(statistics.median(step_s), 3),
            "first_step_s": round(step_s[0], 3), "step_seconds": [round(s, 3) for s in step_s],
            "base_params": n_params, "peak_rss_mb_train": peak_rss_mb(), **extra}


# -- contenders (each in its own process) ------------------------------------------------------
def child_base(steps: int) -> dict:
    """The untuned model's validation loss: the reference both tuned models should beat."""
    model, tok = load_bench_model()
    _, val = chat_examples()
    return {"contender": "base", **val_loss(model, tok, val), "peak_rss_mb": peak_rss_mb()}


def child_probe(steps: int) -> dict:
    dtype = "bfloat16" if common.PRECISION == "bf16" else "float32"
    n = 2048 if common.DEVICE == "cpu" else 8192
    return {"contender": "probe", "machine": machine_info(), "matmul_dtype": dtype, "matmul_n": n,
            "matmul_flops": matmul_flops(n, 5, dtype)}


def child_adaptlab(steps: int) -> dict:
    import csv
    from dataclasses import replace

    from adaptlab.train.methods import lora
    from adaptlab.train.config import TuneConfig
    from adaptlab.train.loop import tune

    grabbed = {}

    def build(cfg):  # the benchmark needs the model tune() builds, to hook it and evaluate it
        # with RANDOM_INIT, LoRA goes on the freshly initialized architecture instead
        model, tok = lora.attach(cfg, *load_bench_model()) if common.RANDOM_INIT else lora.build(cfg)
        grabbed.update(model=model, tok=tok, counter=TokenCounter(model.get_base_model().base_model))
        return model, tok

    train, val = chat_examples()
    cfg = TuneConfig(model=MODEL, precision=common.PRECISION, device=common.DEVICE, lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                     lora_dropout=LORA["lora_dropout"], target_modules=LORA["target_modules"],
                     lr=LR, max_steps=steps, batch_size=BATCH, grad_accum=1, max_length=MAX_LEN,
                     seed=SEED, save_every=0)
    with tempfile.TemporaryDirectory(prefix="bench-adaptlab-") as out:
        summary = tune(cfg, train, out, factory=replace(lora.LORA, build=build))
        with open(Path(out) / "loss.csv", newline="") as f:
            log = list(csv.DictReader(f))
    rss = peak_rss_mb()
    cum = [0.0] + [float(r["seconds"]) for r in log]
    step_s = [b - a for a, b in zip(cum, cum[1:])]
    model, tok, counter = grabbed["model"], grabbed["tok"], grabbed["counter"]
    res = _summary("adaptlab", step_s, counter, base_param_count(model),
                   {"final_train_loss": float(log[-1]["loss"]), "train_loss_on": "assistant tokens",
                    "tokens_counted_by_tune": summary["tokens_this_session"],
                    **val_loss(model, tok, val)})
    res["peak_rss_mb_train"] = rss
    return res


def _child_trl(steps: int, gradient_checkpointing: bool | None) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from adaptlab.models import resolve

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.marks = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kw):
            self.marks.append(time.perf_counter())

    if common.RANDOM_INIT:
        model, tok = load_bench_model()
    else:
        path = resolve(MODEL)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(path)
    counter = TokenCounter(model.base_model)
    train, val = chat_examples()
    extra = {} if gradient_checkpointing is None else {"gradient_checkpointing": gradient_checkpointing}
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        args = SFTConfig(output_dir=out, max_length=MAX_LEN, per_device_train_batch_size=BATCH,
                         gradient_accumulation_steps=1, max_steps=steps, learning_rate=LR,
                         bf16=common.PRECISION == "bf16", fp16=False, use_cpu=common.DEVICE == "cpu",
                         report_to=[], save_strategy="no", logging_steps=1,
                         seed=SEED, disable_tqdm=True, **extra)
        trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(train),
                             processing_class=tok, peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
                             callbacks=[timer])
        trainer.train()
    rss = peak_rss_mb()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    step_s = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    name = "trl" if gradient_checkpointing is None else "trl-nogc"
    res = _summary(name, step_s, counter, base_param_count(trainer.model),
                   {"final_train_loss": float(logs[-1]["loss"]),
                    "train_loss_on": "assistant tokens" if args.assistant_only_loss else "whole sequence",
                    "gradient_checkpointing": args.gradient_checkpointing,
                    "tokens_counted_by_trl": int(logs[-1].get("num_tokens", 0)) or None,
                    **val_loss(trainer.model, tok, val)})
    res["peak_rss_mb_train"] = rss
    return res


CHILDREN = {"base": child_base, "probe": child_probe, "adaptlab": child_adaptlab,
            "trl": lambda steps: _child_trl(steps, None),
            "trl-nogc": lambda steps: _child_trl(steps, False)}


# -- parent ------------------------------------------------------------------------------------
def run(steps: int = 12, contenders=CONTENDERS, quick: bool = False) -> dict:
    args = ["--steps", str(steps)]
    probe = run_child("bench.train_sft", ["--child", "probe", *args])
    base = run_child("bench.train_sft", ["--child", "base", *args])
    rows = []
    for name in contenders:
        print(f"[bench] train_sft: {name}, {steps} steps", file=sys.stderr, flush=True)
        rows.append(run_child("bench.train_sft", ["--child", name, *args]))
    # The ceiling is probed before and after the contenders; the higher is the less disturbed one.
    probe2 = run_child("bench.train_sft", ["--child", "probe", *args])
    probes = [probe["matmul_flops"], probe2["matmul_flops"]]
    peak = max(probes)
    for r in rows:
        r["flops_per_token"] = 4 * r["base_params"]
        r["mfu"] = round(r["tokens_per_s"] * r["flops_per_token"] / peak, 4)
    by = {r["contender"]: r for r in rows}
    ratios = {f"adaptlab/{k}": round(by["adaptlab"]["tokens_per_s"] / by[k]["tokens_per_s"], 2)
              for k in by if k != "adaptlab" and "adaptlab" in by}
    data = {"model": MODEL, "steps": steps, "batch_size": BATCH, "lr": LR, "lora": LORA,
            "precision": common.PRECISION, "train_examples": 120, "val_examples": 24,
            "matmul_dtype": probe["matmul_dtype"], "matmul_n": probe["matmul_n"],
            "matmul_flops": round(peak), "matmul_probes": [round(p) for p in probes],
            "probe_loadavg_1m": [probe["loadavg_1m"], probe2["loadavg_1m"]],
            "base_val_loss": base["val_loss"],
            "contenders": rows, "tokens_per_s_ratio": ratios,
            "notes": ["MFU = non-padding tokens/s x 4 x base params / square matmul FLOP/s (in the "
                      "run's precision) "
                      "(model FLOPs: recomputation by gradient checkpointing and padding not counted)",
                      "final_train_loss is each stack's own logged loss (see train_loss_on); "
                      "val_loss is one shared definition"]}
    write_result("train_sft", data, probe["machine"], quick)
    return data


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--quick", action="store_true", help="3 steps, results under bench/results/quick/")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        write_json_atomic(Path(a.json_out), CHILDREN[a.child](a.steps))
        return
    run(3 if a.quick else a.steps, [c for c in a.contenders.split(",") if c], a.quick)


if __name__ == "__main__":
    main()
