"""Multiple-choice probes: teacher-forced option probabilities (no generation), the predictions
they make, how much a model's option ranking moved after tuning (rank correlation, KL), and the
Spearman partial correlation that relates that consistency to accuracy.

The partial correlation is a few lines over scipy (rank, regress out the control, correlate the
residuals); pingouin has one too but would be a dependency for three lines.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..data.mc import LETTERS

SCORE_BY = ("letters", "texts")


def _softmax(logps: Sequence[float]) -> list[float]:
    m = max(logps)
    e = [math.exp(v - m) for v in logps]
    return [v / sum(e) for v in e]


def option_probs(lm, chats: list[list[dict]], questions: list[dict], score_by: str = "letters") -> list[list[float]]:
    """Per question, the probability of each option A-D as the reply, renormalized over the four:
    `letters` scores the option letter as the reply's first token (one forward pass per
    question); `texts` scores each option's full text, its log-probability divided by its
    length in characters (lm-evaluation-harness's acc_norm: a sum alone favours short options),
    for chats in the cloze form (data.mc FORMS)."""
    if score_by not in SCORE_BY:
        raise ValueError(f"score_by '{score_by}': expected one of {', '.join(SCORE_BY)}")
    if score_by == "letters":
        logps = lm.choice_logprobs(chats, list(LETTERS))
    else:
        texts = [o for q in questions for o in q["options"]]
        flat = [v / max(1, len(t)) for v, t in zip(lm.score([c for c in chats for _ in LETTERS], texts), texts)]
        logps = [flat[i:i + 4] for i in range(0, len(flat), 4)]
    return [_softmax(v) for v in logps]


DEBIAS = ("none", "prior")


def debias(probs: list[list[float]], how: str = "prior") -> list[list[float]]:
    """Remove the model's preference for option positions: each question's probabilities divided
    by the mean probability of each position over all `probs`, renormalized (`prior`); `none`
    leaves them. Small models put most of their mass on one letter whatever the question (a
    135M student answered A to 58 of 60 questions), so their raw argmax says little about what
    they know. The prior is estimated from the questions themselves, without their keys, as in
    Zheng et al. 2024 (PriDe), which estimates it from a sample of questions instead of
    permuting options for every one; it is meaningful when the keys are balanced over positions,
    as they are in the shipped questions."""
    if how not in DEBIAS:
        raise ValueError(f"debias '{how}': expected one of {', '.join(DEBIAS)}")
    if how == "none" or not probs:
        return [list(p) for p in probs]
    prior = [sum(p[i] for p in probs) / len(probs) for i in range(4)]
    out = []
    for p in probs:
        v = [x / max(q, 1e-12) for x, q in zip(p, prior)]
        out.append([x / sum(v) for x in v])
    return out


def predictions(questions: list[dict], probs: list[list[float]]) -> list[dict]:
    """One record per question: the predicted letter, its probability, the full vector, right or not."""
    out = []
    for q, p in zip(questions, probs, strict=True):
        k = max(range(4), key=lambda i: p[i])
        out.append({"id": q["id"], "domain": q["domain"], "pred": LETTERS[k], "confidence": round(p[k], 6),
                    "probs": [round(v, 6) for v in p], "correct": LETTERS[k] == q["answer"]})
    return out


# -- consistency ------------------------------------------------------------------------------
def _ranks(v: Sequence[float]) -> list[float]:
    from scipy.stats import rankdata

    return list(rankdata(v))


def rank_correlation(before: Sequence[float], after: Sequence[float]) -> float:
    """Pearson correlation of the two rank vectors of one question's option probabilities (1 =
    the same order of preference; ties ranked by their mean). A constant vector gives 0."""
    a, b = _ranks(before), _ranks(after)
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va and vb else 0.0


def kl(before: Sequence[float], after: Sequence[float], eps: float = 1e-12) -> float:
    """KL(before || after) in nats."""
    return sum(p * math.log((p + eps) / (q + eps)) for p, q in zip(before, after) if p > 0)


def consistency(before: list[list[float]], after: list[list[float]]) -> dict:
    """Per-question rank correlations and KL divergences, and their means."""
    rc = [rank_correlation(b, a) for b, a in zip(before, after, strict=True)]
    kd = [kl(b, a) for b, a in zip(before, after)]
    return {"rank_corr": rc, "kl": kd, "mean_rank_corr": sum(rc) / len(rc), "mean_kl": sum(kd) / len(kd)}


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> dict:
    """Spearman correlation of x and y controlling for z: the Pearson correlation of the residuals
    of rank(x) and rank(y) after a linear regression on rank(z); p from t with n - 3 degrees of
    freedom. Needs at least 4 points."""
    import numpy as np
    from scipy import stats

    n = len(x)
    if not n == len(y) == len(z) or n < 4:
        raise ValueError(f"partial_spearman: need >= 4 points of x, y and z, got {len(x)}, {len(y)}, {len(z)}")
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones(n), rz])

    def resid(v):
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    ex, ey = resid(rx), resid(ry)
    if not ex.any() or not ey.any():
        return {"r": 0.0, "p": 1.0, "n": n}
    r = float(np.clip(np.corrcoef(ex, ey)[0, 1], -1.0, 1.0))
    df = n - 3
    t = r * math.sqrt(df / max(1e-12, 1 - r * r))
    return {"r": r, "p": float(2 * stats.t.sf(abs(t), df)), "n": n}
