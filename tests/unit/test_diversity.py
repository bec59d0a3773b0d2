"""adaptlab.evaluate.diversity against values worked out by hand (tests/dev checks BLEU with nltk)."""
from __future__ import annotations

import math

import pytest

from adaptlab.errors import AdaptlabError
from adaptlab.evaluate.diversity import (distinct_n, memorization, self_bleu, self_bleu_scores,
                                         sentence_bleu, tokens)

SAT = "the cat sat on the mat"
IS = "the cat is on the mat"
DOG = "a dog ran far away now"


def test_tokens_are_lowercased_whitespace_words():
    assert tokens("  The CAT,\tsat\n") == ["the", "cat,", "sat"]


@pytest.mark.parametrize("n, expected", [
    (1, 4 / 6),  # the cat sat | the cat ran: 6 words, 4 distinct
    (2, 3 / 4),  # the-cat twice, cat-sat, cat-ran
    (3, 1.0),    # two trigrams, both distinct
    (4, 0.0),    # no text has 4 words
])
def test_distinct_n(n, expected):
    assert distinct_n(["The cat sat", "the CAT  ran"], n) == pytest.approx(expected)


def test_distinct_ngrams_do_not_cross_texts():
    assert distinct_n(["a b", "c d"], 2) == 1.0  # "b c" is not a bigram of the set
    assert distinct_n(["a b", "a b"], 2) == 0.5


def test_sentence_bleu_by_hand():
    # 1-grams 5/6 (sat unmatched), 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the
    # mat), 4-grams 0/3 -> 0.1/3 (smoothing); equal lengths: no brevity penalty
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 0.1 / 3) ** 0.25
    assert expected == pytest.approx(0.254066, abs=1e-6)
    assert sentence_bleu(SAT.split(), [IS.split()]) == pytest.approx(expected, rel=1e-12)


def test_sentence_bleu_brevity_penalty_and_short_hypothesis():
    # "the cat" vs "the cat sat": 1-grams 2/2, 2-grams 1/1, 3- and 4-grams have no n-gram at all
    # (0/1 -> 0.1 each); the closest reference is longer: BP = exp(1 - 3/2)
    expected = math.exp(-0.5) * (1 * 1 * 0.1 * 0.1) ** 0.25
    assert sentence_bleu(["the", "cat"], [["the", "cat", "sat"]]) == pytest.approx(expected)
    assert expected == pytest.approx(0.191802, abs=1e-6)


def test_sentence_bleu_clips_and_uses_the_best_reference():
    # "the the the" vs refs "the cat" / "the the": unigram count clipped at 2 (the best ref)
    hyp = ["the", "the", "the"]
    p = [2 / 3, 1 / 2, 0.1 / 1, 0.1 / 1]  # "the the" twice in hyp, once in ref 2
    bp = 1.0  # closest ref length 2 < 3
    assert sentence_bleu(hyp, [["the", "cat"], ["the", "the"]]) == pytest.approx(
        bp * math.prod(p) ** 0.25)


def test_sentence_bleu_closest_length_tie_takes_the_shorter():
    # hyp of 4 words, refs of 3 and 5 words: both 1 away, the shorter counts, so no brevity
    # penalty (the longer would give exp(1 - 5/4)); precisions 3/4, 2/3, 1/2, 0 -> 0.1
    hyp = "a b c d".split()
    short, long_ = "a b c".split(), "x x x x x".split()
    with_short = sentence_bleu(hyp, [short, long_])
    assert with_short == pytest.approx(sentence_bleu(hyp, [long_, short]))
    assert with_short == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 0.1) ** 0.25)


def test_no_unigram_match_or_empty_hypothesis_is_zero():
    assert sentence_bleu(["x", "y"], [["a", "b"]]) == 0.0
    assert sentence_bleu([], [["a", "b"]]) == 0.0


def test_self_bleu_by_hand():
    # SAT and IS score 0.254066 against each other (DOG shares nothing); DOG scores 0
    scores = self_bleu_scores([SAT, IS, DOG])
    assert scores[0] == pytest.approx(0.2540663, abs=1e-6)
    assert scores[1] == pytest.approx(scores[0])
    assert scores[2] == 0.0
    assert self_bleu([SAT, IS, DOG]) == pytest.approx(2 * 0.2540663 / 3, abs=1e-6)


def test_self_bleu_reference_counts_exclude_the_text_itself():
    # "a a a" against the others: "a" appears at most twice elsewhere -> 2/3, not 3/3
    texts = ["a a a", "a a", "a a a"]
    assert self_bleu_scores(texts)[1] == pytest.approx(sentence_bleu(
        ["a", "a"], [["a", "a", "a"], ["a", "a", "a"]]))
    for i, t in enumerate(texts):
        others = [tokens(u) for j, u in enumerate(texts) if j != i]
        assert self_bleu_scores(texts)[i] == pytest.approx(sentence_bleu(tokens(t), others))


def test_self_bleu_of_copies_is_one_and_of_disjoint_texts_zero():
    assert self_bleu([SAT, SAT.upper()]) == pytest.approx(1.0)
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) == 0.0


TARGETS = ["The quick brown fox jumps", "lorem ipsum dolor sit amet"]
GENERATED = [
    "the  QUICK brown fox jumps",   # exact after normalizing
    "quick brown fox sleeps now",   # bigrams: 2 of 4 in target 0 (jaccard 2/6)
    "dolor sit amet consectetur",   # bigrams: 2 of 3 in target 1 (jaccard 2/5)
    "completely new words here",
    "fox",                          # shorter than n: only an exact copy would count
]


def test_memorization_containment_by_hand():
    m = memorization(GENERATED, TARGETS, n=2, near=0.5)
    assert m.exact == [True, False, False, False, False]
    assert m.overlap == pytest.approx([1.0, 0.5, 2 / 3, 0.0, 0.0])
    assert m.nearest == [0, 0, 1, None, None]
    assert m.exact_rate == pytest.approx(0.2) and m.near_rate == pytest.approx(0.6)


def test_memorization_jaccard_by_hand():
    m = memorization(GENERATED, TARGETS, n=2, near=0.5, measure="jaccard")
    assert m.overlap == pytest.approx([1.0, 2 / 6, 2 / 5, 0.0, 0.0])
    assert m.near_rate == pytest.approx(0.2)


def test_memorization_picks_the_most_overlapping_target():
    targets = ["a b c x y z", "a b c d e f"]
    m = memorization(["a b c d e q"], targets, n=3)
    assert m.nearest == [1] and m.overlap == pytest.approx([3 / 4])  # abc bcd cde of abc..deq


def test_memorization_default_n_is_8():
    long = " ".join(f"w{i}" for i in range(20))
    m = memorization([long + " tail"], [long])
    assert m.overlap == pytest.approx([13 / 14]) and m.near_rate == 1.0 and m.exact_rate == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: distinct_n([]), "no texts"),
    (lambda: distinct_n(["a"], 0), "n must be a positive integer"),
    (lambda: self_bleu(["only one"]), "at least 2 texts"),
    (lambda: self_bleu(["a", None]), "text 1 is a NoneType"),
    (lambda: sentence_bleu(["a"], []), "no references"),
    (lambda: memorization(["a"], []), "memorization targets: no texts"),
    (lambda: memorization(["a"], ["b"], near=0), "near must be in"),
    (lambda: memorization(["a"], ["b"], measure="cosine"), "containment or jaccard"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(AdaptlabError, match=match):
        call()
