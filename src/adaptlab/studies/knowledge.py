"""Learning or self-aligning (Ren et al. 2024): does instruction tuning teach a model new
knowledge, or teach it to use what it already knows? Probe each student on multiple-choice
questions, build instruction sets from what it knows (harmonious), what it does not
(incompatible: the gold answer) and the same unknown questions answered its own way
(self-aligning), mix the last two, tune on each, and test zero-shot on held-out questions of the
training domains (HOMO), related domains (ID) and the others (OOD).

Stages (each cached and resumable under runs/<name>/):
  data                    questions -> pool (probed) / demos / homo / id / ood
  probe-<model>           k-shot option probabilities of the base model on the pool
  sets-<model>            harmonious / incompatible / self-aligning / mixtures, one size, with
                          explanations of the answer each target gives
  tune-<model>-<set>      one tuning run per set (LoRA or full)
  evaluate-<model>        base and tuned, zero-shot on HOMO / ID / OOD: accuracy, McNemar,
                          rank correlation and KL against the base
  summary                 the verdicts across models, the partial correlation, the paper's numbers
  report                  HTML + Markdown + JSON from the sections the stages logged
"""
from __future__ import annotations

from dataclasses import replace

from ..report.stage import ReportConfig, report_inputs, report_stage
from ..runs.declare import Out, Stage
from ..runs.study import evaluated
from .explain_config import model_tag
from .knowledge_config import (Config, DataStage, EvaluateStage, ProbeStage, SetsStage, SummaryStage,
                               TuneStage)
from .knowledge_eval import SPLITS, evaluate_stage, summary_stage
from .knowledge_stages import data_stage, probe_stage, sets_stage, tune_stage

__all__ = ["Config", "EXTRAS", "check", "stages", "summary"]

EXTRAS = ("train",)


def check(cfg: Config) -> None:
    """The question files exist (their lines are checked by the data stage)."""
    from pathlib import Path

    from ..errors import AdaptlabError

    for q in cfg.questions:
        if not q.startswith("hf:") and not Path(q).exists():
            raise AdaptlabError(f"questions: {q}: no such file or directory")


def stages(cfg: Config) -> list[Stage]:
    files = {f"questions{i}": q for i, q in enumerate(cfg.questions) if not q.startswith("hf:")}
    out = [Stage("data", data_stage, DataStage(cfg.questions, cfg.train_domains, cfg.id_domains,
                                               cfg.ood_domains, cfg.homo_n, cfg.test_per_domain,
                                               cfg.shots, cfg.seed), files)]
    dev, bs, names, shown = cfg.tune.device, cfg.eval_batch_size, cfg.set_names(), ["summary"]
    weights = "model.safetensors" if cfg.tune.method == "full" else "adapter_model.safetensors"
    for model in cfg.models:
        tag = model_tag(model)
        out.append(Stage(f"probe-{tag}", probe_stage, ProbeStage(model, cfg.shots, cfg.score_by, cfg.debias, bs, dev),
                         {"pool": Out("data", "pool.jsonl"), "demos": Out("data", "demos.jsonl")}))
        explainer = model if cfg.explainer == "self" else cfg.explainer
        out.append(Stage(f"sets-{tag}", sets_stage, SetsStage(
            model, cfg.score_by, explainer, cfg.threshold, cfg.set_size, cfg.max_set_size, sorted(cfg.ratios),
            cfg.explanations, cfg.explanation_tokens, bs, dev, cfg.seed),
            {"pool": Out("data", "pool.jsonl"), "probe": Out(f"probe-{tag}", "probe.jsonl")}))
        ev_inputs = {s: Out("data", f"{s}.jsonl") for s in SPLITS}
        for s in names:
            t = f"tune-{tag}-{s}"
            out.append(Stage(t, tune_stage, TuneStage(replace(cfg.tune, model=model, seed=cfg.seed), model, s),
                             {"set": Out(f"sets-{tag}", f"{s}.jsonl")}))
            ev_inputs |= {s: Out(t, "tuned.json"), f"{s}.weights": Out(t, weights)}
        out.append(Stage(f"evaluate-{tag}", evaluate_stage, EvaluateStage(
            model, names, cfg.score_by, cfg.debias, cfg.tune.method, bs, dev, cfg.seed), ev_inputs))
        shown.append(f"evaluate-{tag}")
    out.append(Stage("summary", summary_stage, SummaryStage(cfg.models, names, cfg.seed),
                     {model_tag(m): Out(f"evaluate-{model_tag(m)}", "metrics.json") for m in cfg.models}))
    shown += [f"probe-{model_tag(m)}" for m in cfg.models] + [f"sets-{model_tag(m)}" for m in cfg.models]
    out.append(Stage("report", report_stage, ReportConfig(f"Learning or self-aligning ({cfg.name})",
                                                          ["data", *shown]), report_inputs(["data", *shown])))
    return out


summary = evaluated
"""Headline metrics: each evaluate stage's and the summary's."""
