"""Tone of voice from simulated data: LoRA on teacher-simulated answers vs system prompting.

Stages (each cached and resumable under runs/<name>/):
  split      passages -> train / validation / evaluation questions (by passage)
  judges     calibrate both tone judges on the labeled set; report their accuracy
  simulate   the teacher answers train questions in the tone; filters drop bad answers
  tune-<precision>-n<N>   LoRA adapters, with the validation tone rate every few steps
  evaluate   base / prompted / tuned / teacher on held-out questions, both judges, similarity
  report     HTML + Markdown + JSON
"""
from __future__ import annotations

import random
from pathlib import Path

from .. import progress
from ..config import to_dict
from ..errors import InputError
from ..io import hash_path, read_json, read_jsonl, write_json, write_jsonl
from ..lm.base import GenParams
from .tone_config import BackendConfig, Config

__all__ = ["Config", "run"]


# -- inputs ---------------------------------------------------------------------------------
def load_corpus(path: str) -> list[dict]:
    """Passages with questions and reference answers; bad lines are reported as file:line: field."""
    import json

    if not Path(path).exists():
        raise InputError(path, None, None, "no such file")
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(path, n, None, f"invalid JSON ({e.msg})") from None
        for key in ("id", "passage"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise InputError(path, n, key, "expected a non-empty string")
        if not isinstance(r.get("qa"), list) or not r["qa"]:
            raise InputError(path, n, "qa", "expected a non-empty list of {question, answer}")
        for j, qa in enumerate(r["qa"]):
            for key in ("question", "answer"):
                if not isinstance(qa, dict) or not isinstance(qa.get(key), str):
                    raise InputError(path, n, f"qa[{j}].{key}", "expected a string")
        rows.append(r)
    if not rows:
        raise InputError(path, None, None, "empty corpus")
    return rows


def load_calibration(path: str) -> tuple[list[str], list[int]]:
    rows = read_jsonl(path)
    for n, r in enumerate(rows, 1):
        if r.get("label") not in (0, 1) or not isinstance(r.get("text"), str):
            raise InputError(path, n, "label", "expected label 0/1 and a text")
    return [r["text"] for r in rows], [r["label"] for r in rows]


def make_splits(corpus: list[dict], cfg: Config) -> dict:
    """Split by passage: evaluation first, then validation, then training candidates."""
    passages = list(corpus)
    random.Random(cfg.seed).shuffle(passages)
    want = {"eval": cfg.split.eval_questions, "val": cfg.split.val_questions,
            "train": cfg.split.train_questions}
    out: dict[str, list[dict]] = {k: [] for k in want}
    it = iter(passages)
    for part in ("eval", "val", "train"):
        while len(out[part]) < want[part]:
            p = next(it, None)
            if p is None:
                break
            for j, qa in enumerate(p["qa"]):
                out[part].append({"id": f"{p['id']}-q{j}", "passage_id": p["id"],
                                  "topic": p.get("topic", ""), "passage": p["passage"],
                                  "question": qa["question"], "answer": qa["answer"]})
        out[part] = out[part][: want[part]]
    return out


# -- models ---------------------------------------------------------------------------------
def make_lm(b: BackendConfig, cache: Path, model=None, tokenizer=None, name: str | None = None):
    """A backend from its config, behind the on-disk call cache."""
    from ..lm.cache import CachedLM

    if b.backend == "openai":
        from ..lm.openai_http import OpenAILM

        inner = OpenAILM(b.model, base_url=b.base_url, api_key_env=b.api_key_env,
                         concurrency=b.batch_size)
    elif b.backend == "llamacpp":
        from ..lm.llamacpp import LlamaCppLM

        inner = LlamaCppLM(b.model)
    else:
        from ..lm.local import LocalLM

        inner = LocalLM(b.model, precision=b.precision, batch_size=b.batch_size, model=model,
                        tokenizer=tokenizer, name=name)
    return CachedLM(inner, cache)


def student_chat(item: dict, cfg: Config, system: str | None = None) -> list[dict]:
    q = item["question"]
    user = f"Context: {item['passage']}\n\nQuestion: {q}" if cfg.context == "passage" else q
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def classifier(cfg: Config):
    """The learned judge; refit from the labeled set wherever needed (seconds, deterministic)."""
    from ..evaluate.judges import ClassifierJudge

    texts, labels = load_calibration(cfg.calibration)
    return ClassifierJudge(seed=cfg.seed).fit(texts, labels)


def gen_params(cfg: Config, temperature: float = 0.0, seed: int | None = None) -> GenParams:
    return GenParams(max_new_tokens=cfg.max_new_tokens, temperature=temperature,
                     seed=cfg.seed if seed is None else seed)


# -- stages ---------------------------------------------------------------------------------
def stage_split(cfg: Config, d: Path) -> dict:
    splits = make_splits(load_corpus(cfg.corpus), cfg)
    for part, rows in splits.items():
        write_jsonl(d / f"{part}.jsonl", rows)
    return {k: len(v) for k, v in splits.items()}


def stage_judges(cfg: Config, d: Path, run_dir: Path) -> dict:
    from ..evaluate.judges import ClassifierJudge, LLMJudge

    texts, labels = load_calibration(cfg.calibration)
    clf = ClassifierJudge(seed=cfg.seed).cross_validate(texts, labels)
    n = cfg.judge_calibration_limit or len(texts)
    lm = make_lm(cfg.judge, run_dir / "cache.sqlite")
    llm_judge = LLMJudge(lm, cfg.tone.description, cfg.tone.contrast)
    llm = llm_judge.calibrate(texts[:n], labels[:n], seed=cfg.seed)
    write_json(d / "judges.json", {"classifier": clf, "llm": llm, "llm_bias": llm_judge.bias,
                                   "llm_model": cfg.judge.model})
    return {"classifier_accuracy": clf["accuracy"], "llm_accuracy": llm["accuracy"]}


def stage_simulate(cfg: Config, d: Path, work: Path, split_dir: Path, run_dir: Path) -> dict:
    from ..synth.filters import filter_answers
    from ..synth.simulate import simulate

    items = [{**it, "facts": it[cfg.teacher_source]} for it in read_jsonl(split_dir / "train.jsonl")]
    teacher = make_lm(cfg.teacher, run_dir / "cache.sqlite")
    rows = simulate(items, teacher, cfg.tone, gen_params(cfg, cfg.teacher_temperature),
                    work / "journal.jsonl", chunk=cfg.teacher.batch_size)
    f = cfg.filters
    scores = classifier(cfg).score([r["simulated"] for r in rows])
    kept, stats = filter_answers(rows, scores, f.min_words, f.max_copy, f.min_topic_sim,
                                 f.min_tone, f.max_dup_sim)
    write_jsonl(d / "candidates.jsonl", rows)
    write_jsonl(d / "train.jsonl", [{"messages": student_chat(r, cfg) + [
        {"role": "assistant", "content": r["simulated"]}], "neutral": r["answer"], "id": r["id"]}
        for r in kept])
    write_json(d / "filter_stats.json", stats)
    return stats


def tone_rate_hook(cfg: Config, val: list[dict], clf):
    """Evaluation hook for training: greedy answers to the validation questions, judged."""
    from ..lm.local import LocalLM

    def hook(step: int, model, tok) -> dict:
        lm = LocalLM(cfg.student, model=model, tokenizer=tok, batch_size=len(val) or 1)
        outs = lm.chat([student_chat(v, cfg) for v in val], gen_params(cfg))
        scores = clf.score(outs)
        return {"tone_rate": round(sum(s > 0.5 for s in scores) / len(scores), 4)}
    return hook


def stage_tune(cfg: Config, d: Path, n: int, precision: str, sim_dir: Path, split_dir: Path) -> dict:
    from dataclasses import replace

    from ..data import load_examples
    from ..train.lora import tune

    examples = load_examples(sim_dir / "train.jsonl")
    if len(examples) < n:
        progress.log(f"only {len(examples)} simulated examples survived the filters; N={n} uses all")
    tcfg = replace(cfg.tune, model=cfg.student, precision=precision, seed=cfg.seed,
                   eval_every=cfg.curve_every)
    val = read_jsonl(split_dir / "val.jsonl")
    hook = tone_rate_hook(cfg, val, classifier(cfg)) if cfg.curve_every and val else None
    summary = tune(tcfg, examples[:n], d, source=str(sim_dir / "train.jsonl"), eval_hook=hook)
    return {**{k: summary[k] for k in ("steps", "final_loss")}, "n": min(n, len(examples)),
            "precision": precision}


# -- run ------------------------------------------------------------------------------------
def run(cfg: Config, recipe_path: str = "") -> dict:
    from ..runs import Run
    from .tone_eval import stage_evaluate
    from .tone_report import stage_report

    load_corpus(cfg.corpus)  # bad input fails here, before anything is written
    load_calibration(cfg.calibration)
    r = Run(cfg.name, recipe=to_dict(cfg), study="tone")
    c = to_dict(cfg)
    split = r.stage("split", {k: c[k] for k in ("split", "seed")}, {"corpus": cfg.corpus},
                    lambda d, w: stage_split(cfg, d))
    judges = r.stage("judges", {k: c[k] for k in ("tone", "judge", "judge_calibration_limit", "seed")},
                     {"calibration": cfg.calibration}, lambda d, w: stage_judges(cfg, d, r.dir))
    sim = r.stage("simulate", {k: c[k] for k in ("tone", "teacher", "filters", "max_new_tokens",
                                                  "teacher_temperature", "teacher_source", "context", "seed")},
                  {"split": split.dir / "train.jsonl", "calibration": cfg.calibration},
                  lambda d, w: stage_simulate(cfg, d, w, split.dir, r.dir))
    tuned = {}
    for precision in cfg.precisions:
        for n in cfg.train_sizes:
            name = f"tune-{precision}-n{n}"
            tuned[name] = r.stage(
                name, {"tune": c["tune"], "n": n, "precision": precision, "student": cfg.student,
                       "curve_every": cfg.curve_every, "seed": cfg.seed, "context": cfg.context},
                {"train": sim.dir / "train.jsonl", "val": split.dir / "val.jsonl"},
                lambda d, w, n=n, p=precision: stage_tune(cfg, d, n, p, sim.dir, split.dir))
    ev = r.stage("evaluate", c, {"eval": split.dir / "eval.jsonl", "judges": judges.dir / "judges.json",
                                 **{k: v.dir / "adapter_model.safetensors" for k, v in tuned.items()}},
                 lambda d, w: stage_evaluate(cfg, d, split.dir, judges.dir, tuned, r.dir))
    rep = r.stage("report", {"name": cfg.name}, {"evaluate": ev.dir / "metrics.json"},
                  lambda d, w: stage_report(cfg, d, r, split, judges, sim, tuned, ev))
    metrics = {**ev.metrics, **judges.metrics}
    r.finish(metrics)
    return {"run": str(r.dir), "report": str(rep.dir / "report.html"), **metrics,
            "timings_s": {k: round(v, 1) for k, v in r.timings.items()}}
