"""The tone study's `validate` stage: every judge and check measured on labeled model outputs.

The labeled set (corpora/tone/labeled_outputs.jsonl) holds answers of the systems this study
compares, each read and labeled by hand: in tone or not, content correct and faithful or not,
degenerate or not. A judge that is right on hand-written texts can still be wrong on model
outputs; this is where that shows.
"""
from __future__ import annotations

from pathlib import Path

from ..data.corpus import load_records
from ..errors import InputError
from ..evaluate import stats
from ..evaluate.content import content_ok, degenerate
from ..evaluate.judges import LLMJudge, agreement
from ..evaluate.metrics import decide
from ..io import read_json
from ..lm.registry import make_lm
from ..report.render import table
from .tone_config import ValidateStage
from .tone_stages import fit_classifier

LABELS = ("in_tone", "content_ok", "degenerate")


def _labeled(rec, path: str, n: int) -> None:
    if not isinstance(rec, dict):
        raise InputError(path, n, None, "expected a JSON object")
    for key in ("text", "reference", "system"):
        if not isinstance(rec.get(key), str):
            raise InputError(path, n, key, "expected a string")
    for key in LABELS:
        if rec.get(key) not in (0, 1) or isinstance(rec.get(key), bool):
            raise InputError(path, n, key, "expected label 0 or 1")


def load_labeled_outputs(path: str | Path) -> list[dict]:
    return load_records(path, _labeled)


def _accuracy_row(name: str, label: str, pred: list[bool], gold: list[int]) -> dict:
    k = sum(p == bool(g) for p, g in zip(pred, gold))
    n = len(gold)
    pos = [p for p, g in zip(pred, gold) if g]
    neg = [not p for p, g in zip(pred, gold) if not g]
    return {"judge or check": name, "label": label, "n": n,
            "accuracy [95% CI]": stats.fmt_ci(k / n, stats.wilson(k, n)),
            "recall on 1s": round(sum(pos) / len(pos), 3) if pos else "",
            "recall on 0s": round(sum(neg) / len(neg), 3) if neg else "",
            "share of 1s": round(sum(gold) / n, 3),
            "chance (majority label)": round(max(sum(gold), n - sum(gold)) / n, 3)}


def validate_stage(cfg: ValidateStage, inputs: dict[str, Path], ctx) -> dict:
    rows = load_labeled_outputs(inputs["labeled"])
    texts = [r["text"] for r in rows]
    llm = LLMJudge(make_lm(cfg.judge, ctx.cache), cfg.description, cfg.contrast,
                   bias=read_json(inputs["judges"])["llm_bias"])
    preds = {"verdict classifier": decide(fit_classifier(inputs["calibration"], cfg.seed).score(texts)),
             "filter classifier": decide(fit_classifier(inputs["calibration"], cfg.seed, "filter").score(texts)),
             f"LLM judge ({cfg.judge.model})": decide(llm.score(texts))}
    tone = [r["in_tone"] for r in rows]
    out = [_accuracy_row(name, "in tone", p, tone) for name, p in preds.items()]
    content = content_ok(texts, [r["reference"] for r in rows], cfg.content_threshold)
    out.append(_accuracy_row("content check", "content correct", content, [r["content_ok"] for r in rows]))
    out.append(_accuracy_row("degenerate check", "degenerate", [bool(degenerate(t)) for t in texts],
                             [r["degenerate"] for r in rows]))
    kappa = agreement([float(x) for x in preds["verdict classifier"]],
                      [float(x) for x in list(preds.values())[2]])
    ctx.section(f"Judges and checks on {len(rows)} labeled model outputs", table=table(out), rank=59,
                text=(f"Each answer was read and labeled by hand. A judge is only as good as its "
                      f"margin over chance (always giving the majority label). Verdict classifier vs "
                      f"LLM judge on these outputs: agreement {kappa['agreement']}, Cohen's kappa "
                      f"{kappa['kappa']}."))
    ctx.data["validation"] = {"rows": out, "judge_agreement": kappa}
    return {r["judge or check"]: r["accuracy [95% CI]"] for r in out}
