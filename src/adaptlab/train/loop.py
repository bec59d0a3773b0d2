"""The SFT loop, written on accelerate: `accelerate launch -m adaptlab.cli tune ...` runs it on
several processes (DDP, or FSDP through accelerate's config; docs/scaling.md).

`tune` = `setup` (model from a factory, examples through a formatter, optimizer, schedule, data
order, resume) + `train_step` until done (with evaluations and checkpoints) + `save`. The model
comes from a `ModelFactory` (`FACTORIES[cfg.method]` unless one is passed), the messages to
train on from a formatter (`FORMATTERS[cfg.target]` unless one is passed).

Checkpoints (train/checkpoint.py) hold the trained weights, optimizer, scheduler, RNG state and
the logs so far; the data order is a pure function of (seed, epoch), so a resumed run replays
exactly the same steps.

Several processes (train/dist.py): a micro-step takes a global micro-batch of batch_size x
processes examples from that order, the same on every rank, and each rank trains on its own
share of it; an optimizer step takes grad_accum of them. The loss is weighted so that DDP's
average of the ranks' gradients is the gradient one process computes on the whole global
micro-batch: N processes at batch_size B train what one process at batch_size N x B does, up
to float summation order. The main process alone writes files and logs; eval hooks run there.
"""
from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .. import progress
from ..errors import AdaptlabError
from ..io import write_json
from .batches import collate, collate_packed, global_batch, run_batches, tokenize, total_steps
from .checkpoint import latest_checkpoint, load_progress, load_weights, save_checkpoint
from .config import TuneConfig
from .dist import (accelerator, is_fsdp, labelled, load_optimizer_state, optimizer_state, shard,
                   step_seed)
from .factory import ModelFactory
from .formatters import Formatter, formatter_for
from .logs import write_logs, write_tensorboard
from .methods import FACTORIES
from . import head_loss, segments
from .head_loss import linear_cross_entropy

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
    micro: list[list[int]]  # the global micro-batches of the whole run, in order
    total: int  # optimizer steps
    head_only: bool
    packed: bool = False  # micro-batches packed into one row each (cfg.batching, if the model allows)
    attn_before: str | None = None  # the attention implementation `segments` replaced, if it did
    step: int = 0
    logs: dict = field(default_factory=lambda: {"loss": [], "eval": []})
    tokens: int = 0
    t0: float = field(default_factory=time.time)
    before: dict = field(default_factory=lambda: {"tokens": 0, "seconds": 0.0})  # earlier sessions
    copy: Any = None  # under FSDP: the main process's unsharded copy (`_plain`)

    @property
    def unwrapped(self):
        return self.acc.unwrap_model(self.model)

    @property
    def rank(self) -> int:
        return self.acc.process_index

    @property
    def world(self) -> int:
        return self.acc.num_processes


def setup(cfg: TuneConfig, examples: list[dict], out: str | Path, source: str = "data",
          factory: ModelFactory | None = None, formatter: Formatter | None = None) -> TrainState:
    """Build the model, tokenize, make optimizer and schedule, resume from OUT's checkpoint."""
    import torch

    factory = FACTORIES[cfg.method] if factory is None else factory
    acc = accelerator(cfg)
    torch.manual_seed(cfg.seed)  # whatever the factory initializes randomly
    model, tok = factory.build(replace(cfg, device=str(acc.device)))
    rows = tokenize(tok, examples, cfg.max_length, cfg.truncate, source,
                    formatter_for(cfg) if formatter is None else formatter)
    if not rows:
        raise AdaptlabError(f"{source}: no examples to train on")
    total = total_steps(cfg, len(rows), acc.num_processes)
    ckpt = latest_checkpoint(Path(out))
    if ckpt is not None:  # before accelerate wraps (FSDP: shards) the model
        load_weights(ckpt, factory, model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(cfg, total))
    model, opt = acc.prepare(model, opt)
    packed, attn_before = cfg.batching == "packed" and cfg.method != "prompt", None
    if packed:
        attn_before = segments.enable(_base(acc, model))
        if attn_before is not None and not _packing_ok(acc, model, rows, segmented=True):
            segments.restore(_base(acc, model), attn_before)
            attn_before = None
        packed = attn_before is not None or _packing_ok(acc, model, rows)
    state = TrainState(cfg, Path(out), factory, acc, model, tok, rows, opt, sched,
                       run_batches(cfg, [len(r[0]) for r in rows], total, acc.num_processes,
                                   grouped=not packed),
                       total, factory.head_only and _head_only_ok(acc, model), packed,
                       attn_before)
    if ckpt is not None:
        _resume(state, ckpt)
    if state.world > 1:
        _log(state, f"training on {state.world} processes ({acc.distributed_type.value}, "
                    f"{acc.device.type}): {cfg.batch_size} x {state.world} x {cfg.grad_accum} = "
                    f"{global_batch(cfg, state.world) * cfg.grad_accum} examples per step, "
                    f"{total} steps")
    state.t0 = time.time()
    return state


