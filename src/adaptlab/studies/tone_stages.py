"""The tone study's stages before evaluation: split, judges, simulate, tune.

Each is `fn(config, inputs, ctx)`: the config is the stage's own dataclass (tone_config), the
inputs the files it reads; nothing else reaches it, so its cache key cannot go stale.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import progress
from ..data.corpus import load_labeled, load_passages, split_by_group
from ..evaluate.metrics import bits
from ..evaluate.stats import fmt_ci, wilson
from ..io import read_jsonl, write_json, write_jsonl
from ..lm.base import GenParams
from ..lm.registry import make_lm
from ..report.render import table
from .tone_config import CurveStage, JudgesStage, SimulateStage, SplitStage, TuneStage


def student_chat(item: dict, context: str, system: str | None = None) -> list[dict]:
    q = item["question"]
    user = f"Context: {item['passage']}\n\nQuestion: {q}" if context == "passage" else q
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def gen_params(max_new_tokens: int, seed: int, temperature: float = 0.0) -> GenParams:
    return GenParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)


HALVES = {"filter": 1, "verdict": 0}
"""The labeled set is cross-fit: the classifier that filters the simulated data learns from the
odd-numbered texts, the one that measures tone (curves, verdict) from the even-numbered ones, so
the verdict judge never learns what the filter learned."""


def labeled_half(calibration: Path, role: str) -> tuple[list[str], list[int]]:
    texts, labels = load_labeled(calibration)
    return texts[HALVES[role]::2], labels[HALVES[role]::2]


def fit_classifier(calibration: Path, seed: int, role: str = "verdict"):
    """A classifier judge for `role` (filter / verdict), refit from its half of the labeled set
    wherever needed (seconds, deterministic)."""
    from ..evaluate.judges import ClassifierJudge

    return ClassifierJudge(seed=seed).fit(*labeled_half(calibration, role))


def _cross_fit_accuracy(calibration: Path, seed: int) -> dict:
    """Each half's classifier scored on the other half: held-out accuracy of both roles."""
    from ..evaluate.judges import accuracy_report

    out = {}
    for role, other in (("filter", "verdict"), ("verdict", "filter")):
        texts, labels = labeled_half(calibration, other)
        out[role] = accuracy_report(fit_classifier(calibration, seed, role).score(texts), labels)
    return out


# -- split ----------------------------------------------------------------------------------
def split_stage(cfg: SplitStage, inputs: dict[str, Path], ctx) -> dict:
    """Passages -> evaluation, validation and training questions, by passage."""
    sizes = {"eval": cfg.split.eval_questions, "val": cfg.split.val_questions,
             "train": cfg.split.train_questions}
    parts = split_by_group(load_passages(inputs["corpus"]), sizes, cfg.seed)
    for part, rows in parts.items():
        write_jsonl(ctx.dir / f"{part}.jsonl", rows)
    return {k: len(v) for k, v in parts.items()}


# -- judges ---------------------------------------------------------------------------------
def judges_stage(cfg: JudgesStage, inputs: dict[str, Path], ctx) -> dict:
    """Both tone judges' held-out accuracy on the labeled set; the LLM judge's bias."""
    from ..evaluate.judges import ClassifierJudge, LLMJudge

    texts, labels = load_labeled(inputs["calibration"])
    clf = ClassifierJudge(seed=cfg.seed).cross_validate(texts, labels)
    n = cfg.calibration_limit or len(texts)
    llm_judge = LLMJudge(make_lm(cfg.judge, ctx.cache), cfg.description, cfg.contrast)
    llm = llm_judge.calibrate(texts[:n], labels[:n], seed=cfg.seed)
    halves = _cross_fit_accuracy(inputs["calibration"], cfg.seed)
    write_json(ctx.dir / "judges.json", {"classifier": clf, "llm": llm, "llm_bias": llm_judge.bias,
                                         "llm_model": cfg.judge.model, "classifier_halves": halves})
    cols = ["judge", "n", "accuracy [95% CI]", "in_tone_recall", "off_tone_recall", "chance"]
    rows = [{"judge": "classifier (MiniLM + style, logistic regression, 5-fold CV)", **clf},
            {"judge": "filter classifier (odd texts), on the even texts", **halves["filter"]},
            {"judge": "verdict classifier (even texts), on the odd texts", **halves["verdict"]},
            {"judge": f"LLM ({cfg.judge.model}, calibrated bias, 5-fold CV)", **llm}]
    for r in rows:
        k = round(r["accuracy"] * r["n"])
        r["accuracy [95% CI]"] = fmt_ci(k / r["n"], wilson(k, r["n"]))
    ctx.section("Judge calibration on the labeled set", table=table(rows, cols), rank=60, text=(
        "The filter classifier selects the simulated training data; the verdict classifier and "
        "the LLM judge measure tone. The two classifiers learn from disjoint halves of the "
        "labeled set, so the verdict never rests on what the filter learned."))
    ctx.data["judges"] = {"classifier": clf, "llm": llm, "llm_bias": llm_judge.bias,
                          "llm_model": cfg.judge.model}
    return {"classifier_accuracy": clf["accuracy"], "llm_accuracy": llm["accuracy"]}


