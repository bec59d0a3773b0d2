"""BetterTogether (Soylu, Potts and Khattab 2024): prompt optimization and LoRA fine-tuning,
alternating, on LM programs, with DSPy's `BetterTogether` against models adaptlab serves.

For each task (two-hop QA with BM25 retrieval, arithmetic word problems with chain of thought,
Iris) and seed, the program runs unoptimized (vanilla) and after each strategy: p (bootstrapped
few-shot demos, random search), w (LoRA on the program's own traces that pass the metric), and
their orders p -> w, w -> p, p -> w -> p. Every module of a program runs on the one student model;
`adaptlab.programs.AdaptlabProvider` serves it (and each new adapter, by name) and trains the
LoRA adapters. Prompts use `FieldAdapter` (`Field: value`), which the small students follow.

Stages (each cached and resumable under runs/<name>/):
  chain-<task>-s<seed>-<chain>   one BetterTogether compile (a chain such as p -> w -> p yields
                                 p and p -> w on the way); every program it yields is tested
  table                          the paper's Table 1 layout: test metric per strategy and task,
                                 Wilson intervals, McNemar against p and vanilla, cost
  report                         HTML + Markdown + JSON
"""
from __future__ import annotations

from ..report.stage import ReportConfig, report_inputs, report_stage
from ..runs.declare import Out, Stage
from .bettertogether_config import ChainStage, Config, TableStage, chain_tag, chains
from .bettertogether_stages import chain_stage, table_stage

__all__ = ["Config", "EXTRAS", "check", "stages", "summary"]

EXTRAS = ("train", "programs")


def check(cfg: Config) -> None:
    """Nothing to read: the tasks ship with the package (corpora/multihop is generated)."""


def stages(cfg: Config) -> list[Stage]:
    out, per_task = [], {}
    for task in cfg.tasks:
        per_task[task] = []
        for seed in cfg.seeds:
            for i, chain in enumerate(chains(cfg.strategies)):
                name = f"chain-{task}-s{seed}-{chain_tag(chain)}"
                out.append(Stage(name, chain_stage, ChainStage(
                    task, chain, cfg.model, cfg.sizes[task], cfg.candidates, cfg.max_demos,
                    cfg.tune() | {"seed": seed}, cfg.max_tokens_for(task), cfg.threads,
                    cfg.decode_slots, cfg.device, cfg.precision, seed, test_vanilla=i == 0), {}))
                per_task[task].append(name)
    names = [s.name for s in out]
    sizes = {t: dict(cfg.sizes[t].__dict__) for t in cfg.tasks}
    out.append(Stage("table", table_stage, TableStage(cfg.tasks, cfg.strategies, per_task, cfg.model,
                                                      cfg.seed, sizes),
                     {n: Out(n, "results.json") for n in names}))
    out.append(Stage("report", report_stage, ReportConfig(f"BetterTogether ({cfg.name})",
                                                          ["table", *names]),
                     report_inputs(["table", *names])))
    return out


def summary(metrics: dict[str, dict]) -> dict:
    """Headline metrics: the table stage's."""
    return dict(metrics.get("table", {}))
