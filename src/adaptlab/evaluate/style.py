"""Stylometric features of spoken, conversational text, and basic style statistics."""
from __future__ import annotations

import re

_CONTRACTION = re.compile(r"\b\w+'(s|re|ll|ve|d|t|m)\b|\b\w+n't\b", re.I)
_SECOND = re.compile(r"\b(you|your|yours|you're|you'll|you've|yourself)\b", re.I)
_FIRST = re.compile(r"\b(i|i'm|i'd|i'll|we|let's|me|my)\b", re.I)
_LIST = re.compile(r"^\s*([-*•]|\d+[.)])\s+", re.M)
_MARKDOWN = re.compile(r"(\*\*|__|^#{1,6}\s|`|\[[^\]]+\]\()", re.M)
_SENT = re.compile(r"[^.!?]+[.!?]*")
_FORMAL = re.compile(r"\b(furthermore|moreover|however|therefore|thus|additionally|consequently|"
                     r"respectively|approximately|utilize|individuals|is defined as|refers to)\b", re.I)

FEATURE_NAMES = ["words", "mean_sentence_words", "contractions_per_word", "second_person_per_word",
                 "first_person_per_word", "list_markers", "markdown_markers", "newlines",
                 "questions", "exclamations", "formal_words_per_word", "long_words_share"]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.findall(text.replace("\n", " ")) if s.strip()]


def features(text: str) -> list[float]:
    """A fixed-length feature vector (order: FEATURE_NAMES)."""
    words = re.findall(r"[A-Za-z']+", text)
    n = max(1, len(words))
    sents = sentences(text) or [text]
    return [
        float(len(words)),
        len(words) / max(1, len(sents)),
        len(_CONTRACTION.findall(text)) / n,
        len(_SECOND.findall(text)) / n,
        len(_FIRST.findall(text)) / n,
        float(len(_LIST.findall(text))),
        float(len(_MARKDOWN.findall(text))),
        float(text.count("\n")),
        float(text.count("?")),
        float(text.count("!")),
        len(_FORMAL.findall(text)) / n,
        sum(len(w) >= 9 for w in words) / n,
    ]


def style_stats(texts: list[str]) -> dict:
    """Mean length and style markers over a set of texts, for the report table."""
    if not texts:
        return {}
    rows = [dict(zip(FEATURE_NAMES, features(t))) for t in texts]
    mean = lambda k: round(sum(r[k] for r in rows) / len(rows), 3)  # noqa: E731
    return {
        "words": mean("words"), "sentence_words": mean("mean_sentence_words"),
        "contractions_per_100w": round(100 * mean("contractions_per_word"), 2),
        "you_per_100w": round(100 * mean("second_person_per_word"), 2),
        "with_list_or_markdown": round(sum((r["list_markers"] + r["markdown_markers"]) > 0
                                           for r in rows) / len(rows), 3),
    }
