"""The SFT loop, written on accelerate so `accelerate launch` runs it with DDP/FSDP.

`tune` = `setup` (model from a factory, examples through a formatter, optimizer, schedule, data
order, resume) + `train_step` until done (with evaluations and checkpoints) + `save`. The model
comes from a `ModelFactory` (`FACTORIES[cfg.method]` unless one is passed), the messages to
train on from a formatter (`FORMATTERS[cfg.target]` unless one is passed).

Checkpoints (train/checkpoint.py) hold the trained weights, optimizer, scheduler, RNG state and
the logs so far; the data order is a pure function of (seed, epoch), so a resumed run replays
exactly the same steps.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import progress
from ..errors import AdaptlabError
from ..io import write_json
from .batches import batch_order, collate, tokenize
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TuneConfig
from .factory import ModelFactory
from .formatters import Formatter, formatter_for
from .logs import write_logs, write_tensorboard
from .methods import FACTORIES

EvalHook = Callable[[int, object, object], dict]  # (step, model, tokenizer) -> metrics


@dataclass
class TrainState:
    """What the steps share. `step` and `logs` are what a checkpoint restores besides weights,
    optimizer, scheduler and RNG; `tokens` and `t0` count this session only."""

    cfg: TuneConfig
    out: Path
    factory: ModelFactory
    acc: Any
    model: Any  # as accelerate prepared it: `unwrapped` is the factory's model
    tok: Any
    rows: list
    opt: Any
    sched: Any
    micro: list[list[int]]  # the micro-batches of the whole run, in order
    total: int  # optimizer steps
    head_only: bool
    step: int = 0
    logs: dict = field(default_factory=lambda: {"loss": [], "eval": []})
    tokens: int = 0
    t0: float = field(default_factory=time.time)
    before: dict = field(default_factory=lambda: {"tokens": 0, "seconds": 0.0})  # earlier sessions

    @property
    def unwrapped(self):
        return self.acc.unwrap_model(self.model)


def setup(cfg: TuneConfig, examples: list[dict], out: str | Path, source: str = "data",
          factory: ModelFactory | None = None, formatter: Formatter | None = None) -> TrainState:
    """Build the model, tokenize, make optimizer and schedule, resume from OUT's checkpoint."""
    import torch
    from accelerate import Accelerator

    factory = FACTORIES[cfg.method] if factory is None else factory
    # bf16 = autocast over fp32 master weights: pure-bf16 backward is pathologically slow on CPU.
    acc = Accelerator(cpu=cfg.device == "cpu",
                      mixed_precision="bf16" if cfg.precision == "bf16" else "no")
    torch.manual_seed(cfg.seed)  # whatever the factory initializes randomly
    model, tok = factory.build(cfg)
    rows = tokenize(tok, examples, cfg.max_length, cfg.truncate, source,
                    formatter_for(cfg) if formatter is None else formatter)
    if not rows:
        raise AdaptlabError(f"{source}: no examples to train on")
    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = cfg.max_steps or math.ceil(per_epoch * cfg.epochs / cfg.grad_accum)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, total))
    model, opt = acc.prepare(model, opt)
    state = TrainState(cfg, Path(out), factory, acc, model, tok, rows, opt, sched,
                       _micro_batches(cfg, rows, total), total,
                       factory.head_only and _head_only_ok(acc, model))
    _resume(state)
    state.t0 = time.time()
    return state


def _micro_batches(cfg: TuneConfig, rows: list, total: int) -> list[list[int]]:
    lengths, per_epoch = [len(r[0]) for r in rows], math.ceil(len(rows) / cfg.batch_size)
    return [b for e in range(math.ceil(total * cfg.grad_accum / per_epoch) + 1)
            for b in batch_order(lengths, cfg.batch_size, cfg.seed, e)][: total * cfg.grad_accum]


def _schedule(cfg: TuneConfig, total: int):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        return max(0.0, (total - step) / max(1, total - cfg.warmup_steps))
    return f


def _resume(state: TrainState) -> None:
    ckpt = latest_checkpoint(state.out)
    if ckpt is None:
        return
    state.step, state.logs = load_checkpoint(ckpt, state.factory, state.unwrapped, state.opt,
                                             state.sched)
    if state.logs["loss"]:  # loss.csv's tokens/seconds are cumulative across resumes
        last = state.logs["loss"][-1]
        state.before = {"tokens": last["tokens"], "seconds": last["seconds"]}
    progress.log(f"resuming {state.out} from step {state.step}")


def _base(acc, model):
    """The bare transformers model under accelerate's and PEFT's wrappers."""
    m = acc.unwrap_model(model)
    return m.get_base_model() if callable(getattr(m, "get_base_model", None)) else m


