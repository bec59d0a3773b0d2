"""Answer checks for the BetterTogether tasks: SQuAD-style exact match and token F1 (the
official SQuAD v1.1 normalisation: lower case, no punctuation, no articles a/an/the, single
spaces), the final number of a worked solution, and the Iris species a reply names.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
# A number, scanned left to right (so a match never starts inside an earlier number): a sign
# unless it is the hyphen of a range or a difference (3-5, 40-2), an optional $, digits with
# optional thousands commas (1,250), optional decimals.
_NUMBER = re.compile(r"(?<![\w)])(-)?\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)")
SPECIES = ("setosa", "versicolor", "virginica")
_SPECIES = re.compile(r"\b(setosa|versicolou?r|virginica)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation and articles removed, spaces collapsed."""
    text = _ARTICLES.sub(" ", str(text).lower().translate(_PUNCT))
    return " ".join(text.split())


def _golds(gold: str | Iterable[str]) -> list[str]:
    return [gold] if isinstance(gold, str) else list(gold)


def exact_match(prediction: str, gold: str | Iterable[str]) -> float:
    """1.0 if the prediction equals a gold answer after normalisation (the best over golds)."""
    pred = normalize_answer(prediction)
    return max((float(pred == normalize_answer(g)) for g in _golds(gold)), default=0.0)


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred or not gold:
        return float(pred == gold)  # SQuAD v2: empty against empty is a match
    common = sum((Counter(pred) & Counter(gold)).values())
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


def f1(prediction: str, gold: str | Iterable[str]) -> float:
    """SQuAD token F1 of the normalised words (the best over golds)."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(g).split()) for g in _golds(gold)), default=0.0)


def extract_number(text: str | None) -> int | float | None:
    """The last number in `text` ("$1,250." -> 1250, "-3" -> -3, "2.5" -> 2.5), an int when it
    is whole; None if the text has no number."""
    hits = _NUMBER.findall(str(text or ""))
    if not hits:
        return None
    sign, digits = hits[-1]
    value = float(digits.replace(",", "")) * (-1 if sign else 1)
    return int(value) if value.is_integer() else value


def species(text: str | None) -> str | None:
    """The one Iris species that `text` names ("Iris Setosa." -> "setosa"); None if it names
    none, or more than one."""
    found = {m.replace("versicolour", "versicolor")
             for m in _SPECIES.findall(str(text or "").lower())}
    return found.pop() if len(found) == 1 else None
