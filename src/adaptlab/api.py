"""The Python API; each function mirrors one CLI command."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import from_dict, merge, parse_overrides, to_dict
from .errors import AdaptlabError, requires


def tune(data: str | Path, out: str | Path, model: str | None = None, merge: bool = False,
         overrides: list[str] | None = None, eval_hook=None) -> dict:
    """Tune `model` on the chat examples in `data` (LoRA unless `method=full` / `method=prompt`);
    write the adapter (or, for full fine-tuning, the model) to `out`."""
    from .data import load_examples
    from .models import resolve
    from .train import TuneConfig
    from .train.lengths import check_lengths
    from .train.lora import tune as _tune

    requires("train")
    extra = {"model": model} if model else {}  # --model wins over a `model=` override
    if merge:  # in the dict, so that __post_init__ checks it against the method
        extra["merge"] = True
    cfg = from_dict(TuneConfig, {**parse_overrides(overrides or []), **extra})
    examples = load_examples(data)
    resolve(cfg.model)  # fail on an unknown model before anything is written
    check_lengths(cfg, examples, str(data))  # with the tokenizer alone, before weights load
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
    batch_size: int = 32
    """Chats per generate call (decoding is memory-bound on CPU: batch 32 gave 9x the tokens/s
    of one prompt at a time for the 135M student on 2 cores; see bench/)."""
    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    """fp32, bf16 or int8."""

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.temperature < math.inf:  # also refuses nan
            raise ValueError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def generate(model: str, input: str | Path, out: str | Path, adapter: str | None = None,
             system: str | None = None, overrides: list[str] | None = None) -> int:
    """Answer every chat in `input` (its last user turn) and write chats + replies to `out`."""
    requires("train")
    from .data import load_examples, prompt_turns
    from .io import write_jsonl
    from .lm.base import GenParams
    from .lm.local import LocalLM
    from .models import resolve
    from .models.load import check_adapter_dir

    cfg = from_dict(GenerateConfig, parse_overrides(overrides or []))
    examples = load_examples(input, require_reply=False)
    if adapter is not None:
        check_adapter_dir(adapter)
    resolve(model)
    chats = [prompt_turns(ex["messages"]) for ex in examples]
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


def serve(model: str, adapter: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          api_key_env: str | None = None, precision: str = "fp32", batch_size: int = 8) -> None:
    """Serve `model` over an OpenAI-compatible HTTP API until interrupted, and `adapter` (a LoRA
    directory) on it under the directory's name; more adapters can be added at run time
    (`POST /v1/adapters`). The key clients must send comes from $`api_key_env`, else
    $ADAPTLAB_API_KEY if set; without one only a loopback host is allowed. Everything is checked
    and the port bound before the model loads."""
    from .serve import serve_model

    serve_model(model, {Path(adapter).name: adapter} if adapter else None, host=host, port=port,
                api_key_env=api_key_env, precision=precision, batch_size=batch_size)


def _load_recipe(recipe: str | Path, overrides: list[str] | None):
    """(study name, study module, its config) from a recipe and overrides, all checked."""
    from .config import load_yaml
    from .studies import STUDIES

    data = merge(load_yaml(recipe), parse_overrides(overrides or []))
    study = data.pop("study", None)
    if not isinstance(study, str) or study not in STUDIES:
        raise AdaptlabError(f"{recipe}: study: expected one of {'/'.join(STUDIES)}, got {study!r}")
    module = STUDIES[study]()
    try:
        cfg = from_dict(module.Config, data)
        _check_models(cfg)
    except AdaptlabError as e:
        raise AdaptlabError(f"{recipe}: {e}") from None
    return study, module, cfg


def run(recipe: str | Path, overrides: list[str] | None = None, only: str | None = None,
        start: str | None = None, force: bool = False, dry_run: bool = False) -> dict:
    """Run a recipe: its `study` key picks the study; stages go to runs/<name>/.

    only / start: run just that stage, or that stage and the ones after it (earlier stages'
    outputs must exist); force: re-run the selected stages even if cached; dry_run: list the
    stages and whether each is cached, running nothing."""
    from .runs.study import run_study

    study, module, cfg = _load_recipe(recipe, overrides)
    return run_study(study, module, cfg, only=only, start=start, force=force, dry=dry_run)


def judge(recipe: str | Path, file: str | Path, out: str | Path | None = None,
          overrides: list[str] | None = None) -> list[dict]:
    """Score each `{"text": ...}` line of `file` with the recipe's calibrated judges; one row per
    text (each judge's probability and decision), also written to `out` as JSONL if given."""
    from .io import write_jsonl
    from .runs import Run

    study, module, cfg = _load_recipe(recipe, overrides)
    if not callable(getattr(module, "judge", None)):
        raise AdaptlabError(f"{recipe}: the {study} study has no judges")
    requires(*getattr(module, "EXTRAS", ()))
    texts = module.load_texts(file)  # a bad line stops here, before anything is written
    module.check(cfg)
    rows = module.judge(cfg, texts, Run(cfg.name, recipe=to_dict(cfg), study=study, seed=cfg.seed))
    if out is not None:
        write_jsonl(out, rows)
    return rows


def _local_models(cfg, where: str = ""):
    """(field, reference) of every local model a study config names: by convention the fields
    `model` and `student`, in any section that does not run on a remote backend."""
    if getattr(cfg, "backend", "local") != "local":
        return
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            yield from _local_models(value, key)
        elif f.name in ("model", "student") and isinstance(value, str):
            yield key, value


def _check_models(cfg) -> None:
    """Fail on an unknown model reference before a run writes anything (nothing is converted)."""
    from .models import resolve

    for key, ref in _local_models(cfg):
        try:
            resolve(ref, convert=False)
        except AdaptlabError as e:
            raise AdaptlabError(f"{key}: {e}") from None


__all__ = ["tune", "generate", "serve", "run", "judge", "to_dict"]
