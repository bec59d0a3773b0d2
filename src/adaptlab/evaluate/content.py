"""Content checks on an answer: is it degenerate (empty, looping, gibberish), and does it agree
with the reference answer? A check is never assumed right: its accuracy on labeled model outputs
is measured (see the tone study's `validate` stage)."""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

_WORD = re.compile(r"\S+")
_ALPHA = re.compile(r"^[A-Za-z][A-Za-z'’-]*[.,!?;:)\"]*$")


def degenerate(text: str, min_words: int = 3) -> str | None:
    """Why the text is degenerate ("empty", "repetition", "gibberish"), or None."""
    words = _WORD.findall(text)
    if len(words) < min_words:
        return "empty"
    low = [re.sub(r"\W+", "", w.lower()) for w in words]
    if _repeats(low):
        return "repetition"
    alpha = sum(bool(_ALPHA.match(w)) for w in words) / len(words)
    if alpha < 0.6 or max(map(len, words)) > 30:
        return "gibberish"
    return None


def _repeats(words: list[str]) -> bool:
    """A word four times in a row, or a trigram that comes back three times."""
    run = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a and a == b else 1
        if run >= 4:
            return True
    grams = Counter(tuple(words[i:i + 3]) for i in range(len(words) - 2))
    return bool(grams) and max(grams.values()) >= 3


def content_scores(answers: Sequence[str], references: Sequence[str], embed_ref: str = "minilm-l6") -> list[float]:
    """Agreement with the reference: MiniLM cosine, 0 for a degenerate answer."""
    from .embed import pairwise_cosine

    return content_scores_from(answers, pairwise_cosine(list(answers), list(references), embed_ref))


def content_scores_from(answers: Sequence[str], sims: Sequence[float]) -> list[float]:
    """The same, from cosines to the reference already computed (no second embedding pass)."""
    return [0.0 if degenerate(a) else s for a, s in zip(answers, sims, strict=True)]


def content_ok(answers: Sequence[str], references: Sequence[str], threshold: float = 0.6,
               sims: Sequence[float] | None = None) -> list[bool]:
    """Content preserved: not degenerate and close enough to the reference answer (`sims`: the
    answers' cosines to their references, if already computed)."""
    scores = content_scores(answers, references) if sims is None else content_scores_from(answers, sims)
    return [s >= threshold for s in scores]
