"""Training checkpoints: trainable weights, optimizer, scheduler, RNG state and the logs so far.

OUT/checkpoints/step-N/ holds `<factory name>.safetensors` (what the factory's `state` returns),
state.safetensors + state.json (optimizer, scheduler and RNG state flattened to tensors and a
JSON skeleton: no pickle) and logs.json. Only the newest checkpoint is kept. Under several
processes the main one writes it and every rank reads the same one: the weights before
accelerate wraps the model (`load_weights`), the rest after (`load_progress`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import AdaptlabError
from ..io import atomic_dir, write_json


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((Path(out) / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))
    return ckpts[-1] if ckpts else None


def save_checkpoint(out: Path, step: int, factory, model, opt_state: dict, sched_state: dict,
                    logs: dict) -> None:
    """Called on the main process only; `model` holds the full trained weights (not shards)."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(Path(out) / "checkpoints" / f"step-{step}") as d:
        weights = {k: v.detach().cpu().contiguous() for k, v in factory.state(model).items()}
        save_file(weights, d / f"{factory.name}.safetensors")
        meta, tensors = flatten_state({"opt": opt_state, "sched": sched_state,
                                       "rng": torch.get_rng_state()})
        save_file(tensors, d / "state.safetensors")
        write_json(d / "state.json", meta)
        write_json(d / "logs.json", {"step": step, **logs})
    for old in (Path(out) / "checkpoints").glob("step-*"):  # keep the newest only
        if old.name != f"step-{step}":
            shutil.rmtree(old, ignore_errors=True)


def load_weights(ckpt: Path, factory, model) -> None:
    """The checkpoint's trained weights into the model as the factory built it: before accelerate
    wraps (and FSDP shards) it, so every rank loads the same full weights."""
    from safetensors.torch import load_file

    weights = ckpt / f"{factory.name}.safetensors"
    if not weights.is_file():
        found = sorted(p.name for p in ckpt.glob("*.safetensors") if p.name != "state.safetensors")
        raise AdaptlabError(f"{ckpt}: no {weights.name} (found {', '.join(found) or 'nothing'}): "
                            f"written by another method than {factory.name}? Remove it or use "
                            "another output directory")
    factory.load_state(model, load_file(weights))


def load_progress(ckpt: Path) -> tuple[int, dict, dict]:
    """(step, logs, {"opt", "sched", "rng"}) as `save_checkpoint` wrote them."""
    from safetensors.torch import load_file

    state = unflatten_state(load_file(ckpt / "state.safetensors"),
                            json.loads((ckpt / "state.json").read_text()))
    logs = json.loads((ckpt / "logs.json").read_text())
    return logs.pop("step"), logs, state


def flatten_state(obj, prefix: str = "", tensors: dict | None = None):
    """Optimizer/scheduler/RNG state -> (JSON skeleton, tensors for safetensors): no pickle."""
    import torch

    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}, tensors
    if isinstance(obj, dict):
        items = {str(k): flatten_state(v, f"{prefix}/{k}", tensors)[0] for k, v in obj.items()}
        # JSON keys are strings; the optimizer's per-parameter state is keyed by int
        return {"__dict__": items, "__int_keys__": all(isinstance(k, int) for k in obj) and bool(obj)}, tensors
    if isinstance(obj, (list, tuple)):
        return {"__list__": [flatten_state(v, f"{prefix}/{i}", tensors)[0] for i, v in enumerate(obj)]}, tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot checkpoint {type(obj).__name__} at {prefix}")


def unflatten_state(tensors: dict, meta):
    if isinstance(meta, dict) and "__tensor__" in meta:
        return tensors[meta["__tensor__"]]
    if isinstance(meta, dict) and "__dict__" in meta:
        conv = int if meta.get("__int_keys__") else str
        return {conv(k): unflatten_state(tensors, v) for k, v in meta["__dict__"].items()}
    if isinstance(meta, dict) and "__list__" in meta:
        return [unflatten_state(tensors, v) for v in meta["__list__"]]
    return meta
