"""LoRA SFT throughput: adaptlab's loop (`adaptlab.train.loop.tune`) against TRL SFTTrainer + PEFT.

Held equal: model (SmolLM2-135M-Instruct, fp32), the same 120 chats of varied length, LoRA
(r=8, alpha=16, dropout 0.05, q/k/v/o), effective batch 4, lr 2e-4, the number of optimizer steps
(30 by default: one epoch, so every contender trains on the same 120 chats, each in its own
order), seed 0, no checkpoint saving. Everything else is each stack's default (TRL: gradient checkpointing
on, loss on the whole sequence, random order, no warmup; adaptlab: no checkpointing, loss on
assistant tokens, random batches packed into one row each). The learning-rate schedule is held equal: linear decay
from lr, no warmup (TRL's default; adaptlab's own default warms up for 2 steps). `trl-nogc` is TRL with only gradient
checkpointing switched off, to show how much of the gap that one default explains;
`adaptlab-gc` is adaptlab with `gradient_checkpointing=true`, its memory against its time;
`adaptlab-peft` is adaptlab with `fused_lora=false` (PEFT's own LoRA forward and transformers'
RMSNorm instead of `adaptlab.train.fused_lora` and `fused_norm`), to show what the fused layers
buy; `adaptlab-grouped` is adaptlab
with `batching=grouped` (length-grouped padded batches instead of random packed ones), to show
what the order costs or buys.

`trl-fast` is TRL with its own speed options on, as a user who cares about speed sets them:

- `padding_free=True`: the batch's chats are concatenated into one row with per-chat
  `position_ids` and no attention mask. TRL documents it for FlashAttention only, but transformers
  (>= 5) builds a block-diagonal causal mask from such `position_ids` for sdpa/eager attention
  too (`masking_utils.find_packed_sequence_indices`, used when there is no attention mask and no
  KV cache; TRL's loss passes `use_cache=False`); sdpa then attends over the whole packed row
  under that mask, so attention costs grow with the row's length squared, not each chat's. The
  child checks the masking before training: the
  packed logits of a few chats must equal their one-at-a-time logits, else it falls back to
  `train_sampling_strategy="group_by_length"` (transformers 5's name for `group_by_length`) and
  records why. TRL refuses `padding_free` with a `max_length` unless packing is on, so
  `max_length=None`; the child asserts that no chat exceeds MAX_LEN, so nothing is cut either way.
- Loss on the answer only. `assistant_only_loss=True` needs `{% generation %}` markers in the
  chat template; SmolLM2's template has none and is not among the templates TRL knows how to
  patch (`trl.chat_template_utils.get_training_chat_template` raises), so the child uses the
  documented alternative: the same chats as conversational prompt/completion pairs with
  `completion_only_loss=True`. TRL then tokenizes them to the same input ids and labels as
  adaptlab's (the assistant turn and its end-of-turn tokens; identical on all 120 chats when
  checked with TRL 1.16). It uses `assistant_only_loss` instead where the template allows.
- `gradient_checkpointing=False`.

Each contender runs in its own process (peak RSS is its own). Tokens are counted the same way for
every contender: a forward pre-hook on the transformer backbone sums the attention mask of every
training forward (non-padding tokens actually fed; with `padding_free`, the packed row's length).
Validation loss is computed after training by one shared function: mean token cross-entropy on
assistant tokens of 24 held-out chats.

MFU counts, for each contender, the FLOPs of the positions it actually computes
(`train_flops`): backbone FLOPs, 4 x the base's non-embedding parameters, on every non-padding
token fed, plus LM-head FLOPs, 4 x vocab x hidden, on every row the head was applied to in a
training forward. Those rows are measured, not assumed (`HeadCounter`): a forward pre-hook on the
LM head counts the rows of its input (adaptlab applies it to the labelled positions only), and for
TRL, whose fused LM head (`trl.trainer.utils.add_fused_lm_head`) multiplies the head's weight
directly instead of calling the module, a wrapper around its chunked log-prob kernel counts the
rows it is given (off CUDA/XPU it scores every position of the padded batch, padding and prompt
included, since only its Triton path compacts to the labelled ones). 4 per parameter = forward 2
+ backward with respect to activations 2 (the frozen base gets no weight gradients). Not counted:
attention scores, LoRA's own matmuls, gradient checkpointing's recomputation, TRL's recomputation
of the head's tiles in its backward.

    python -m bench.train_sft [--steps 30] [--contenders adaptlab,adaptlab-peft,adaptlab-grouped,adaptlab-gc,trl,trl-nogc,trl-fast]
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
CONTENDERS = ("adaptlab", "adaptlab-peft", "adaptlab-grouped", "adaptlab-gc", "trl", "trl-nogc",
              "trl-fast")


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


class HeadCounter:
    """Rows the LM head is applied to in training forwards (grad on, module in training mode).

    A forward pre-hook on the head module counts the rows of its input. TRL's fused LM head does
    not call the module: it passes the hidden states and the head's weight to a chunked log-prob
    kernel, so with `fused_module` (the module holding `_ChunkedLogProbFunction`, i.e.
    `trl.trainer.utils`) that kernel is wrapped to count the rows it is given as well.
    """

    def __init__(self, head, fused_module=None):
        self.rows = self.calls = 0
        self.handle = head.register_forward_pre_hook(self._hook)
        if fused_module is not None and hasattr(fused_module, "_ChunkedLogProbFunction"):
            inner, counter = fused_module._ChunkedLogProbFunction, self

            class Counting:
                @staticmethod
                def apply(hidden, *args, **kwargs):
                    counter._count(hidden)
                    return inner.apply(hidden, *args, **kwargs)

            fused_module._ChunkedLogProbFunction = Counting

    def wrap(self, module, name: str) -> None:
        """Count the rows of the first argument of `module.name` too: adaptlab's fused LM head
        and cross-entropy (`adaptlab.train.head_loss`, called from the training loss as
        `loop.linear_cross_entropy`) takes the hidden states and the head's weight, not the
        module."""
        inner, counter = getattr(module, name), self

        def counting(hidden, *args, **kwargs):
            counter._count(hidden)
            return inner(hidden, *args, **kwargs)

        setattr(module, name, counting)

    def _count(self, x) -> None:
        import torch

        if torch.is_grad_enabled():
            self.rows += x.numel() // x.shape[-1]
            self.calls += 1

    def _hook(self, module, args):
        if module.training:
            self._count(args[0])


def base_param_count(model) -> int:
    """Parameters of the frozen base (tied embedding/LM head counted once, LoRA excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


def param_split(model) -> tuple[int, int]:
    """(backbone, head) parameters of the frozen base: the head is the LM head's weight (and bias)
    — vocab x hidden, tied to the input embedding on SmolLM2 — and the backbone everything else
    but the input embedding (a lookup, no matmul) and LoRA."""
    head = model.get_output_embeddings()
    skip = {id(p) for p in head.parameters()} | {id(p) for p in model.get_input_embeddings().parameters()}
    backbone = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and id(p) not in skip)
    return backbone, sum(p.numel() for p in head.parameters())


