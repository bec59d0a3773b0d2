"""Soft prompt tuning: `num_virtual_tokens` trainable embeddings in front of the frozen model.

PEFT's PromptTuningConfig; saved as a PEFT adapter (adapter_model.safetensors holds the prompt).
The loss takes the PEFT forward (it prepends the virtual tokens), never the head-only shortcut.
"""
from __future__ import annotations

from ..config import TuneConfig
from ..factory import Factory, load_peft_state, peft_state, save_adapter


def build(cfg: TuneConfig):
    from peft import get_peft_model

    from ...models.load import load_model

    model, tok = load_model(cfg.model, "fp32", device=cfg.device)
    model = get_peft_model(model, prompt_config(cfg))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tok


def prompt_config(cfg: TuneConfig):
    """From `prompt_init_text`'s embeddings when given, else from random vocabulary tokens'
    (drawn from torch's RNG, which the loop seeds): both start at the scale of real embeddings,
    which an N(0, 1) init does not."""
    from peft import PromptTuningConfig, PromptTuningInit

    from ...models import resolve

    if cfg.prompt_init_text:
        init = dict(prompt_tuning_init=PromptTuningInit.TEXT,
                    prompt_tuning_init_text=cfg.prompt_init_text,
                    tokenizer_name_or_path=str(resolve(cfg.model)))
    else:
        init = dict(prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                              **init)


def save(cfg: TuneConfig, model, tok, out) -> None:
    save_adapter(model, out)


PROMPT = Factory(name="prompt", build=build, state=peft_state, load_state=load_peft_state,
                 save=save)
