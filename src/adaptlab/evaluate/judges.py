"""Tone judges, calibrated on labeled data and never assumed right.

Judge protocol: `score(texts) -> list[float]`, the probability that each text is in the tone.
- ClassifierJudge: sentence embeddings + stylometric features under logistic regression.
- LLMJudge: a rubric prompt to any backend; P(Yes) vs P(No) from one forward pass on a local
  model, or a parsed Yes/No from generation on HTTP backends. Its bias is calibrated on labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from .style import features


class Judge(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[float]: ...


def _feature_matrix(texts: Sequence[str], embed_ref: str) -> np.ndarray:
    from .embed import embed

    style = np.array([features(t) for t in texts], dtype=np.float32)
    style = np.log1p(np.abs(style)) * np.sign(style)  # counts are heavy-tailed
    return np.hstack([embed(list(texts), embed_ref), style])


class ClassifierJudge:
    name = "classifier"

    def __init__(self, embed_ref: str = "minilm-l6", C: float = 1.0, seed: int = 0):
        self.embed_ref, self.C, self.seed = embed_ref, C, seed
        self.model = None

    def _new(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=5000,
                                                                  random_state=self.seed))

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> "ClassifierJudge":
        self.model = self._new().fit(_feature_matrix(texts, self.embed_ref), np.asarray(labels))
        return self

    def score(self, texts: Sequence[str]) -> list[float]:
        if self.model is None:
            raise RuntimeError("ClassifierJudge.fit() first")
        return [float(p) for p in self.model.predict_proba(_feature_matrix(texts, self.embed_ref))[:, 1]]

    def cross_validate(self, texts: Sequence[str], labels: Sequence[int], folds: int = 5) -> dict:
        """Held-out accuracy: each text is scored by a model that never saw it."""
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        X, y = _feature_matrix(texts, self.embed_ref), np.asarray(labels)
        cv = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
        pred = cross_val_predict(self._new(), X, y, cv=cv, method="predict_proba")[:, 1]
        return accuracy_report(pred.tolist(), y.tolist())


RUBRIC = (
    "Target tone of voice: {description}\n\n"
    "Text:\n\"\"\"\n{text}\n\"\"\"\n\n"
    "Is this text written in the target tone of voice? Answer Yes or No."
)


@dataclass
class LLMJudge:
    """A rubric judge on any LM.

    On backends that can score text (local models), the rubric is used contrastively: the margin
    is the mean per-token log-likelihood of the text when the model is asked to speak in the target
    tone, minus that when asked for the contrasting style. Small models judge far better this way
    than by answering Yes/No. Generation-only backends (HTTP) answer the Yes/No rubric instead.
    """

    lm: object
    description: str
    contrast: str = "formal written reference style"
    bias: float = 0.0
    name: str = "llm"

    def _speak(self, style: str) -> list[dict]:
        return [{"role": "system", "content": f"Reply in this tone of voice: {style}."},
                {"role": "user", "content": "Please answer my question."}]

    def margins(self, texts: Sequence[str]) -> list[float]:
        from ..lm.base import Scorer, supports

        texts = list(texts)
        if supports(self.lm, Scorer):
            n = len(texts)
            lp = self.lm.score([self._speak(self.description)] * n + [self._speak(self.contrast)] * n,
                               texts + texts)
            lengths = [max(1, len(t.split())) for t in texts]
            return [(lp[i] - lp[n + i]) / lengths[i] for i in range(n)]
        from ..lm.base import GenParams

        chats = [[{"role": "system", "content": "You are a careful judge of writing style."},
                  {"role": "user", "content": RUBRIC.format(description=self.description, text=t)}]
                 for t in texts]
        outs = self.lm.chat(chats, GenParams(max_new_tokens=3, temperature=0.0))
        return [5.0 if o.strip().lower().startswith("yes") else -5.0 for o in outs]

    def score(self, texts: Sequence[str]) -> list[float]:
        return [1 / (1 + math.exp(-(m + self.bias))) for m in self.margins(texts)]

    def calibrate(self, texts: Sequence[str], labels: Sequence[int], folds: int = 5, seed: int = 0) -> dict:
        """Fit the bias by cross-validation and report held-out accuracy; then fit it on all."""
        m = np.asarray(self.margins(texts))
        y = np.asarray(labels)
        held = np.zeros_like(m)
        idx = np.random.default_rng(seed).permutation(len(m))
        for k in range(folds):
            test = idx[k::folds]
            train = np.setdiff1d(idx, test)
            held[test] = m[test] + best_bias(m[train], y[train])
        self.bias = best_bias(m, y)
        report = accuracy_report((1 / (1 + np.exp(-held))).tolist(), y.tolist())
        report["uncalibrated_accuracy"] = round(float(((m > 0) == (y == 1)).mean()), 4)
        report["bias"] = round(self.bias, 3)
        return report


def best_bias(margins: np.ndarray, labels: np.ndarray) -> float:
    """The shift of the decision threshold that maximizes accuracy (midpoint between margins)."""
    cands = np.concatenate([[0.0], -np.sort(margins)])
    cands = (cands[:-1] + cands[1:]) / 2 if len(cands) > 1 else cands
    accs = [(((margins + b) > 0) == (labels == 1)).mean() for b in cands]
    return float(cands[int(np.argmax(accs))])


def accuracy_report(probs: Sequence[float], labels: Sequence[int]) -> dict:
    p = np.asarray(probs) > 0.5
    y = np.asarray(labels) == 1
    return {"n": int(len(y)), "accuracy": round(float((p == y).mean()), 4),
            "in_tone_recall": round(float(p[y].mean()), 4) if y.any() else None,
            "off_tone_recall": round(float((~p[~y]).mean()), 4) if (~y).any() else None,
            "chance": round(float(max(y.mean(), 1 - y.mean())), 4)}


def agreement(a: Sequence[float], b: Sequence[float]) -> dict:
    """Raw agreement and Cohen's kappa between two judges' in-tone decisions."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    if len(x) == 0:
        return {"n": 0, "agreement": None, "kappa": None}
    po = float((x == y).mean())
    pe = float(x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean()))
    kappa = (po - pe) / (1 - pe) if pe < 1 else 1.0
    return {"n": int(len(x)), "agreement": round(po, 4), "kappa": round(kappa, 4)}