def train_flops(tokens: int, head_rows: int, backbone_params: int, head_params: int) -> int:
    """Model FLOPs of the positions computed: 4 x backbone params per token fed (forward 2 +
    backward to activations 2; the base is frozen) + 4 x head params per row the head saw."""
    return 4 * backbone_params * tokens + 4 * head_params * head_rows


def val_loss(model, tok, examples: list[dict], batch: int = 4) -> dict:
    """Mean token cross-entropy over the assistant tokens of `examples` (one definition for all),
    and each chat's own mean (`val_loss_per_chat`, for the paired comparison of two contenders)."""
    import torch

    from adaptlab.train.batches import collate, tokenize

    rows = tokenize(tok, examples, MAX_LEN, truncate=True)
    total, count, per_chat = 0.0, 0, []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            ids, mask, labels = collate(rows, list(range(s, min(s + batch, len(rows)))),
                                        tok.pad_token_id, device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            y = labels[:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), y.reshape(-1),
                ignore_index=-100, reduction="none").view(y.shape)
            for r in range(y.shape[0]):
                n = int((y[r] != -100).sum())
                per_chat.append(round(float(ce[r].sum()) / max(n, 1), 5))
            total += float(ce.sum())
            count += int((y != -100).sum())
    model.train(was_training)
    return {"val_loss": round(total / count, 4), "val_tokens": count, "val_loss_per_chat": per_chat}


