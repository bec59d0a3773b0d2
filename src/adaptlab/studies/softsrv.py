"""SoftSRV (DeSalvo et al., ICLR 2025): synthetic data from soft prompts trained on a frozen LM,
against hard prompts, measured by MAUVE against the target distribution and by fine-tuning a
student on it.

Per domain (code: HumanEval; wordproblems: templated arithmetic; boolq: yes/no questions over
the project's passages) the targets are split into fit / heldout / test. Each method writes
n_synthetic samples: fewshot (a hand-written template with k fit targets, continued by the
frozen LM), fewshot-teacher (the same template, as a chat turn to the teacher backend), and the
three SoftSRV soft prompts (noncontextual, contextual, mixture) trained on the fit targets over
the same frozen LM. The samples are measured (MAUVE vs heldout, distinct-n, self-BLEU,
memorization of the fit targets, parse rate), parsed into training records, cut to one size
for all methods, and a LoRA student is tuned on each and tested (McNemar against fewshot).

Stages (each cached and resumable under runs/<name>/):
  data-<domain>                      fit / heldout / test targets (seeded, disjoint)
  generator-<domain>-<kind>          a SoftSRV soft prompt trained on the fit targets
  generate-<domain>-<method>         n_synthetic samples (more rounds while too few parse)
  metrics-<domain>                   MAUVE, diversity, memorization, parse rate; equal-size
                                     training sets
  tune-<domain>-<method>             LoRA on the method's set (the same settings for all)
  evaluate-<domain>                  the untuned and tuned students on the test items: Wilson
                                     intervals, McNemar against fewshot, verdicts
  match-<domain>                     the distribution-matching loop for one SoftSRV method:
                                     generate -> MAUVE -> adjust, to a target or a budget
  parse-check                        the parse check against hand-labeled model samples
  table                              domain x method, the paper's headline, the match rounds
  report                             HTML + Markdown + JSON
"""
from __future__ import annotations

from ..data.corpus import load_records
from ..errors import AdaptlabError
from ..report.stage import ReportConfig, report_inputs, report_stage
from ..runs.declare import Out, Stage
from .softsrv_config import (Config, DataStage, EvaluateStage, GenerateStage, GeneratorStage,
                             MatchStage, MetricsStage, ParseCheckStage, TableStage, TuneStage,
                             kind_of)
from .softsrv_eval import (evaluate_stage, label_check, metrics_stage, parse_check_stage,
                           table_stage)
from .softsrv_stages import (data_stage, generate_stage, generator_stage, match_stage, pool_size,
                             tune_stage)

__all__ = ["Config", "EXTRAS", "check", "stages", "summary"]

EXTRAS = ("train", "eval", "code")


def check(cfg: Config) -> None:
    """The boolq questions and passages parse (every passage_id known), the parse labels are
    well formed, and each split domain has enough items for its sizes."""
    if cfg.parse_labels:
        labels = load_records(cfg.parse_labels, label_check)
        if not any(r["domain"] in cfg.domains for r in labels):
            raise AdaptlabError(f"parse_labels: {cfg.parse_labels} has no labeled samples of "
                                f"{', '.join(cfg.domains)}")
    for d in cfg.domains:
        have = pool_size(d, cfg)
        s = cfg.sizes[d]
        need = s.fit + s.heldout + s.test
        if have is not None and have < need:
            extra = f" of at most {cfg.code_max_chars} characters" if d == "code" else ""
            raise AdaptlabError(f"sizes.{d}: fit + heldout + test = {need}, but there are only "
                                f"{have} items{extra}")


