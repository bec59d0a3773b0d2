"""Diversity and memorization of a set of generated texts: distinct-n, self-BLEU, copies of targets.

Tokens are the lowercased text split on whitespace (`tokens`), so "Cat," and "cat" differ
(punctuation stays on its word) and "Cat" and "cat" do not; every function here uses them.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

from ..errors import AdaptlabError


def tokens(text: str) -> list[str]:
    return text.lower().split()


def normalize(text: str) -> str:
    """What two texts must share to be exact duplicates: their tokens, one space apart."""
    return " ".join(tokens(text))


def _ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def _texts(texts, what: str) -> list[str]:
    texts = list(texts)
    if not texts:
        raise AdaptlabError(f"{what}: no texts")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise AdaptlabError(f"{what}: text {bad} is a {type(texts[bad]).__name__}, not a string")
    return texts


def _positive(what: str, name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise AdaptlabError(f"{what}: {name} must be a positive integer, got {v!r}")


def distinct_n(texts: Sequence[str], n: int = 1) -> float:
    """Distinct n-grams / all n-gram occurrences, over the whole set (n-grams do not cross
    texts); 0.0 when no text has n tokens."""
    texts = _texts(texts, "distinct_n")
    _positive("distinct_n", "n", n)
    grams = [g for t in texts for g in _ngrams(tokens(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


# --- BLEU and self-BLEU ---------------------------------------------------------------------

def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]],
                  max_n: int = 4, epsilon: float = 0.1) -> float:
    """BLEU of one tokenized hypothesis against tokenized references: uniform weights up to
    `max_n`, clipped counts, closest-reference brevity penalty, and an n-gram order without a
    match counted as `epsilon` matches (as nltk's sentence_bleu with SmoothingFunction().method1)."""
    if not references:
        raise AdaptlabError("sentence_bleu: no references")
    matches, totals = [], []
    for n in range(1, max_n + 1):
        hyp = Counter(_ngrams(hypothesis, n))
        best: Counter = Counter()
        for ref in references:
            best |= Counter(g for g in _ngrams(ref, n) if g in hyp)  # | keeps the max count
        matches.append(sum(min(c, best[g]) for g, c in hyp.items()))
        totals.append(sum(hyp.values()))
    ref_len = min((len(r) for r in references), key=lambda r: (abs(r - len(hypothesis)), r))
    return _bleu(matches, totals, len(hypothesis), ref_len, epsilon)


def _bleu(matches: list[int], totals: list[int], hyp_len: int, ref_len: int,
          epsilon: float) -> float:
    if matches[0] == 0:  # also an empty hypothesis
        return 0.0
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    logs = [math.log((m if m else epsilon) / max(1, t)) for m, t in zip(matches, totals)]
    return bp * math.exp(math.fsum(w * x for w, x in zip([1 / len(logs)] * len(logs), logs)))


def self_bleu(texts: Sequence[str], max_n: int = 4, epsilon: float = 0.1) -> float:
    """Mean over texts of each text's `sentence_bleu` with all the other texts as references
    (Zhu et al. 2018, Texygen); higher = less diverse. Linear in the total number of n-grams:
    the reference count of an n-gram for text i is the largest count among the other texts,
    read from each n-gram's two largest counts."""
    return sum(self_bleu_scores(texts, max_n, epsilon)) / len(texts)


def self_bleu_scores(texts: Sequence[str], max_n: int = 4, epsilon: float = 0.1) -> list[float]:
    """Each text's BLEU against all the others (see `self_bleu`)."""
    texts = _texts(texts, "self_bleu")
    _positive("self_bleu", "max_n", max_n)
    if len(texts) < 2:
        raise AdaptlabError("self_bleu: needs at least 2 texts (each is scored against the others)")
    toks = [tokens(t) for t in texts]
    counts = [[Counter(_ngrams(tk, n)) for n in range(1, max_n + 1)] for tk in toks]
    tops = [_top_two(c[n] for c in counts) for n in range(max_n)]
    lengths = Counter(len(tk) for tk in toks)
    distinct = sorted(lengths)
    out = []
    for i, tk in enumerate(toks):
        matches = [sum(min(c, _others_max(tops[n], g, i)) for g, c in counts[i][n].items())
                   for n in range(max_n)]
        totals = [sum(counts[i][n].values()) for n in range(max_n)]
        out.append(_bleu(matches, totals, len(tk), _closest_other(distinct, lengths, len(tk)),
                         epsilon))
    return out


def _top_two(per_text) -> dict:
    """n-gram -> (largest count, the text holding it, second largest count in another text)."""
    top: dict = {}
    for i, c in enumerate(per_text):
        for g, k in c.items():
            c1, h1, c2 = top.get(g, (0, -1, 0))
            top[g] = (k, i, c1) if k > c1 else (c1, h1, max(c2, k))
    return top


def _others_max(top: dict, g, i: int) -> int:
    c1, h1, c2 = top[g]
    return c2 if h1 == i else c1


def _closest_other(distinct: list[int], lengths: Counter, n: int) -> int:
    """The length closest to n among the other texts (the shorter on a tie)."""
    if lengths[n] > 1:
        return n
    j = bisect.bisect_left(distinct, n)  # distinct[j] == n: this text's own length
    below = distinct[j - 1] if j > 0 else None
    above = distinct[j + 1] if j + 1 < len(distinct) else None
    if above is None or (below is not None and n - below <= above - n):
        return below
    return above


# --- memorization ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Memorization:
    exact_rate: float            # share of generated texts equal to a target (after `normalize`)
    near_rate: float             # share whose overlap with some target is >= `near` (or exact)
    overlap: list[float]         # per generated text: its largest overlap with any target
    nearest: list[int | None]    # the target it overlaps most (None: shares no n-gram)
    exact: list[bool]


def memorization(generated: Sequence[str], targets: Sequence[str], n: int = 8,
                 near: float = 0.5, measure: str = "containment") -> Memorization:
    """How much of `generated` copies `targets`. Overlap of a generated text g with a target t,
    over their sets of word n-grams G and T: "containment" |G∩T|/|G| (the share of g found in
    t) or "jaccard" |G∩T|/|G∪T|. An exact duplicate has overlap 1; a text shorter than n words
    can only match exactly. Targets are indexed by n-gram, so the cost is that of the shared
    n-grams, not of all pairs."""
    generated, targets = _texts(generated, "memorization"), _texts(targets, "memorization targets")
    _positive("memorization", "n", n)
    if not 0 < near <= 1:
        raise AdaptlabError(f"memorization: near must be in (0, 1], got {near}")
    if measure not in ("containment", "jaccard"):
        raise AdaptlabError(f"memorization: measure must be containment or jaccard, got {measure!r}")
    first = {}
    for j, t in enumerate(targets):
        first.setdefault(normalize(t), j)
    target_sets = [set(_ngrams(tokens(t), n)) for t in targets]
    index = defaultdict(list)
    for j, grams in enumerate(target_sets):
        for g in grams:
            index[g].append(j)
    exact, overlap, nearest = [], [], []
    for text in generated:
        j = first.get(normalize(text))
        best, arg = (1.0, j) if j is not None else _best_overlap(
            set(_ngrams(tokens(text), n)), target_sets, index, measure)
        exact.append(j is not None)
        overlap.append(best)
        nearest.append(arg)
    total = len(generated)
    return Memorization(exact_rate=sum(exact) / total,
                        near_rate=sum(o >= near for o in overlap) / total,
                        overlap=overlap, nearest=nearest, exact=exact)


def _best_overlap(grams: set, target_sets: list[set], index: dict,
                  measure: str) -> tuple[float, int | None]:
    shared: Counter = Counter(j for g in grams for j in index.get(g, ()))
    best, arg = 0.0, None
    for j, k in sorted(shared.items()):  # by target index: the first wins a tie
        score = k / len(grams) if measure == "containment" else \
            k / (len(grams) + len(target_sets[j]) - k)
        if score > best:
            best, arg = score, j
    return best, arg
