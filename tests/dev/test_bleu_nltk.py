"""adaptlab's BLEU / self-BLEU equal nltk's sentence_bleu with SmoothingFunction().method1, the
Texygen self-BLEU (dev-only: skipped where nltk is not installed; not a dependency of adaptlab).

Tolerance 1e-12: the same counts, the same float operations in the same order (fsum of the
weighted logs); only the self-BLEU reference counts are found another way (each n-gram's two
largest counts rather than a loop over the other texts), which changes no number.
"""
from __future__ import annotations

import random

import pytest

bleu_score = pytest.importorskip("nltk.translate.bleu_score")

from adaptlab.evaluate.diversity import self_bleu_scores, sentence_bleu, tokens  # noqa: E402


def random_texts(seed: int, n: int, vocab: int, lo: int, hi: int) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def nltk_bleu(hyp: list[str], refs: list[list[str]]) -> float:
    smooth = bleu_score.SmoothingFunction().method1
    return float(bleu_score.sentence_bleu(refs, hyp, smoothing_function=smooth))


@pytest.mark.parametrize("seed, vocab, lo, hi", [(0, 6, 1, 8), (1, 12, 3, 15), (2, 30, 0, 25),
                                                 (3, 4, 1, 3)])
def test_self_bleu_equals_nltk(seed, vocab, lo, hi):
    texts = random_texts(seed, 25, vocab, lo, hi)
    toks = [tokens(t) for t in texts]
    expected = [nltk_bleu(toks[i], toks[:i] + toks[i + 1:]) for i in range(len(toks))]
    assert self_bleu_scores(texts) == pytest.approx(expected, abs=1e-12)
    assert any(0 < e < 1 for e in expected)


def test_sentence_bleu_equals_nltk_on_the_nltk_doc_example():
    hyp = ("It is a guide to action which ensures that the military always obeys the commands "
           "of the party").split()
    refs = [r.split() for r in (
        "It is a guide to action that ensures that the military will forever heed Party commands",
        "It is the guiding principle which guarantees the military forces always being under "
        "the command of the Party",
        "It is the practical guide for the army always to heed the directions of the party")]
    assert sentence_bleu(hyp, refs) == pytest.approx(nltk_bleu(hyp, refs), abs=1e-12)
