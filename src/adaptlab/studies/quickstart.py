"""The smallest study: LoRA-tune a student on a chat file, then answer held-out prompts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..runs.declare import Out, Stage
from ..train.config import TuneConfig


EXTRAS = ("train",)


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


@dataclass
class GenerateStage:
    model: str
    max_new_tokens: int
    batch_size: int = 32


def check(cfg: Config) -> None:
    """Bad or over-long examples fail before anything is written."""
    from ..data import load_examples
    from ..train.lengths import check_lengths

    load_examples(cfg.prompts, require_reply=False)
    check_lengths(cfg.tune, load_examples(cfg.data), cfg.data)


def tune_stage(cfg: TuneConfig, inputs: dict[str, Path], ctx) -> dict:
    from ..data import load_examples
    from ..train.lora import tune

    return tune(cfg, load_examples(inputs["data"]), ctx.dir, source=str(inputs["data"]))


def generate_stage(cfg: GenerateStage, inputs: dict[str, Path], ctx) -> dict:
    from ..data import load_examples, prompt_turns
    from ..io import write_jsonl
    from ..lm.base import GenParams
    from ..lm.config import BackendConfig
    from ..lm.registry import make_lm

    chats = [prompt_turns(ex["messages"]) for ex in load_examples(inputs["prompts"], require_reply=False)]
    lm = make_lm(BackendConfig(model=cfg.model, batch_size=cfg.batch_size))
    lm.set_adapter(str(inputs["adapter"].parent))
    replies = lm.chat(chats, GenParams(max_new_tokens=cfg.max_new_tokens))
    write_jsonl(ctx.dir / "answers.jsonl", [{"messages": c + [{"role": "assistant", "content": r}]}
                                            for c, r in zip(chats, replies)])
    return {"answers": len(replies)}


def stages(cfg: Config) -> list[Stage]:
    return [Stage("tune", tune_stage, cfg.tune, {"data": cfg.data}),
            Stage("generate", generate_stage, GenerateStage(cfg.tune.model, cfg.max_new_tokens),
                  {"prompts": cfg.prompts, "adapter": Out("tune", "adapter_model.safetensors")})]


def summary(metrics: dict[str, dict]) -> dict:
    return {"final_loss": metrics["tune"].get("final_loss"), "answers": metrics["generate"].get("answers")}