def _head_only_ok(acc, model) -> bool:
    """Can the loss apply the LM head to the labelled positions only? Needs one process (DDP
    must see the wrapper's forward), the usual decoder + output-embedding split, and no logit
    soft-capping (which the full forward applies after the head)."""
    base = _base(acc, model)
    return (acc.num_processes == 1 and callable(getattr(base, "get_decoder", None))
            and base.get_output_embeddings() is not None
            and not getattr(getattr(base.config, "get_text_config", lambda: base.config)(),
                            "final_logit_softcapping", None))


def _loss(acc, model, ids, mask, labels, head_only: bool):
    """Mean cross-entropy over the labelled (assistant) tokens.

    With `head_only`, the decoder runs on every position but the LM head only on the positions
    that carry a label: in a chat most positions are prompt, and the head (vocab x hidden) is a
    fifth of a 135M model's FLOPs and, in fp32 logits, its largest activation. Same value as the
    full forward's loss up to summation order.
    """
    import torch.nn.functional as F

    if not head_only:
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    base = _base(acc, model)
    with acc.autocast():
        h = base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        y = labels[:, 1:]
        keep = y != -100
        logits = base.get_output_embeddings()(h[:, :-1][keep])
    return F.cross_entropy(logits.float(), y[keep])


def train_step(state: TrainState) -> float:
    """One optimizer step over `grad_accum` micro-batches; logs it, returns its loss."""
    cfg, acc = state.cfg, state.acc
    loss_sum = 0.0
    for k in range(cfg.grad_accum):
        ids, mask, labels = collate(state.rows, state.micro[state.step * cfg.grad_accum + k],
                                    state.tok.pad_token_id, acc.device)
        loss = _loss(acc, state.model, ids, mask, labels, state.head_only) / cfg.grad_accum
        acc.backward(loss)
        loss_sum += float(loss.detach())
        state.tokens += int(mask.sum())
    state.opt.step()
    state.sched.step()
    state.opt.zero_grad(set_to_none=True)
    state.step += 1
    state.logs["loss"].append({
        "step": state.step, "loss": round(loss_sum, 6), "lr": state.sched.get_last_lr()[0],
        "tokens": state.before["tokens"] + state.tokens,
        "seconds": round(state.before["seconds"] + time.time() - state.t0, 2)})
    return loss_sum


def evaluate(state: TrainState, eval_hook: EvalHook) -> None:
    """Log `eval_hook(step, model, tokenizer)` with the model in eval mode."""
    state.model.eval()
    state.logs["eval"].append({"step": state.step,
                               **eval_hook(state.step, state.unwrapped, state.tok)})
    state.model.train()


def checkpoint(state: TrainState) -> None:
    if state.acc.is_main_process:
        save_checkpoint(state.out, state.step, state.factory, state.unwrapped, state.opt,
                        state.sched, state.logs)


def save(state: TrainState) -> dict:
    """The factory's final files, loss/eval CSVs, TensorBoard, train_summary.json; then the
    checkpoints go. Returns the summary."""
    from ..config import to_dict

    seconds, logs, acc = time.time() - state.t0, state.logs, state.acc
    acc.wait_for_everyone()
    summary = {"steps": len(logs["loss"]),
               "final_loss": logs["loss"][-1]["loss"] if logs["loss"] else None,
               "tokens_this_session": state.tokens, "seconds_this_session": round(seconds, 1),
               "tokens_per_second": round(state.tokens / seconds, 1) if seconds else None}
    if not acc.is_main_process:
        return summary
    state.factory.save(state.cfg, state.unwrapped, state.tok, state.out)
    write_logs(state.out, logs)
    write_tensorboard(state.out, logs)
    write_json(state.out / "train_summary.json", {**summary, "config": to_dict(state.cfg)})
    shutil.rmtree(state.out / "checkpoints", ignore_errors=True)
    return summary


def tune(cfg: TuneConfig, examples: list[dict], out: str | Path, source: str = "data",
         eval_hook: EvalHook | None = None, factory: ModelFactory | None = None,
         formatter: Formatter | None = None) -> dict:
    """Train on chat `examples` (cfg.method, or `factory`; cfg.target, or `formatter`) and write
    the result to `out`. Resumes from the newest checkpoint in `out`. Returns the summary."""
    state = setup(cfg, examples, out, source, factory, formatter)
    evals = bool(eval_hook and cfg.eval_every)
    if evals and state.step == 0:  # the curve's starting point: the untrained model
        evaluate(state, eval_hook)
    state.model.train()
    with progress.bar(total=state.total, desc="tune", unit="step") as pb:
        pb.update(state.step)
        while state.step < state.total:
            loss = train_step(state)
            pb.update(1)
            pb.set_postfix(loss=f"{loss:.3f}")
            if evals and (state.step % cfg.eval_every == 0 or state.step == state.total):
                evaluate(state, eval_hook)
            if cfg.save_every and state.step % cfg.save_every == 0 and state.step < state.total:
                checkpoint(state)
    return save(state)
