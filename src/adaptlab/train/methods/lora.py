"""LoRA: low-rank adapters on the frozen base's `target_modules`; saved as a PEFT adapter."""
from __future__ import annotations

from pathlib import Path

from ...errors import AdaptlabError
from ...io import atomic_dir
from ..config import TuneConfig
from ..factory import Factory, load_peft_state, peft_state, save_adapter


def build(cfg: TuneConfig):
    from ...models.load import load_model

    base_precision = "fp32" if cfg.precision == "bf16" else cfg.precision
    return attach(cfg, *load_model(cfg.model, base_precision, device=cfg.device))


def attach(cfg: TuneConfig, model, tok):
    """LoRA adapters (per `cfg`) on a loaded base: the (model, tokenizer) the loop trains."""
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lcfg)
    except ValueError as e:
        raise AdaptlabError(f"target_modules: {e}") from None
    for p in model.parameters():  # LoRA weights train in fp32 whatever the base precision
        if p.requires_grad:
            p.data = p.data.float()
    if cfg.fused_lora:
        from .. import fused_lora, fused_norm

        fused_lora.fuse(model)
        fused_norm.fuse(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tok


def save(cfg: TuneConfig, model, tok, out: Path) -> None:
    """The adapter into `out`; with `cfg.merge` also the merged model + tokenizer in out/merged."""
    save_adapter(model, out)
    if cfg.merge:
        merged = model.merge_and_unload()
        with atomic_dir(out / "merged") as d:
            merged.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)


LORA = Factory(name="lora", build=build, state=peft_state, load_state=load_peft_state, save=save,
               head_only=True)

