"""The smallest study: LoRA-tune a student on a chat file, then answer held-out prompts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import to_dict
from ..train.config import TuneConfig


@dataclass
class Config:
    name: str = "quickstart"
    """Run name: outputs go to runs/<name>/."""
    data: str = "corpora/quickstart/train.jsonl"
    """Chat examples to train on."""
    prompts: str = "corpora/quickstart/prompts.jsonl"
    """Prompts to answer with the tuned adapter."""
    tune: TuneConfig = field(default_factory=TuneConfig)
    """LoRA settings."""
    max_new_tokens: int = 64
    """Generation length for the prompts."""


def run(cfg: Config, recipe_path: str = "") -> dict:
    from ..api import _check_lengths, generate
    from ..data import load_examples
    from ..runs import Run
    from ..train.lora import tune

    examples = load_examples(cfg.data)
    load_examples(cfg.prompts, require_reply=False)
    _check_lengths(cfg.tune, examples, cfg.data)  # over-long examples fail before anything is written
    run_ = Run(cfg.name, recipe=to_dict(cfg), study="tune")
    t = run_.stage("tune", to_dict(cfg.tune), {"data": cfg.data},
                   lambda d, work: tune(cfg.tune, examples, d, source=cfg.data))
    g = run_.stage("generate", {"model": cfg.tune.model, "max_new_tokens": cfg.max_new_tokens},
                   {"prompts": cfg.prompts, "adapter": t.dir / "adapter_model.safetensors"},
                   lambda d, work: {"answers": generate(
                       cfg.tune.model, cfg.prompts, Path(d) / "answers.jsonl", adapter=str(t.dir),
                       overrides=[f"max_new_tokens={cfg.max_new_tokens}"])})
    metrics = {"final_loss": t.metrics.get("final_loss"), "answers": g.metrics.get("answers")}
    run_.finish(metrics)
    return {"run": str(run_.dir), **metrics, "timings_s": run_.timings}