def stages(cfg: Config) -> list[Stage]:
    out: list[Stage] = []
    shown: list[str] = ["table"]
    kinds = [k for k in (kind_of(m) for m in cfg.methods) if k]
    for d in cfg.domains:
        data = f"data-{d}"
        inputs = ({"questions": cfg.boolq_questions, "passages": cfg.boolq_passages}
                  if d == "boolq" else {})
        out.append(Stage(data, data_stage, DataStage(d, cfg.sizes[d], cfg.code_max_chars
                                                     if d == "code" else 0, cfg.seed), inputs))
        fit = {"fit": Out(data, "fit.jsonl")}
        for k in kinds:
            out.append(Stage(f"generator-{d}-{k}", generator_stage,
                             GeneratorStage(d, cfg.generator_for(k)), fit))
        gens = []
        for m in cfg.methods:
            k = kind_of(m)
            g = cfg.generator_for(k) if k else cfg.generator
            name = f"generate-{d}-{m}"
            ins = dict(fit)
            if k:  # the weights, not just the directory: a retrained generator re-samples
                ins |= {"generator": Out(f"generator-{d}-{k}", "softprompt.json"),
                        "weights": Out(f"generator-{d}-{k}", "softprompt.safetensors")}
            out.append(Stage(name, generate_stage, GenerateStage(
                d, m, cfg.n_synthetic, cfg.max_rounds, cfg.max_new_tokens[d], cfg.sampling,
                0 if k else cfg.shots, g.model if m == "fewshot" else "",
                cfg.teacher if m == "fewshot-teacher" else None, g.device, g.precision,
                cfg.seed), ins))
            gens.append(name)
        metrics = f"metrics-{d}"
        out.append(Stage(metrics, metrics_stage, MetricsStage(
            d, cfg.methods, cfg.n_synthetic, cfg.min_train, cfg.features, cfg.mauve_buckets,
            cfg.memorization_n, cfg.near, cfg.seed, cfg.mauve_boot),
            {"fit": Out(data, "fit.jsonl"), "heldout": Out(data, "heldout.jsonl"),
             **{m: Out(g, "samples.jsonl") for m, g in zip(cfg.methods, gens)}}))
        for m in cfg.methods:
            out.append(Stage(f"tune-{d}-{m}", tune_stage, TuneStage(d, m, cfg.tune_config()),
                             {"train": Out(metrics, f"train-{m}.jsonl")}))
        ev = f"evaluate-{d}"
        out.append(Stage(ev, evaluate_stage, EvaluateStage(
            d, cfg.methods, cfg.tune.model, cfg.eval_max_new_tokens[d], cfg.eval_batch_size,
            cfg.tune.device, cfg.seed),
            {"test": Out(data, "test.jsonl"),
             **{m: Out(f"tune-{d}-{m}", "tuned.json") for m in cfg.methods}}))
        shown += [metrics, ev]
        if cfg.match.method:
            k = kind_of(cfg.match.method)
            mt = cfg.match
            out.append(Stage(f"match-{d}", match_stage, MatchStage(
                d, mt.method, cfg.generator_for(k), cfg.sampling, cfg.n_synthetic,
                cfg.max_new_tokens[d], mt.target, mt.budget, mt.schedule, cfg.features,
                cfg.mauve_buckets, cfg.seed),
                {"fit": Out(data, "fit.jsonl"), "heldout": Out(data, "heldout.jsonl"),
                 "samples": Out(f"generate-{d}-{mt.method}", "samples.jsonl"),
                 "generator": Out(f"generator-{d}-{k}", "softprompt.json"),
                 "weights": Out(f"generator-{d}-{k}", "softprompt.safetensors")}))
            shown.append(f"match-{d}")
        shown += [f"generator-{d}-{k}" for k in kinds] + [data]
    tin = {}
    for d in cfg.domains:
        tin |= {f"metrics-{d}": Out(f"metrics-{d}", "metrics.json"),
                f"evaluate-{d}": Out(f"evaluate-{d}", "results.json")}
        if cfg.match.method:
            tin[f"match-{d}"] = Out(f"match-{d}", "match.json")
    if cfg.parse_labels:
        out.append(Stage("parse-check", parse_check_stage, ParseCheckStage(cfg.domains),
                         {"labels": cfg.parse_labels}))
        shown.insert(1, "parse-check")
    out.append(Stage("table", table_stage, TableStage(cfg.domains, cfg.methods,
                                                      bool(cfg.match.method), cfg.seed), tin))
    out.append(Stage("report", report_stage, ReportConfig(f"SoftSRV ({cfg.name})", shown),
                     report_inputs(shown)))
    return out


def summary(metrics: dict[str, dict]) -> dict:
    """Headline metrics: the table stage's (MAUVE and downstream score per domain and method)."""
    return dict(metrics.get("table", {}))