def _log(state: TrainState, msg: str) -> None:
    if state.acc.is_main_process:
        progress.log(msg)


def schedule(cfg: TuneConfig, total: int):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        return max(0.0, (total - step) / max(1, total - cfg.warmup_steps))
    return f


def _resume(state: TrainState, ckpt: Path) -> None:
    """The rest of the checkpoint (the weights are in already): the same on every rank."""
    import torch

    state.step, state.logs, saved = load_progress(ckpt)
    load_optimizer_state(state.acc, state.model, state.opt, saved["opt"])
    state.sched.load_state_dict(saved["sched"])
    torch.set_rng_state(saved["rng"])
    if state.logs["loss"]:  # loss.csv's tokens/seconds are cumulative across resumes
        last = state.logs["loss"][-1]
        state.before = {"tokens": last["tokens"], "seconds": last["seconds"]}
    _log(state, f"resuming {state.out} from step {state.step}")


def _base(acc, model):
    """The bare transformers model under accelerate's and PEFT's wrappers."""
    m = acc.unwrap_model(model)
    return m.get_base_model() if callable(getattr(m, "get_base_model", None)) else m


def _head_only_ok(acc, model) -> bool:
    """Can the loss apply the LM head to the labelled positions only? Needs a model no DDP / FSDP
    wraps (their forward must run: gradient sync, unsharding), the usual decoder +
    output-embedding split, and no logit soft-capping (which the full forward applies after the
    head)."""
    base = _base(acc, model)
    return (acc.unwrap_model(model) is model and not is_fsdp(acc)
            and callable(getattr(base, "get_decoder", None))
            and base.get_output_embeddings() is not None
            and not getattr(getattr(base.config, "get_text_config", lambda: base.config)(),
                            "final_logit_softcapping", None))


def _packing_ok(acc, model, rows, segmented: bool = False) -> bool:
    """Does the model keep packed examples apart? The logits of the two shortest examples packed
    into one row (`collate_packed`) against each one alone, at eval and without gradients; the
    same on every rank (the same model and rows). With `segmented`, through `segments`'
    per-example attention, else through transformers' mask from the position_ids. Logs and
    returns False where they differ."""
    import torch

    pick = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))[:2]
    if len(pick) < 2:
        return True
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids, pos, _ = collate_packed(rows, pick, acc.device)
            extra = {segments.KEY: [len(rows[i][0]) for i in pick]} if segmented else {}
            packed = model(input_ids=ids, position_ids=pos, use_cache=False,
                           **extra).logits[0].float()
            alone = torch.cat([model(input_ids=collate_packed(rows, [i], acc.device)[0],
                                     use_cache=False).logits[0].float() for i in pick])
    finally:
        model.train(was)
    diff = float((packed - alone).abs().max()) if packed.shape == alone.shape else float("inf")
    ok = diff <= 1e-3 * max(1.0, float(alone.abs().max()))
    if not ok and acc.is_main_process:
        progress.log(f"batching=packed: this model mixes packed examples (logits differ by "
                     f"{diff:.3g}" + ("; per-example attention: trying the mask" if segmented else
                                     "); training on length-grouped padded batches instead"))
    return ok