def loss_verdict(a: dict, b: dict) -> dict:
    """Is contender a's validation loss worse than b's? Paired bootstrap over the validation chats
    of the mean per-chat loss difference a - b; "no worse" unless the interval lies above 0."""
    from adaptlab.evaluate.stats import paired_bootstrap

    t = paired_bootstrap(a["val_loss_per_chat"], b["val_loss_per_chat"])
    lo, hi = t["ci"]
    return {"diff_per_chat": round(t["diff"], 4), "ci": [round(lo, 4), round(hi, 4)],
            "p": round(t["p"], 4), "no_worse": lo <= 0}


def _summary(name: str, step_s: list[float], counter: TokenCounter, heads: HeadCounter, model,
             extra: dict) -> dict:
    if not heads.rows:
        raise RuntimeError(f"{name}: no LM-head rows counted; the head is applied some other way")
    loop_s = sum(step_s)
    backbone, head = param_split(model)
    return {"contender": name, "steps": len(step_s), "loop_seconds": round(loop_s, 2),
            "tokens": counter.tokens, "forwards": counter.forwards,
            "tokens_per_s": round(counter.tokens / loop_s, 1),
            "s_per_step": round(loop_s / len(step_s), 3),
            "median_s_per_step": round(statistics.median(step_s), 3),
            "first_step_s": round(step_s[0], 3), "step_seconds": [round(s, 3) for s in step_s],
            "base_params": base_param_count(model), "backbone_params": backbone, "head_params": head,
            "head_rows": heads.rows, "head_calls": heads.calls,
            "peak_rss_mb_train": peak_rss_mb(), **extra}


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


def child_adaptlab(steps: int, gradient_checkpointing: bool = False, fused_lora: bool = True,
                   batching: str = "packed") -> dict:
    """adaptlab's loop at its defaults; `adaptlab-gc` with `gradient_checkpointing=true` (its
    memory against time); `adaptlab-peft` with `fused_lora=false` (PEFT's own LoRA forward,
    transformers' RMSNorm);
    `adaptlab-grouped` with `batching=grouped` (length-grouped padded batches)."""
    import csv
    from dataclasses import replace

    from adaptlab.train.methods import lora
    from adaptlab.train.config import TuneConfig
    from adaptlab.train import loop
    from adaptlab.train.loop import tune

    grabbed = {}

    def build(cfg):  # the benchmark needs the model tune() builds, to hook it and evaluate it
        # with RANDOM_INIT, LoRA goes on the freshly initialized architecture instead
        model, tok = lora.attach(cfg, *load_bench_model()) if common.RANDOM_INIT else lora.build(cfg)
        base = model.get_base_model()
        heads = HeadCounter(base.get_output_embeddings())
        heads.wrap(loop, "linear_cross_entropy")
        grabbed.update(model=model, tok=tok, counter=TokenCounter(base.base_model), heads=heads)
        return model, tok

    train, val = chat_examples()
    cfg = TuneConfig(model=MODEL, precision=common.PRECISION, device=common.DEVICE, lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                     lora_dropout=LORA["lora_dropout"], target_modules=LORA["target_modules"],
                     lr=LR, max_steps=steps, batch_size=BATCH, grad_accum=1, max_length=MAX_LEN,
                     seed=SEED, save_every=0, warmup_steps=0,
                     gradient_checkpointing=gradient_checkpointing, fused_lora=fused_lora,
                     batching=batching)
    with tempfile.TemporaryDirectory(prefix="bench-adaptlab-") as out:
        summary = tune(cfg, train, out, factory=replace(lora.LORA, build=build))
        with open(Path(out) / "loss.csv", newline="") as f:
            log = list(csv.DictReader(f))
    rss = peak_rss_mb()
    cum = [0.0] + [float(r["seconds"]) for r in log]
    step_s = [b - a for a, b in zip(cum, cum[1:])]
    model, tok, counter = grabbed["model"], grabbed["tok"], grabbed["counter"]
    name = ("adaptlab-gc" if gradient_checkpointing else "adaptlab") + ("" if fused_lora else "-peft") \
        + ("" if batching == "packed" else f"-{batching}")
    res = _summary(name, step_s, counter, grabbed["heads"], model.get_base_model(),
                   {"final_train_loss": float(log[-1]["loss"]), "train_loss_on": "assistant tokens",
                    "gradient_checkpointing": gradient_checkpointing, "fused_lora": fused_lora,
                    "batching": batching, "tokens_counted_by_tune": summary["tokens_this_session"],
                    **val_loss(model, tok, val)})
    res["peak_rss_mb_train"] = rss
    return res