# -- simulate -------------------------------------------------------------------------------
def simulate_stage(cfg: SimulateStage, inputs: dict[str, Path], ctx) -> dict:
    """The teacher answers the training questions in the tone; the filters drop bad answers."""
    from ..synth.filters import filter_answers
    from ..synth.simulate import simulate

    items = [{**it, "facts": it[cfg.teacher_source]} for it in read_jsonl(inputs["train"])]
    teacher = make_lm(cfg.teacher, ctx.cache)
    rows = simulate(items, teacher, cfg.tone, gen_params(cfg.max_new_tokens, cfg.seed, cfg.temperature),
                    ctx.work / "journal.jsonl", chunk=cfg.teacher.batch_size)
    f = cfg.filters
    scores = fit_classifier(inputs["calibration"], cfg.seed, "filter").score([r["simulated"] for r in rows])
    kept, stats = filter_answers(rows, scores, f.min_words, f.max_copy, f.min_topic_sim,
                                 f.min_tone, f.max_dup_sim)
    write_jsonl(ctx.dir / "candidates.jsonl", rows)
    write_jsonl(ctx.dir / "train.jsonl", [{"messages": student_chat(r, cfg.context) + [
        {"role": "assistant", "content": r["simulated"]}], "neutral": r["answer"], "id": r["id"]}
        for r in kept])
    write_json(ctx.dir / "filter_stats.json", stats)
    drops = [{"reason": k, "dropped": v} for k, v in stats["dropped"].items()] or [{"reason": "none", "dropped": 0}]
    ctx.section(f"Simulated data filters: kept {stats['kept']} of {stats['candidates']}",
                table=table(drops), rank=70)
    ctx.data["filters"] = stats
    return stats


# -- tune -----------------------------------------------------------------------------------
def both_outcomes(tone: list[bool], content: list[bool]) -> list[bool]:
    """The headline measure per answer, "in tone and content preserved": the verdict classifier
    says in tone and the content check passes."""
    return [t and c for t, c in zip(tone, content, strict=True)]


def curve_hook(cfg: TuneStage, val: list[dict], clf):
    """Evaluation hook for training: greedy answers to the validation questions; the rates of
    "in tone and content preserved", tone (verdict classifier) and content, and each question's
    outcomes (`*_items`, in val.jsonl order) so the curves stage can pool and pair them."""
    from ..evaluate.content import content_ok
    from ..evaluate.metrics import decide, rate
    from ..evaluate.stats import rate_summary
    from ..lm.local import LocalLM

    refs = [v["answer"] for v in val]

    def hook(step: int, model, tok) -> dict:
        lm = LocalLM(cfg.tune.model, model=model, tokenizer=tok, batch_size=len(val) or 1,
                     device=str(getattr(model, "device", "cpu")))  # where training put it
        outs = lm.chat([student_chat(v, cfg.curve.context) for v in val],
                       gen_params(cfg.curve.max_new_tokens, cfg.seed))
        scores = clf.score(outs)
        tone, content = decide(scores), content_ok(outs, refs, cfg.curve.content_threshold)
        both = both_outcomes(tone, content)
        share = lambda o: round(rate_summary(o)["rate"], 4)  # noqa: E731
        return {"tone_rate": rate(scores), "both_rate": share(both), "content_rate": share(content),
                "tone_items": bits(tone), "content_items": bits(content), "both_items": bits(both)}
    return hook


def tune_stage(cfg: TuneStage, inputs: dict[str, Path], ctx) -> dict:
    """A LoRA adapter on the first N simulated examples, with the validation curve."""
    from ..data import load_examples
    from ..train.lora import tune

    examples = load_examples(inputs["train"])
    if len(examples) < cfg.n:
        progress.log(f"only {len(examples)} simulated examples survived the filters; N={cfg.n} uses all")
    val = read_jsonl(inputs["val"]) if "val" in inputs else []
    hook = (curve_hook(cfg, val, fit_classifier(inputs["calibration"], cfg.seed))
            if cfg.curve and val else None)
    summary = tune(cfg.tune, examples[: cfg.n], ctx.dir, source=str(inputs["train"]), eval_hook=hook)
    tuned = {"n": min(cfg.n, len(examples)), "precision": cfg.tune.precision, "seed": cfg.seed}
    write_json(ctx.dir / "tuned.json", tuned)
    return {**{k: summary[k] for k in ("steps", "final_loss")}, **tuned}


def tune_config(cfg, precision: str, n: int, seed: int) -> TuneStage:
    """What the tune stage for (precision, N, seed) reads, from the recipe. The training
    examples already hold the student's prompt; context, answer length and the content
    threshold matter only to the validation curve."""
    tcfg = replace(cfg.tune, model=cfg.student, precision=precision, seed=seed,
                   eval_every=cfg.curve_every)
    curve = (CurveStage(cfg.context, cfg.max_new_tokens, cfg.content_threshold)
             if cfg.curve_every else None)
    return TuneStage(tune=tcfg, n=n, curve=curve, seed=seed)
