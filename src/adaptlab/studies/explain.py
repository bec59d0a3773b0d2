"""Training with explanations (Ballout et al. 2023): Explained-ListOps, four target levels
(answer only, short, medium, long explanations), accuracy against N per model, deeper
expressions than any seen in training, and the modular-sum task on its own.

Stages (each cached and resumable under runs/<name>/):
  data-<task>      seeded ListOps expressions -> train / val / test / deeper (one pool, no repeats)
  tune-<task>-<model>-<level>-n<N>[-s<seed>]   one tuning run per grid point (LoRA or full)
  evaluate-<task>  every run and the prompting baselines on the test (and deeper) expressions:
                   accuracy with Wilson intervals, unparsable answers counted, McNemar of each
                   explanation level against the answer-only run at the same model, N and seed
  summary          the headline table across tasks, against the paper's numbers
  report           HTML + Markdown + JSON from the sections the stages logged
"""
from __future__ import annotations

from dataclasses import replace

from ..report.stage import ReportConfig, report_inputs, report_stage
from ..runs.declare import Out, Stage
from ..runs.study import evaluated
from .explain_config import (Config, DataStage, EvaluateStage, Run, SummaryStage, TaskSpec, TuneStage,
                             model_tag)
from .explain_eval import evaluate_stage, summary_stage
from .explain_stages import data_stage, target_of, tune_stage

__all__ = ["Config", "EXTRAS", "check", "stages", "summary"]

EXTRAS = ("train",)


def check(cfg: Config) -> None:
    """Everything is generated; the config's own checks ran when it was loaded."""


# -- the stage list ----------------------------------------------------------------------------
def _runs(cfg: Config, task: TaskSpec) -> list[tuple[Run, TuneStage]]:
    """Every (model, level, N, seed) of a task's grid, with its stage name and config."""
    seeds, (levels, sizes) = cfg.tune_seeds, cfg.grid(task)
    out = []
    for model in cfg.models:
        for level in levels:
            for n in sizes:
                for seed in seeds:
                    name = (f"tune-{task.name}-{model_tag(model)}-{level}-n{n}"
                            + (f"-s{seed}" if len(seeds) > 1 else ""))
                    tcfg = replace(cfg.tune, model=model, target=target_of(level), seed=seed,
                                   eval_every=cfg.curve_every)
                    out.append((Run(name, model, level, n, seed), TuneStage(tcfg, task.name, level, n, seed)))
    return out


def stages(cfg: Config) -> list[Stage]:
    out: list[Stage] = []
    shown: list[str] = []
    for t in cfg.tasks:
        d = f"data-{t.name}"
        sizes = cfg.grid(t)[1]
        shape = replace(t, levels=[], train_sizes=[])  # the grid is not the data's business
        out.append(Stage(d, data_stage, DataStage(shape, max(sizes), sorted(sizes), cfg.val_n,
                                                  cfg.test_n, cfg.seed), {}))
        runs = _runs(cfg, t)
        for run, tcfg in runs:
            inputs = {"train": Out(d, f"train-n{run.n}.jsonl")}
            if cfg.curve_every:
                inputs["val"] = Out(d, "val.jsonl")
            out.append(Stage(run.name, tune_stage, tcfg, inputs))
        ev_inputs = {"train": Out(d, "train.jsonl"), "test": Out(d, "test.jsonl")}
        if t.deeper:
            ev_inputs["deeper"] = Out(d, "deeper.jsonl")
        weights = "model.safetensors" if cfg.tune.method == "full" else "adapter_model.safetensors"
        for run, _ in runs:  # the weights too: a retrained run re-runs the evaluation
            ev_inputs |= {run.name: Out(run.name, "tuned.json"), f"{run.name}.weights": Out(run.name, weights)}
            if cfg.curve_every:
                ev_inputs[f"{run.name}.curve"] = Out(run.name, "eval.csv")
        ev = f"evaluate-{t.name}"
        out.append(Stage(ev, evaluate_stage,
                         EvaluateStage(t.name, cfg.models, [r for r, _ in runs], cfg.few_shot, cfg.baselines,
                                       cfg.eval_batch_size, cfg.threshold, cfg.tune.method,
                                       cfg.tune.explanation_template, cfg.tune.device, cfg.seed),
                         ev_inputs))
        shown.append(ev)
    names = [t.name for t in cfg.tasks]
    out.append(Stage("summary", summary_stage, SummaryStage(names, cfg.threshold),
                     {n: Out(f"evaluate-{n}", "metrics.json") for n in names}))
    shown = ["summary", *shown]
    out.append(Stage("report", report_stage,
                     ReportConfig(f"Training with explanations ({cfg.name})", shown), report_inputs(shown)))
    return out


summary = evaluated
"""Headline metrics: each evaluate stage's and the summary's."""
