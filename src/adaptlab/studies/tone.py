"""Tone of voice from simulated data: LoRA on teacher-simulated answers vs prompting.

Stages (each cached and resumable under runs/<name>/):
  split      passages -> train / validation / evaluation questions (by passage)
  judges     calibrate both tone judges on the labeled set; report their accuracy
  simulate   the teacher answers train questions in the tone; filters drop bad answers
  tune-<precision>-n<N>[-s<seed>]   LoRA adapters (one per seed when `seeds` lists several),
             with the validation rates of "in tone and content preserved" and tone every few steps
  evaluate   base / prompted / tuned / teacher on held-out questions, both judges, similarity,
             intervals and paired tests (left out with compare: false)
  curves     training loss and validation rates per precision, mean over seeds with intervals;
             steps to the target rate and a paired test at the last step
  report     HTML + Markdown + JSON from the sections the stages logged
"""
from __future__ import annotations

from dataclasses import replace

from ..data.corpus import load_labeled, load_passages
from ..report.stage import ReportConfig, report_inputs, report_stage
from ..runs.declare import Out, Stage
from ..train.sweep import Point, grid
from .tone_config import (Config, CurveAdapter, CurvesStage, EvaluateStage, JudgesStage, SimulateStage,
                          SplitStage, ValidateStage)
from .tone_eval import evaluate_stage
from .tone_judge import judge_texts, load_texts
from .tone_validate import load_labeled_outputs, validate_stage
from .tone_report import curves_stage
from .tone_stages import judges_stage, simulate_stage, split_stage, tune_config, tune_stage

__all__ = ["Config", "EXTRAS", "check", "judge", "load_texts", "stages", "summary"]

EXTRAS = ("train", "eval")
"""Extras the study needs; checked before anything is written."""


def check(cfg: Config) -> None:
    """Bad input fails here, before anything is written."""
    load_passages(cfg.corpus)
    load_labeled(cfg.calibration)
    if cfg.labeled_outputs:
        load_labeled_outputs(cfg.labeled_outputs)


def _points(cfg: Config) -> dict[str, Point]:
    """Each tune stage's name and point; `-s<seed>` only when the sweep has several seeds."""
    seeds = cfg.tune_seeds
    return {pt.name(with_seed=len(seeds) > 1): pt for pt in grid(cfg.train_sizes, cfg.precisions, seeds)}


def _tune_stages(cfg: Config) -> list[Stage]:
    out = []
    for name, pt in _points(cfg).items():
        inputs = {"train": Out("simulate", "train.jsonl")}
        if cfg.curve_every:  # the validation curve reads these; without it they are no input
            inputs |= {"val": Out("split", "val.jsonl"), "calibration": cfg.calibration}
        out.append(Stage(name, tune_stage, tune_config(cfg, pt.precision, pt.n, pt.seed), inputs))
    return out


def stages(cfg: Config) -> list[Stage]:
    tunes = _tune_stages(cfg)
    adapters = [s.name for s in tunes]
    main = Point(cfg.main_size, cfg.precisions[0], cfg.tune_seeds[0])
    evaluate = EvaluateStage(
        student=cfg.student, eval_batch_size=cfg.eval_batch_size, context=cfg.context, tone=cfg.tone,
        teacher=cfg.teacher, teacher_source=cfg.teacher_source,
        teacher_temperature=cfg.teacher_temperature, judge=cfg.judge, larger=cfg.larger,
        content_threshold=cfg.content_threshold,
        max_new_tokens=cfg.max_new_tokens,
        main_adapter=main.name(with_seed=len(cfg.tune_seeds) > 1), adapters=adapters, seed=cfg.seed)
    ev_inputs = {"eval": Out("split", "eval.jsonl"), "judges": Out("judges", "judges.json"),
                 "calibration": cfg.calibration}
    for a in adapters:
        ev_inputs |= {a: Out(a, "adapter_model.safetensors"), f"{a}.tuned": Out(a, "tuned.json")}
    validate = [Stage("validate", validate_stage,
                      ValidateStage(cfg.tone.description, cfg.tone.contrast, cfg.judge,
                                    cfg.content_threshold, cfg.seed),
                      {"labeled": cfg.labeled_outputs, "calibration": cfg.calibration,
                       "judges": Out("judges", "judges.json")})] if cfg.labeled_outputs else []
    compared = [Stage("evaluate", evaluate_stage, evaluate, ev_inputs)] if cfg.compare else []
    points = [CurveAdapter(name, pt.precision, pt.n, pt.seed) for name, pt in _points(cfg).items()]
    curves = CurvesStage(points, cfg.main_size, cfg.precisions[0], cfg.seed)
    shown = ["judges", *[s.name for s in validate], "simulate", *[s.name for s in compared], "curves"]
    return [
        Stage("split", split_stage, SplitStage(cfg.split, cfg.seed), {"corpus": cfg.corpus}),
        Stage("judges", judges_stage, JudgesStage(cfg.tone.description, cfg.tone.contrast, cfg.judge,
                                                  cfg.judge_calibration_limit, cfg.seed),
              {"calibration": cfg.calibration}),
        *validate,
        Stage("simulate", simulate_stage,
              SimulateStage(replace(cfg.tone, contrast=""), cfg.teacher, cfg.filters, cfg.max_new_tokens,
                            cfg.teacher_temperature, cfg.teacher_source, cfg.context, cfg.seed),
              {"train": Out("split", "train.jsonl"), "calibration": cfg.calibration}),
        *tunes,
        *compared,
        Stage("curves", curves_stage, curves, {a: Out(a, "manifest.json") for a in adapters}),
        Stage("report", report_stage,
              ReportConfig(f"Tone of voice: tuned vs prompted ({cfg.name})", shown), report_inputs(shown)),
    ]


def judge(cfg: Config, texts: list[str], run) -> list[dict]:
    """`adaptlab judge`: the recipe's calibrated judges on `texts`."""
    return judge_texts(cfg, texts, run, stages(cfg))


def summary(metrics: dict[str, dict]) -> dict:
    """The run's headline metrics: tone rates and similarity per system (when compared), judge
    accuracies, and the convergence figures of the curves (`curve_*`)."""
    curves = {k: v for k, v in metrics.get("curves", {}).items() if k.startswith("curve_")}
    return {**metrics.get("evaluate", {}), **metrics["judges"], **curves}