def _loss(acc, model, ids, mask, labels, head_only: bool, position_ids=None, lengths=None):
    """Mean cross-entropy over the labelled (assistant) tokens.

    With `head_only`, the decoder runs on every position but the LM head only on the positions
    that carry a label: in a chat most positions are prompt, and the head (vocab x hidden) is a
    fifth of a 135M model's FLOPs and, in fp32 logits, its largest activation. Same value as the
    full forward's loss up to summation order; a plain linear head and its cross-entropy run as
    one function there (`head_loss`). With `position_ids` (a row of `collate_packed`:
    positions restart with every example, no mask), transformers keeps each example's attention
    to itself; `lengths` (the examples' lengths, under `segments`' attention) has each one
    attend to itself alone instead of under a block-diagonal mask.
    """
    import torch.nn.functional as F

    packed = {} if position_ids is None else {"position_ids": position_ids, "use_cache": False}
    if lengths is not None:
        packed[segments.KEY] = lengths
    if not head_only:
        return model(input_ids=ids, attention_mask=mask, labels=labels, **packed).loss
    base = _base(acc, model)
    with acc.autocast():
        h = base.get_decoder()(input_ids=ids, attention_mask=mask, **packed).last_hidden_state
        y = labels[:, 1:]
        keep = y != -100
        head, hk, yk = base.get_output_embeddings(), h[:, :-1][keep], y[keep]
        if _fused_head_ok(head, hk):
            return linear_cross_entropy(hk, head.weight, head.bias, yk)
        logits = head(hk)
    return F.cross_entropy(logits.float(), yk)


def _fused_head_ok(head, h) -> bool:
    """The head and its cross-entropy in one function (`head_loss`): a plain linear head, at
    least one labelled position, gradients on."""
    import torch

    return head_loss.applies(head) and h.shape[0] > 0 and torch.is_grad_enabled()


def train_step(state: TrainState) -> float:
    """One optimizer step over `grad_accum` global micro-batches; logs it, returns its loss."""
    import torch

    cfg, acc = state.cfg, state.acc
    if state.world > 1:
        torch.manual_seed(step_seed(cfg.seed, state.step, state.rank))
    loss_sum = 0.0
    for k in range(cfg.grad_accum):
        batch = state.micro[state.step * cfg.grad_accum + k]
        last = k == cfg.grad_accum - 1  # DDP: all-reduce the gradients once per optimizer step
        with contextlib.nullcontext() if last else acc.no_sync(state.model):
            loss_sum += _micro_step(state, batch)
        state.tokens += sum(len(state.rows[i][0]) for i in batch)
    state.opt.step()
    state.sched.step()
    state.opt.zero_grad(set_to_none=True)
    state.step += 1
    loss_sum = _sum_over_ranks(acc, loss_sum)
    state.logs["loss"].append({
        "step": state.step, "loss": round(loss_sum, 6), "lr": state.sched.get_last_lr()[0],
        "tokens": state.before["tokens"] + state.tokens,
        "seconds": round(state.before["seconds"] + time.time() - state.t0, 2)})
    return loss_sum


def _micro_step(state: TrainState, batch: list[int]) -> float:
    """Forward + backward on this rank's share of a global micro-batch; returns the share's part
    of the micro-batch's loss / grad_accum (the parts sum to it over the ranks).

    Each share's loss is the mean over its labelled tokens, weighted by n_share x world / n_all
    (labelled tokens): DDP averages the ranks' gradients, and the average is then the gradient
    of the mean over the whole micro-batch's labelled tokens. One process: weight exactly 1.
    A rank with no share (`shard`) runs one example at weight 0."""
    cfg, acc, world = state.cfg, state.acc, state.world
    mine, real = shard(batch, state.rank, world)
    if state.packed:
        ids, pos, labels = collate_packed(state.rows, mine, acc.device)
        mean = _loss(acc, state.model, ids, None, labels, state.head_only, pos,
                     [len(state.rows[i][0]) for i in mine] if state.attn_before else None)
    else:
        ids, mask, labels = collate(state.rows, mine, state.tok.pad_token_id, acc.device)
        mean = _loss(acc, state.model, ids, mask, labels, state.head_only)
    weight = labelled(state.rows, mine) * world / labelled(state.rows, batch) if real else 0.0
    loss = mean * weight / cfg.grad_accum
    acc.backward(loss)
    return float(loss.detach()) / world


