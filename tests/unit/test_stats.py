"""adaptlab.evaluate.stats: intervals against textbook values, tests against hand-worked p-values,
seeded determinism, and verdicts that follow the test rather than the raw gap."""
from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from adaptlab.evaluate import stats
from adaptlab.evaluate.stats import (bootstrap_mean, compare_means, compare_rates, fmt_ci,
                                     mcnemar, mean_summary, paired_bootstrap, permutation_test,
                                     rate_summary, wilson)

Z95 = 1.959963984540054


def _wilson_by_hand(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The textbook formula, written out independently of the module."""
    p = k / n
    center = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = (z / (1 + z**2 / n)) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return center - half, center + half


def _pairs(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[list, list]:
    """Paired outcomes with the given discordant/concordant counts."""
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


# --- Wilson ---------------------------------------------------------------------------------

def test_wilson_textbook_values():
    lo, hi = wilson(5, 18)
    assert lo == pytest.approx(0.125, abs=5e-4) and hi == pytest.approx(0.509, abs=5e-4)
    assert (lo, hi) == pytest.approx(_wilson_by_hand(5, 18), abs=1e-12)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.2775, abs=1e-4)


def test_wilson_matches_formula_and_scipy_on_a_grid():
    for n in (1, 2, 7, 18, 50, 333):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ci = wilson(k, n)
            assert ci == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)
            ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
            assert ci == pytest.approx((ref.low, ref.high), abs=1e-9)
            assert 0.0 <= ci[0] <= k / n <= ci[1] <= 1.0


def test_wilson_level_and_edge_cases():
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(9, 20, 0.99)[1] - wilson(9, 20, 0.99)[0] > wilson(9, 20, 0.90)[1] - wilson(9, 20, 0.90)[0]
    z90 = 1.6448536269514722
    assert wilson(9, 20, 0.90) == pytest.approx(_wilson_by_hand(9, 20, z90), abs=1e-9)
    for bad in [(5, 3), (-1, 3), (1, -1)]:
        with pytest.raises(ValueError):
            wilson(*bad)
    with pytest.raises(ValueError):
        wilson(3, 10, level=95)


def test_wilson_coverage_near_nominal():
    rng = np.random.default_rng(12345)
    n, p = 60, 0.3
    draws = rng.binomial(n, p, size=2000)
    covered = sum(lo <= p <= hi for lo, hi in (wilson(int(k), n) for k in draws))
    assert 0.93 <= covered / 2000 <= 0.97


# --- bootstrap ------------------------------------------------------------------------------

def test_bootstrap_mean_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(3.0, 1.0, 20), rng.normal(3.0, 1.0, 2000)
    lo_s, hi_s = bootstrap_mean(small)
    lo_l, hi_l = bootstrap_mean(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width ~ 1/sqrt(n): 10x narrower expected
    # Roughly the normal-theory width 2 * 1.96 * s / sqrt(n).
    assert hi_l - lo_l == pytest.approx(2 * Z95 * large.std(ddof=1) / math.sqrt(2000), rel=0.15)


def test_bootstrap_mean_edges_and_determinism():
    assert all(math.isnan(v) for v in bootstrap_mean([]))
    assert bootstrap_mean([0.7]) == (0.7, 0.7)
    assert bootstrap_mean([2.0, 2.0, 2.0]) == (2.0, 2.0)
    vals = [0.12, 0.57, 0.91, 0.33, 0.84, 0.26, 0.48, 0.05, 0.69, 0.77]
    assert bootstrap_mean(vals, seed=7) == bootstrap_mean(vals, seed=7)
    assert bootstrap_mean(vals, seed=7) != bootstrap_mean(vals, seed=8)
    with pytest.raises(ValueError):
        bootstrap_mean([1.0, float("nan")])


# --- McNemar --------------------------------------------------------------------------------

def test_mcnemar_exact_p_for_known_counts():
    a, b = _pairs(a_only=1, b_only=9, both=4, neither=3)
    res = mcnemar(a, b)
    assert res["n"] == 17 and res["a_only"] == 1 and res["b_only"] == 9
    assert res["p"] == pytest.approx(2 * binom.cdf(1, 10, 0.5), abs=1e-12)
    assert res["p"] == pytest.approx(0.021484375, abs=1e-12)  # 2 * 11 / 1024
    # Symmetric in the direction of the difference.
    assert mcnemar(b, a)["p"] == pytest.approx(res["p"]) and mcnemar(b, a)["a_only"] == 9
    assert mcnemar(*_pairs(6, 0))["p"] == pytest.approx(2 / 64)
    assert mcnemar(*_pairs(3, 3))["p"] == 1.0


def test_mcnemar_no_discordant_pairs_and_length_mismatch():
    res = mcnemar(*_pairs(0, 0, both=5, neither=5))
    assert res == {"n": 10, "a_only": 0, "b_only": 0, "p": 1.0}
    with pytest.raises(ValueError):
        mcnemar([True, False], [True])


# --- paired bootstrap -----------------------------------------------------------------------

def test_paired_bootstrap_removes_item_variance():
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0.0, 5.0, 30)  # item spread dwarfs the 0.5 effect
    a = difficulty + 0.5 + rng.normal(0.0, 0.2, 30)
    b = difficulty
    res = paired_bootstrap(list(a), list(b))
    assert res["n"] == 30 and res["diff"] == pytest.approx(float((a - b).mean()))
    assert 0 < res["ci"][0] < res["diff"] < res["ci"][1]
    assert res["p"] < 0.01
    # The unpaired intervals overlap heavily: only pairing shows the effect.
    lo_a, hi_a = bootstrap_mean(a)
    lo_b, hi_b = bootstrap_mean(b)
    assert lo_a < hi_b and lo_b < hi_a


def test_paired_bootstrap_p_value_rules():
    res = paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert res["diff"] == 0.0 and res["p"] == 1.0 and res["ci"] == (0.0, 0.0)
    # Far from zero: the +1 correction is the floor, never 0.
    res = paired_bootstrap([5.0, 6.0, 7.0, 8.0], [0.0, 1.0, 1.0, 2.0], n_boot=999)
    assert res["p"] == pytest.approx(2 / 1000)
    # Noise centred near zero: large p, and p is 2*(k+1)/(B+1) for an integer k.
    rng = np.random.default_rng(4)
    a, b = list(rng.normal(0, 1, 40)), list(rng.normal(0, 1, 40))
    res = paired_bootstrap(a, b, n_boot=2000)
    assert res["ci"][0] < 0 < res["ci"][1] and res["p"] > 0.05
    k = res["p"] * 2001 / 2 - 1
    assert k == pytest.approx(round(k), abs=1e-6)
    # Sign of the difference does not change p.
    assert paired_bootstrap(b, a, n_boot=2000)["p"] == pytest.approx(res["p"], abs=0.02)


def test_paired_bootstrap_determinism_edges_and_mismatch():
    a, b = [0.2, 0.9, 0.4, 0.7, 0.5], [0.1, 0.3, 0.4, 0.2, 0.6]
    assert paired_bootstrap(a, b, seed=11) == paired_bootstrap(a, b, seed=11)
    assert paired_bootstrap(a, b, seed=11)["ci"] != paired_bootstrap(a, b, seed=12)["ci"]
    one = paired_bootstrap([0.9], [0.1])
    assert one["diff"] == pytest.approx(0.8) and one["p"] == 1.0
    assert paired_bootstrap([], [])["n"] == 0
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])


# --- permutation test -----------------------------------------------------------------------

def test_permutation_exact_hand_worked():
    # d = (1, 2, 3): the 8 sign patterns sum to 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 twice.
    res = permutation_test([1, 2, 3], [0, 0, 0])
    assert res == {"n": 3, "diff": 2.0, "p": 0.25}
    # d = (3, 1, -1): sums 5, 3, 3, 1, -1, -3, -3, -5; |sum| >= 3 for 6 of 8.
    assert permutation_test([3, 1, -1], [0, 0, 0])["p"] == 0.75
    # d = (3, -1): sums 2, 4, -4, -2, all as extreme as the observed 2.
    assert permutation_test([4, 0], [1, 1])["p"] == 1.0
    # Four equal positive differences: only all-plus and all-minus, 2 / 16.
    assert permutation_test([1.1] * 4, [1.0] * 4)["p"] == pytest.approx(0.125)
    # Exact enumeration ignores the seed.
    assert permutation_test([1, 2, 3], [0, 0, 0], seed=5) == res


def test_permutation_monte_carlo_matches_enumeration():
    rng = np.random.default_rng(6)
    d = rng.normal(0.4, 1.0, 17)  # one past the exact limit
    signs = ((np.arange(2**17)[:, None] >> np.arange(17)) & 1) * 2 - 1
    exact = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-9)
    res = permutation_test(list(d), [0.0] * 17, n_perm=10000, seed=0)
    assert res["p"] == pytest.approx(exact, abs=0.02)
    assert res == permutation_test(list(d), [0.0] * 17, n_perm=10000, seed=0)
    # The +1 correction: never 0 even when no random pattern is as extreme.
    big = permutation_test([10.0] * 30, [0.0] * 30, n_perm=500)
    assert big["p"] == pytest.approx(1 / 501)
    with pytest.raises(ValueError):
        permutation_test([1.0], [1.0, 2.0])


# --- summaries, formatting, verdicts --------------------------------------------------------

def test_summaries_and_fmt_ci():
    rs = rate_summary([True] * 5 + [False] * 13)
    assert rs["n"] == 18 and rs["k"] == 5 and rs["rate"] == pytest.approx(5 / 18)
    assert rs["ci"] == wilson(5, 18)
    assert math.isnan(rate_summary([])["rate"]) and rate_summary([])["ci"] == (0.0, 1.0)
    ms = mean_summary([1.0, 2.0, 3.0, 4.0])
    assert ms["n"] == 4 and ms["mean"] == 2.5 and ms["ci"] == bootstrap_mean([1.0, 2.0, 3.0, 4.0])
    assert fmt_ci(0.6111, (0.4166, 0.7749)) == "0.61 [0.42, 0.77]"
    assert fmt_ci(12.345, (10.0, 14.5), digits=1) == "12.3 [10.0, 14.5]"


def test_p_formatting_never_contradicts_alpha():
    assert stats._fmt_p(0.38, 0.05) == "p = 0.38"
    assert stats._fmt_p(0.0117, 0.05) == "p = 0.012"
    assert stats._fmt_p(0.0496, 0.05) == "p = 0.0496"  # not "0.05" next to a "beat"
    assert stats._fmt_p(0.0504, 0.05) == "p = 0.05"  # 0.05 is not < 0.05: no contradiction
    assert stats._fmt_p(1.0, 0.05) == "p = 1.0"
    assert stats._fmt_p(0.0002, 0.05) == "p < 0.001"


def test_compare_rates_significant_says_beat():
    a, b = _pairs(a_only=10, b_only=1, both=1, neither=6)  # 11/18 vs 2/18
    res = compare_rates("tuned", a, "base", b, "pass rate")
    assert res["significant"] is True and res["test"]["p"] == pytest.approx(2 * 12 / 2048)
    assert res["verdict"] == (
        f"tuned beat base on pass rate: {fmt_ci(11 / 18, wilson(11, 18))} vs "
        f"{fmt_ci(2 / 18, wilson(2, 18))} (McNemar p = 0.012, n = 18).")
    worse = compare_rates("base", b, "tuned", a, "pass rate")
    assert worse["verdict"].startswith("base did worse than tuned on pass rate: ")
    assert "beat" not in worse["verdict"]


def test_compare_rates_strict_gap_but_not_significant():
    a, b = _pairs(a_only=2, b_only=0, both=3, neither=13)  # 5/18 vs 3/18
    res = compare_rates("tuned", a, "base", b, "pass rate")
    assert res["a"]["rate"] > res["b"]["rate"] and res["significant"] is False
    assert res["verdict"] == (
        "No significant difference between tuned and base on pass rate: "
        "0.28 [0.12, 0.51] vs 0.17 [0.06, 0.39] (McNemar p = 0.5, n = 18).")
    assert "beat" not in res["verdict"] and "worse" not in res["verdict"]
    with pytest.raises(ValueError):
        compare_rates("x", [True], "y", [True, False], "pass rate")


def test_compare_rates_verdict_follows_alpha():
    a, b = _pairs(a_only=6, b_only=0, neither=4)  # p = 0.03125
    assert compare_rates("x", a, "y", b, "w", alpha=0.05)["verdict"].startswith("x beat y")
    assert compare_rates("x", a, "y", b, "w", alpha=0.01)["verdict"].startswith("No significant")


def test_compare_means_verdicts():
    rng = np.random.default_rng(8)
    base = rng.normal(0.5, 0.2, 25)
    tuned = base + 0.1 + rng.normal(0, 0.02, 25)
    res = compare_means("tuned", list(tuned), "base", list(base), "judge score")
    assert res["significant"] is True and res["verdict"].startswith("tuned beat base on judge score: ")
    assert "(paired bootstrap p < 0.001, n = 25)." in res["verdict"]
    assert fmt_ci(res["a"]["mean"], res["a"]["ci"]) in res["verdict"]
    loss = compare_means("tuned", list(tuned), "base", list(base), "loss", higher_is_better=False)
    assert loss["verdict"].startswith("tuned did worse than base on loss: ")
    noise = rng.normal(0.5, 0.2, 25)
    flat = compare_means("tuned", list(noise), "base", list(base), "judge score")
    assert flat["significant"] is False and "beat" not in flat["verdict"]
    assert flat["verdict"].startswith("No significant difference between tuned and base on judge score: ")
    assert "paired bootstrap p = " in flat["verdict"]
    assert compare_means("t", list(tuned), "b", list(base), "s", seed=3) == \
        compare_means("t", list(tuned), "b", list(base), "s", seed=3)
    with pytest.raises(ValueError):
        compare_means("x", [1.0, 2.0], "y", [1.0], "score")


def test_mcnemar_p_against_brute_force_enumeration():
    # Small discordant counts: the exact two-sided p is the total probability of outcomes no more
    # likely than the observed one; enumerate all 2**m coin patterns to check.
    for a_only, b_only in product(range(5), range(5)):
        m = a_only + b_only
        if m == 0:
            continue
        probs = [math.comb(m, k) / 2**m for k in range(m + 1)]
        expected = min(1.0, sum(q for q in probs if q <= probs[a_only] * (1 + 1e-12)))
        assert mcnemar(*_pairs(a_only, b_only))["p"] == pytest.approx(expected, abs=1e-12)
