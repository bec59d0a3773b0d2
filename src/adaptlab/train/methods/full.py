"""Full fine-tuning: every weight trains (meant for small models: AdamW keeps two more copies).

Weights stay fp32 (precision=bf16 autocasts the compute over them, as for LoRA); the result is
the whole model, `save_pretrained` (model.safetensors, config) plus the tokenizer, in OUT.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import AdaptlabError
from ..config import TuneConfig
from ..factory import Factory, publish


def build(cfg: TuneConfig):
    from ...models.load import load_model

    model, tok = load_model(cfg.model, "fp32", device=cfg.device)
    for p in model.parameters():
        p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tok


def state(model) -> dict:
    return dict(model.named_parameters())  # a tied embedding / LM head appears once


def load_state(model, tensors: dict) -> None:
    import torch

    params = dict(model.named_parameters())
    if params.keys() != tensors.keys():
        diff = sorted(params.keys() ^ tensors.keys())
        raise AdaptlabError(f"checkpoint does not match the model: {len(diff)} weights differ, "
                            f"e.g. {diff[:3]}")
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)


def save(cfg: TuneConfig, model, tok, out: Path) -> None:
    def write(d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
    publish(out, write)


FULL = Factory(name="full", build=build, state=state, load_state=load_state, save=save)