def packed_matches_padded(model, tok, chats: list[dict], atol: float = 1e-2) -> tuple[bool, float]:
    """Does a padding-free row (chats concatenated, per-chat position_ids, no mask) give each chat
    the logits it gets alone? (True only if the attention keeps the chats apart.)"""
    import torch

    seqs = [tok.apply_chat_template(c["messages"], tokenize=True, return_dict=True)["input_ids"]
            for c in chats]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        flat = torch.tensor([sum(seqs, [])], device=model.device)
        pos = torch.cat([torch.arange(len(s)) for s in seqs])[None].to(model.device)
        packed = model(input_ids=flat, position_ids=pos, use_cache=False).logits[0].float()
        worst, off = 0.0, 0
        for s in seqs:
            alone = model(input_ids=torch.tensor([s], device=model.device), use_cache=False).logits[0]
            worst = max(worst, float((alone.float() - packed[off:off + len(s)]).abs().max()))
            off += len(s)
    model.train(was_training)
    return worst <= atol, worst


def assistant_masks_supported(tok) -> bool:
    """Can TRL's `assistant_only_loss` mask this tokenizer's chats? (Generation markers in the
    template, or a template TRL knows how to patch.)"""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tok.chat_template):
        return True
    try:
        get_training_chat_template(tok)
    except ValueError:
        return False
    return True


def _child_trl(steps: int, name: str) -> dict:
    """TRL SFTTrainer + PEFT: `trl` at its defaults, `trl-nogc` without gradient checkpointing,
    `trl-fast` with its speed options (see the module docstring)."""
    import datasets
    import torch
    import trl.trainer.utils
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
    train, val = chat_examples()
    extra, info = {}, {"speed_options": []}
    if name != "trl":
        extra["gradient_checkpointing"] = False
    if name == "trl-fast":
        model.to(common.DEVICE)
        ok, diff = packed_matches_padded(model, tok, train[:3])
        info["padding_free_check_max_abs_logit_diff"] = diff
        if ok:
            longest = max(len(tok.apply_chat_template(c["messages"], tokenize=True, return_dict=True)
                              ["input_ids"]) for c in train)
            assert longest <= MAX_LEN, f"a {longest}-token chat > {MAX_LEN}: padding_free would not cut it"
            extra.update(padding_free=True, max_length=None)
            info["speed_options"].append("padding_free")
        else:  # this attention would let packed chats see each other: no padding_free here
            extra["train_sampling_strategy"] = "group_by_length"
            info["speed_options"].append("group_by_length")
            info["padding_free_refused"] = (f"packed logits differ from one-at-a-time ones by {diff:.3g} "
                                            f"with attn_implementation={model.config._attn_implementation}")
        if assistant_masks_supported(tok):
            extra["assistant_only_loss"] = True
            info["speed_options"].append("assistant_only_loss")
        else:  # no {% generation %} markers: the same chats as prompt/completion pairs
            train = [{"prompt": c["messages"][:-1], "completion": c["messages"][-1:]} for c in train]
            extra["completion_only_loss"] = True
            info["speed_options"].append("completion_only_loss")
            info["assistant_only_loss_refused"] = "chat template has no {% generation %} markers"
        info["speed_options"].append("no gradient checkpointing")
    counter = TokenCounter(model.base_model)
    heads = HeadCounter(model.get_output_embeddings(), fused_module=trl.trainer.utils)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        args = SFTConfig(**{"max_length": MAX_LEN, **extra}, output_dir=out,
                         per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
                         max_steps=steps, learning_rate=LR,
                         bf16=common.PRECISION == "bf16", fp16=False, use_cpu=common.DEVICE == "cpu",
                         report_to=[], save_strategy="no", logging_steps=1,
                         seed=SEED, disable_tqdm=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(train),
                             processing_class=tok, peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
                             callbacks=[timer])
        trainer.train()
    rss = peak_rss_mb()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    step_s = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    loss_on = ("assistant tokens" if args.assistant_only_loss else
               "completion tokens" if trainer.completion_only_loss else "whole sequence")
    res = _summary(name, step_s, counter, heads, trainer.model.get_base_model(),
                   {"final_train_loss": float(logs[-1]["loss"]), "train_loss_on": loss_on,
                    "gradient_checkpointing": args.gradient_checkpointing,
                    "padding_free": bool(trainer.padding_free),
                    "train_sampling_strategy": args.train_sampling_strategy, **info,
                    "tokens_counted_by_trl": int(logs[-1].get("num_tokens", 0)) or None,
                    **val_loss(trainer.model, tok, val)})
    res["peak_rss_mb_train"] = rss
    return res


