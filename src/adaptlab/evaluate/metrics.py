"""Metric functions `metric(item, output) -> float` in one registry, and the one rate formula.

Per-item metrics compare an output with its item (the reference answer, the gold option); batch
judges (`Judge.score(texts)`) give per-item probabilities that `decide` turns into outcomes.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Sequence

Metric = Callable[[dict, str], float]


def _norm(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def exact_match(item: dict, output: str) -> float:
    """1 if the output equals the item's `answer` up to case, punctuation and spacing."""
    return float(_norm(output) == _norm(str(item["answer"])))


def contains_answer(item: dict, output: str) -> float:
    """1 if the item's `answer` appears in the output (normalized words, in order)."""
    want = " ".join(_norm(str(item["answer"])))
    return float(bool(want) and f" {want} " in f" {' '.join(_norm(output))} ")


def token_f1(item: dict, output: str) -> float:
    """SQuAD-style word-overlap F1 between the output and the item's `answer`."""
    pred, gold = _norm(output), _norm(str(item["answer"]))
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold or not common:
        return float(pred == gold)
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


def words(item: dict, output: str) -> float:
    """Length of the output in words."""
    return float(len(output.split()))


METRICS: dict[str, Metric] = {"exact_match": exact_match, "contains_answer": contains_answer,
                              "token_f1": token_f1, "words": words}


def score_all(metric: str | Metric, items: Sequence[dict], outputs: Sequence[str]) -> list[float]:
    fn = METRICS[metric] if isinstance(metric, str) else metric
    return [fn(it, o) for it, o in zip(items, outputs, strict=True)]


def decide(scores: Sequence[float], threshold: float = 0.5) -> list[bool]:
    """A judge's probabilities as yes/no outcomes."""
    return [s > threshold for s in scores]


def rate(scores: Sequence[float], threshold: float = 0.5) -> float:
    """Share of items a judge says yes to (0.0 for no items), rounded for tables."""
    return round(sum(decide(scores, threshold)) / len(scores), 4) if scores else 0.0


def bits(outcomes: Sequence[bool]) -> str:
    """Per-item outcomes as one CSV cell, in item order: "0110" (training curves log them so a
    later stage can pool and pair them)."""
    return "".join("1" if o else "0" for o in outcomes)
