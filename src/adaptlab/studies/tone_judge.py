"""`adaptlab judge`: the tone study's calibrated judges on a user's own texts.

Both judges exactly as a run uses them: the classifier refit on the recipe's labeled set, the LLM
judge with the bias its `judges` stage calibrated (run, or taken from the cache, first).
"""
from __future__ import annotations

from pathlib import Path

from ..data.corpus import load_texts
from ..io import read_json

__all__ = ["judge_texts", "load_texts"]


def judge_texts(cfg, texts: list[str], run, stages: list) -> list[dict]:
    """One row per text: each judge's probability of "in tone" and its decision (the `judges`
    stage of `stages` is run first, or taken from the cache)."""
    from ..evaluate.judges import LLMJudge
    from ..evaluate.metrics import decide
    from ..lm.registry import make_lm
    from ..runs.declare import run_stages
    from .tone_stages import fit_classifier

    run_stages(run, stages, only="judges")
    bias = read_json(run.dir / "judges" / "judges.json")["llm_bias"]
    clf = fit_classifier(Path(cfg.calibration), cfg.seed).score(texts)
    llm = LLMJudge(make_lm(cfg.judge, run.dir / "cache.sqlite"), cfg.tone.description,
                   cfg.tone.contrast, bias=bias).score(texts)
    return [{"text": t, "classifier": round(c, 4), "classifier_in_tone": d_c,
             "llm": round(p, 4), "llm_in_tone": d_l}
            for t, c, p, d_c, d_l in zip(texts, clf, llm, decide(clf), decide(llm))]