def _sum_over_ranks(acc, x: float) -> float:
    if acc.num_processes == 1:
        return x
    import torch

    return float(acc.reduce(torch.tensor(x, dtype=torch.float64, device=acc.device), "sum"))


def _plain(state: TrainState):
    """The trained model as the factory built it, for the factory's `state` / `save` and for
    eval hooks. Under FSDP each rank holds shards only: gather them (a collective: every rank
    calls this) into a CPU copy the main process builds once; None on the other ranks."""
    if not is_fsdp(state.acc):
        return state.unwrapped
    import torch

    full = state.acc.get_state_dict(state.model)
    if not state.acc.is_main_process:
        return None
    if state.copy is None:
        with torch.random.fork_rng(devices=[]):  # building the copy must not move training's RNG
            state.copy = state.factory.build(replace(state.cfg, device="cpu"))[0]
    state.copy.load_state_dict(full)
    return state.copy


def evaluate(state: TrainState, eval_hook: EvalHook) -> None:
    """Log `eval_hook(step, model, tokenizer)` with the model in eval mode: on the main process;
    the others go on and wait for it at the next collective."""
    model = _plain(state)
    if not state.acc.is_main_process:
        return
    state.model.eval()
    model.eval()
    state.logs["eval"].append({"step": state.step, **eval_hook(state.step, model, state.tok)})
    state.model.train()


def checkpoint(state: TrainState) -> None:
    """Every rank takes part (FSDP gathers the shards); the main process writes; all wait."""
    acc = state.acc
    model, opt_state = _plain(state), optimizer_state(acc, state.model, state.opt)
    if acc.is_main_process:
        save_checkpoint(state.out, state.step, state.factory, model, opt_state,
                        state.sched.state_dict(), state.logs)
    acc.wait_for_everyone()


def save(state: TrainState) -> dict:
    """The factory's final files, loss/eval CSVs, TensorBoard, train_summary.json (written by
    the main process; every rank returns once they are there); then the checkpoints go.
    Returns the summary."""
    from ..config import to_dict

    seconds, logs, acc = time.time() - state.t0, state.logs, state.acc
    acc.wait_for_everyone()
    segments.restore(_base(acc, state.model), state.attn_before)  # the model saves as it came
    state.attn_before = None
    model = _plain(state)
    summary = {"steps": len(logs["loss"]),
               "final_loss": logs["loss"][-1]["loss"] if logs["loss"] else None,
               "tokens_this_session": state.tokens, "seconds_this_session": round(seconds, 1),
               "tokens_per_second": round(state.tokens / seconds, 1) if seconds else None}
    if acc.is_main_process:
        state.factory.save(state.cfg, model, state.tok, state.out)
        write_logs(state.out, logs)
        write_tensorboard(state.out, logs)
        write_json(state.out / "train_summary.json",
                   {**summary, "processes": state.world, "config": to_dict(state.cfg)})
        shutil.rmtree(state.out / "checkpoints", ignore_errors=True)
        if state.world > 1:
            _log(state, f"process {state.rank} of {state.world} wrote {state.out}")
    acc.wait_for_everyone()
    return summary


def _bar(state: TrainState):
    """The step bar, on the main process only."""
    if state.acc.is_main_process:
        return progress.bar(total=state.total, desc="tune", unit="step")
    from tqdm.auto import tqdm

    return tqdm(total=state.total, disable=True)


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
    try:
        with _bar(state) as pb:
            pb.update(state.step)
            while state.step < state.total:
                loss = train_step(state)
                pb.update(1)
                pb.set_postfix(loss=f"{loss:.3f}")
                if evals and (state.step % cfg.eval_every == 0 or state.step == state.total):
                    evaluate(state, eval_hook)
                if cfg.save_every and state.step % cfg.save_every == 0 and state.step < state.total:
                    checkpoint(state)
    finally:
        head_loss.release()  # the LM head's logits workspace
    return save(state)
