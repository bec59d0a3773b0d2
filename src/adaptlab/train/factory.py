"""What the training loop needs from a kind of model: build it, checkpoint it, save it.

A factory is any object with the `ModelFactory` attributes; the built-ins (train/methods/:
lora.py, full.py, prompt.py) are `Factory` records of plain functions, so a variant is
`dataclasses.replace(LORA, build=my_build)`. The loop seeds torch with `cfg.seed` just before
`build`, so whatever `build` draws (adapter init) is reproducible.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from ..io import atomic_dir
from .config import TuneConfig


class ModelFactory(Protocol):
    name: str
    """Names the checkpoint's weights file: a checkpoint resumes only under the same name."""
    head_only: bool
    """The loss may run the LM head on the labelled positions only: the bare model (under PEFT's
    `get_base_model()`) computes what the whole forward does (LoRA yes; soft prompt no: its
    forward prepends the virtual tokens)."""

    def build(self, cfg: TuneConfig) -> tuple[Any, Any]:
        """(model, tokenizer) with exactly the weights to train requiring grad."""

    def state(self, model) -> dict:
        """The trained weights as named tensors, for a checkpoint."""

    def load_state(self, model, tensors: dict) -> None:
        """Put what `state` returned back into a freshly built model."""

    def save(self, cfg: TuneConfig, model, tok, out: Path) -> None:
        """Write the final model files into `out`."""


@dataclass(frozen=True)
class Factory:
    """A `ModelFactory` made of plain functions."""

    name: str
    build: Callable[[TuneConfig], tuple[Any, Any]]
    state: Callable[[Any], dict]
    load_state: Callable[[Any, dict], None]
    save: Callable[[TuneConfig, Any, Any, Path], None]
    head_only: bool = False


def peft_state(model) -> dict:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def load_peft_state(model, tensors: dict) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, tensors)


def publish(out: Path, write: Callable[[Path], None], name: str = ".model") -> None:
    """`write(dir)` into a temp dir, then move its files into `out`: none half-written."""
    with atomic_dir(out / name) as d:
        write(d)
    for f in (out / name).iterdir():
        f.replace(out / f.name)
    shutil.rmtree(out / name, ignore_errors=True)


def save_adapter(model, out: Path) -> None:
    """A PeftModel's adapter (adapter_model.safetensors + adapter_config.json) into `out`."""
    def write(d: Path) -> None:
        model.save_pretrained(d)
        _sort_sets(d / "adapter_config.json")
    publish(out, write, ".adapter")


def _sort_sets(path: Path) -> None:
    """PEFT writes target_modules from a set, in hash order: sort it so equal runs write equal bytes."""
    conf = json.loads(path.read_text())
    for k, v in conf.items():
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            conf[k] = sorted(v)
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
