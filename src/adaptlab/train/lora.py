"""The LoRA SFT loop, written on accelerate so `accelerate launch` runs it with DDP/FSDP.

Checkpoints hold the LoRA weights, optimizer, scheduler, RNG state and the logs so far; the data
order is a pure function of (seed, epoch), so a resumed run replays exactly the same steps.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

from .. import progress
from ..errors import AdaptlabError
from ..io import atomic_dir, write_json, write_text
from .batches import batch_order, collate, tokenize
from .config import TuneConfig

EvalHook = Callable[[int, object, object], dict]  # (step, model, tokenizer) -> metrics


def _lora_model(cfg: TuneConfig):
    import torch
    from peft import LoraConfig, get_peft_model

    from ..models.load import load_model

    torch.manual_seed(cfg.seed)
    base_precision = "fp32" if cfg.precision == "bf16" else cfg.precision
    model, tok = load_model(cfg.model, base_precision, device=cfg.device)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lcfg)
    except ValueError as e:
        raise AdaptlabError(f"target_modules: {e}") from None
    for p in model.parameters():  # LoRA weights train in fp32 whatever the base precision
        if p.requires_grad:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tok


def _head_only_ok(acc, model) -> bool:
    """Can the loss apply the LM head to the labelled positions only? Needs one process (DDP
    must see the wrapper's forward), the usual decoder + output-embedding split, and no logit
    soft-capping (which the full forward applies after the head)."""
    base = acc.unwrap_model(model).get_base_model()
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
    base = acc.unwrap_model(model).get_base_model()
    with acc.autocast():
        h = base.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        y = labels[:, 1:]
        keep = y != -100
        logits = base.get_output_embeddings()(h[:, :-1][keep])
    return F.cross_entropy(logits.float(), y[keep])


def _schedule(cfg: TuneConfig, total: int):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        return max(0.0, (total - step) / max(1, total - cfg.warmup_steps))
    return f


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))
    return ckpts[-1] if ckpts else None


def _save_checkpoint(out: Path, step: int, model, opt, sched, logs: dict) -> None:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    with atomic_dir(out / "checkpoints" / f"step-{step}") as d:
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, d / "lora.safetensors")
        meta, tensors = _flatten_state({"opt": opt.state_dict(), "sched": sched.state_dict(),
                                        "rng": torch.get_rng_state()})
        save_file(tensors, d / "state.safetensors")
        write_json(d / "state.json", meta)
        write_json(d / "logs.json", {"step": step, **logs})
    for old in (out / "checkpoints").glob("step-*"):  # keep the newest only
        if old.name != f"step-{step}":
            shutil.rmtree(old, ignore_errors=True)


def _flatten_state(obj, prefix: str = "", tensors: dict | None = None):
    """Optimizer/scheduler/RNG state -> (tensors for safetensors, JSON skeleton): no pickle."""
    import torch

    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}, tensors
    if isinstance(obj, dict):
        items = {str(k): _flatten_state(v, f"{prefix}/{k}", tensors)[0] for k, v in obj.items()}
        # JSON keys are strings; the optimizer's per-parameter state is keyed by int
        return {"__dict__": items, "__int_keys__": all(isinstance(k, int) for k in obj) and bool(obj)}, tensors
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten_state(v, f"{prefix}/{i}", tensors)[0] for i, v in enumerate(obj)]}, tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot checkpoint {type(obj).__name__} at {prefix}")


def _unflatten_state(tensors: dict, meta):
    if isinstance(meta, dict) and "__tensor__" in meta:
        return tensors[meta["__tensor__"]]
    if isinstance(meta, dict) and "__dict__" in meta:
        conv = int if meta.get("__int_keys__") else str
        return {conv(k): _unflatten_state(tensors, v) for k, v in meta["__dict__"].items()}
    if isinstance(meta, dict) and "__list__" in meta:
        return [_unflatten_state(tensors, v) for v in meta["__list__"]]
    return meta


def _load_checkpoint(ckpt: Path, model, opt, sched) -> tuple[int, dict]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(ckpt / "lora.safetensors"))
    state = _unflatten_state(load_file(ckpt / "state.safetensors"),
                             json.loads((ckpt / "state.json").read_text()))
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["rng"])
    logs = json.loads((ckpt / "logs.json").read_text())
    return logs.pop("step"), logs


def _write_logs(out: Path, logs: dict) -> None:
    for name in ("loss", "eval"):
        rows = logs.get(name, [])
        if not rows:
            continue
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        write_text(out / f"{name}.csv", buf.getvalue())


def _tensorboard(out: Path, logs: dict) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    shutil.rmtree(out / "tb", ignore_errors=True)
    with SummaryWriter(str(out / "tb")) as w:
        for r in logs.get("loss", []):
            w.add_scalar("train/loss", r["loss"], r["step"])
            w.add_scalar("train/lr", r["lr"], r["step"])
        for r in logs.get("eval", []):
            for k, v in r.items():
                if k != "step" and isinstance(v, (int, float)):
                    w.add_scalar(f"eval/{k}", v, r["step"])


def tune(cfg: TuneConfig, examples: list[dict], out: str | Path, source: str = "data",
         eval_hook: EvalHook | None = None) -> dict:
    """Train a LoRA adapter on chat `examples`; write it to `out`. Resumes from checkpoints."""
    import torch
    from accelerate import Accelerator

    out = Path(out)
    # bf16 = autocast over fp32 master weights: pure-bf16 backward is pathologically slow on CPU.
    acc = Accelerator(cpu=cfg.device == "cpu",
                      mixed_precision="bf16" if cfg.precision == "bf16" else "no")
    model, tok = _lora_model(cfg)
    rows = tokenize(tok, examples, cfg.max_length, cfg.truncate, source)
    lengths = [len(r[0]) for r in rows]
    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = cfg.max_steps or math.ceil(per_epoch * cfg.epochs / cfg.grad_accum)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, total))
    model, opt = acc.prepare(model, opt)
    head_only = _head_only_ok(acc, model)
    step, logs = 0, {"loss": [], "eval": []}
    ckpt = _latest_checkpoint(out)
    if ckpt is not None:
        step, logs = _load_checkpoint(ckpt, acc.unwrap_model(model), opt, sched)
        progress.log(f"resuming {out} from step {step}")
    micro = [b for e in range(math.ceil(total * cfg.grad_accum / per_epoch) + 1)
             for b in batch_order(lengths, cfg.batch_size, cfg.seed, e)][: total * cfg.grad_accum]
    t0, tokens = time.time(), 0
    # loss.csv's tokens/seconds are cumulative over the whole run, across resumes
    done = logs["loss"][-1] if logs["loss"] else {"tokens": 0, "seconds": 0.0}
    if eval_hook and cfg.eval_every and step == 0:  # the curve's starting point: the bare base
        model.eval()
        logs["eval"] = [{"step": 0, **eval_hook(0, acc.unwrap_model(model), tok)}]
    model.train()
    with progress.bar(total=total, desc="tune", unit="step") as pb:
        pb.update(step)
        while step < total:
            loss_sum = 0.0
            for k in range(cfg.grad_accum):
                ids, mask, labels = collate(rows, micro[step * cfg.grad_accum + k],
                                            tok.pad_token_id, acc.device)
                loss = _loss(acc, model, ids, mask, labels, head_only) / cfg.grad_accum
                acc.backward(loss)
                loss_sum += float(loss.detach())
                tokens += int(mask.sum())
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            logs["loss"].append({"step": step, "loss": round(loss_sum, 6),
                                 "lr": sched.get_last_lr()[0], "tokens": done["tokens"] + tokens,
                                 "seconds": round(done["seconds"] + time.time() - t0, 2)})
            pb.update(1)
            pb.set_postfix(loss=f"{loss_sum:.3f}")
            if eval_hook and cfg.eval_every and (step % cfg.eval_every == 0 or step == total):
                model.eval()
                logs["eval"].append({"step": step, **eval_hook(step, acc.unwrap_model(model), tok)})
                model.train()
            if acc.is_main_process and cfg.save_every and step % cfg.save_every == 0 and step < total:
                _save_checkpoint(out, step, acc.unwrap_model(model), opt, sched, logs)
    return _finish(cfg, acc, model, tok, out, logs, tokens, time.time() - t0)


def _sort_sets(path: Path) -> None:
    """PEFT writes target_modules from a set, in hash order: sort it so equal runs write equal bytes."""
    conf = json.loads(path.read_text())
    for k, v in conf.items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            conf[k] = sorted(v)
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")


def _finish(cfg, acc, model, tok, out: Path, logs: dict, tokens: int, seconds: float) -> dict:
    from ..config import to_dict

    acc.wait_for_everyone()
    summary = {"steps": len(logs["loss"]), "final_loss": logs["loss"][-1]["loss"] if logs["loss"] else None,
               "tokens_this_session": tokens, "seconds_this_session": round(seconds, 1),
               "tokens_per_second": round(tokens / seconds, 1) if seconds else None}
    if not acc.is_main_process:
        return summary
    peft_model = acc.unwrap_model(model)
    with atomic_dir(out / ".adapter") as d:
        peft_model.save_pretrained(d)
        _sort_sets(d / "adapter_config.json")
    for f in (out / ".adapter").iterdir():
        f.replace(out / f.name)
    shutil.rmtree(out / ".adapter", ignore_errors=True)
    _write_logs(out, logs)
    _tensorboard(out, logs)
    if cfg.merge:
        merged = peft_model.merge_and_unload()
        with atomic_dir(out / "merged") as d:
            merged.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
    write_json(out / "train_summary.json", {**summary, "config": to_dict(cfg)})
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return summary