CHILDREN = {"base": child_base, "probe": child_probe, "adaptlab": child_adaptlab,
            "adaptlab-gc": lambda steps: child_adaptlab(steps, gradient_checkpointing=True),
            "adaptlab-peft": lambda steps: child_adaptlab(steps, fused_lora=False),
            "adaptlab-grouped": lambda steps: child_adaptlab(steps, batching="grouped"),
            **{name: (lambda steps, name=name: _child_trl(steps, name))
               for name in ("trl", "trl-nogc", "trl-fast")}}


# -- parent ------------------------------------------------------------------------------------
def add_flops(row: dict, peak_flops: float) -> dict:
    """Model FLOPs of the positions `row`'s contender computed (see `train_flops`) and its MFU
    against `peak_flops`; also the earlier convention (head on every token), for comparison."""
    flops = train_flops(row["tokens"], row["head_rows"], row["backbone_params"], row["head_params"])
    row["train_flops"] = flops
    row["flops_per_token"] = round(flops / row["tokens"])
    row["head_rows_per_token"] = round(row["head_rows"] / row["tokens"], 4)
    row["mfu"] = round(flops / row["loop_seconds"] / peak_flops, 4)
    row["mfu_head_on_all_tokens"] = round(row["tokens_per_s"] * 4 * row["base_params"] / peak_flops, 4)
    return row


def run(steps: int = 30, contenders=CONTENDERS, quick: bool = False) -> dict:
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
        add_flops(r, peak)
    by = {r["contender"]: r for r in rows}
    ratios = {f"adaptlab/{k}": round(by["adaptlab"]["tokens_per_s"] / by[k]["tokens_per_s"], 2)
              for k in by if k != "adaptlab" and "adaptlab" in by}
    goal = None
    if "adaptlab" in by and "trl-fast" in by:  # issue 11: >= 1.5x TRL with its speed options on
        a, f = by["adaptlab"], by["trl-fast"]
        test = loss_verdict(a, f)
        goal = {"ratio": ratios["adaptlab/trl-fast"], "target": 1.5,
                "met": ratios["adaptlab/trl-fast"] >= 1.5 and test["no_worse"],
                "val_loss_adaptlab": a["val_loss"], "val_loss_trl_fast": f["val_loss"],
                "val_loss_test": test}
    data = {"model": MODEL, "steps": steps, "batch_size": BATCH, "lr": LR, "lora": LORA,
            "precision": common.PRECISION, "train_examples": 120, "val_examples": 24,
            "matmul_dtype": probe["matmul_dtype"], "matmul_n": probe["matmul_n"],
            "matmul_flops": round(peak), "matmul_probes": [round(p) for p in probes],
            "probe_loadavg_1m": [probe["loadavg_1m"], probe2["loadavg_1m"]],
            "base_val_loss": base["val_loss"],
            "contenders": rows, "tokens_per_s_ratio": ratios, "goal_vs_trl_fast": goal,
            "notes": ["MFU = model FLOP/s / square matmul FLOP/s (in the run's precision); model FLOPs = "
                      "4 x backbone params (non-embedding) x non-padding tokens fed + 4 x LM-head params "
                      "(vocab x hidden) x rows the head was applied to (head_rows, counted by a hook on "
                      "the head and on TRL's fused-head kernel). Not counted: attention scores, LoRA, "
                      "recomputation (gradient checkpointing, TRL's fused-head backward). "
                      "mfu_head_on_all_tokens is the earlier convention (4 x base params x tokens)",
                      "final_train_loss is each stack's own logged loss (see train_loss_on); "
                      "val_loss is one shared definition"]}
    write_result("train_sft", data, probe["machine"], quick)
    return data


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
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
