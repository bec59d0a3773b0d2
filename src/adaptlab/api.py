"""The Python API; each function mirrors one CLI command."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import from_dict, load, merge, parse_overrides, to_dict
from .errors import AdaptlabError


def tune(data: str | Path, out: str | Path, model: str | None = None, merge: bool = False,
         overrides: list[str] | None = None, eval_hook=None) -> dict:
    """LoRA-tune `model` on the chat examples in `data`; write a PEFT adapter to `out`."""
    from .data import load_examples
    from .models import resolve
    from .train import TuneConfig
    from .train.lora import tune as _tune

    extra = {"model": model} if model else {}
    cfg = load(TuneConfig, None, (overrides or []) + [f"{k}={v}" for k, v in extra.items()])
    if merge:
        cfg.merge = True
    examples = load_examples(data)
    resolve(cfg.model)  # fail on an unknown model before anything is written
    return _tune(cfg, examples, out, source=str(data), eval_hook=eval_hook)


@dataclass
class GenerateConfig:
    max_new_tokens: int = 128
    """Upper bound on new tokens per answer."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    """Nucleus mass when sampling."""
    seed: int = 0
    """Sampling seed."""
    batch_size: int = 8
    """Chats per generate call."""
    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    """fp32, bf16 or int8."""


def _prompt(ex: dict) -> list[dict]:
    msgs = ex["messages"]
    while msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    return msgs


def generate(model: str, input: str | Path, out: str | Path, adapter: str | None = None,
             system: str | None = None, overrides: list[str] | None = None) -> int:
    """Answer every chat in `input` (its last user turn) and write chats + replies to `out`."""
    from .data import load_examples
    from .io import write_jsonl
    from .lm.base import GenParams
    from .lm.local import LocalLM
    from .models import resolve

    cfg = from_dict(GenerateConfig, parse_overrides(overrides or []))
    examples = load_examples(input, require_reply=False)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        raise AdaptlabError(f"{adapter}: not an adapter directory (no adapter_config.json)")
    resolve(model)
    chats = [_prompt(ex) for ex in examples]
    if system:
        chats = [[{"role": "system", "content": system}] + [m for m in c if m["role"] != "system"]
                 for c in chats]
    lm = LocalLM(model, precision=cfg.precision, adapter=adapter, batch_size=cfg.batch_size)
    params = GenParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       top_p=cfg.top_p, seed=cfg.seed)
    replies = lm.chat(chats, params)
    write_jsonl(out, [{"messages": c + [{"role": "assistant", "content": r}]}
                      for c, r in zip(chats, replies)])
    return len(replies)


def run(recipe: str | Path, overrides: list[str] | None = None) -> dict:
    """Run a recipe: its `study` key picks the study; stages go to runs/<name>/."""
    from .config import load_yaml
    from .studies import STUDIES

    data = merge(load_yaml(recipe), parse_overrides(overrides or []))
    study = data.pop("study", None)
    if study not in STUDIES:
        raise AdaptlabError(f"{recipe}: study: expected one of {'/'.join(STUDIES)}, got {study!r}")
    module = STUDIES[study]()
    try:
        cfg = from_dict(module.Config, data)
    except AdaptlabError as e:
        raise AdaptlabError(f"{recipe}: {e}") from None
    return module.run(cfg, recipe_path=str(recipe))


__all__ = ["tune", "generate", "run", "to_dict"]
