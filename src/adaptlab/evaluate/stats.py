"""Statistics behind every comparison table: intervals, paired tests and verdicts that follow them.

Evaluation sets in adaptlab are small (tens of items), so a bare "0.61 vs 0.28" says little.
Every rate gets a Wilson interval, every mean a bootstrap interval, and two systems run on the
same items are compared with a *paired* test (McNemar for pass/fail, paired bootstrap or
sign-flip permutation for scores), because pairing removes the item-difficulty variance that
dominates small sets. Verdict sentences are generated from the test, never from the raw gap.

scipy is imported lazily so that importing this module stays cheap for code that only formats.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

# Resample draws are made in chunks of about this many indices, so memory stays bounded on
# long inputs; the chunking depends only on the input length, so results stay deterministic.
_CHUNK_CELLS = 2_000_000
# Above this many pairs the 2**n sign patterns are too many to enumerate.
_EXACT_MAX_N = 16


def _check_level(level: float) -> float:
    """Reject levels outside (0, 1): a level of 95 (percent) would otherwise give nonsense."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def _floats(values, name: str = "values") -> np.ndarray:
    """A 1-D float array; a NaN or inf score would silently poison every mean, so refuse it."""
    x = np.asarray(list(values), dtype=float).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite numbers (found NaN or inf)")
    return x


def _pair(a, b, cast) -> tuple[list, list]:
    """Paired inputs must describe the same items, so their lengths have to match."""
    a, b = [cast(v) for v in a], [cast(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"paired inputs differ in length: {len(a)} vs {len(b)}")
    return a, b


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a rate k/n.

    Chosen over the normal (Wald) interval because it stays inside [0, 1] and keeps close to
    nominal coverage at the small n and extreme rates (0/10, 18/18) typical of our eval sets.
    n = 0 carries no information, so the interval is the whole range.
    """
    level = _check_level(level)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k = 0 or k = n the exact bound is 0 or 1; pin it so rounding cannot print -0.00.
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return (lo, hi)


def _boot_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of n_boot resamples (with replacement) of x, drawn chunk by chunk."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    chunk = max(1, _CHUNK_CELLS // len(x))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, len(x), size=(stop - start, len(x)))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _percentile_ci(boot: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval: no normality assumption, which skewed per-item scores rarely meet."""
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def bootstrap_mean(values, level: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean, seeded so a rerun prints the same table.

    Empty input has no mean (nan, nan); a single value has no spread to resample, so the
    interval collapses to (v, v) rather than pretending to a width it cannot know.
    """
    level = _check_level(level)
    x = _floats(values)
    if len(x) == 0:
        return (math.nan, math.nan)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    return _percentile_ci(_boot_means(x, n_boot, np.random.default_rng(seed)), level)


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """Exact McNemar test for two systems' pass/fail outcomes on the same items.

    Only items where the systems disagree carry evidence about which is better; under the null
    each disagreement is a fair coin, so the two-sided exact binomial test on the discordant
    pairs is used (exact rather than chi-square, since small sets have few discordant pairs).
    """
    a, b = _pair(a, b, bool)
    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    if a_only + b_only == 0:
        return {"n": len(a), "a_only": 0, "b_only": 0, "p": 1.0}
    from scipy.stats import binomtest

    p = binomtest(a_only, a_only + b_only, 0.5, alternative="two-sided").pvalue
    return {"n": len(a), "a_only": a_only, "b_only": b_only, "p": min(1.0, float(p))}


def _bootstrap_p(diff: float, boot: np.ndarray) -> float:
    """Two-sided bootstrap p: twice the share of resampled diffs on the far side of 0.

    The +1 in numerator and denominator counts the observed sample as one of the resamples,
    so p is never reported as exactly 0 from a finite number of draws.
    """
    if diff == 0:
        return 1.0
    other = np.count_nonzero(boot <= 0) if diff > 0 else np.count_nonzero(boot >= 0)
    return min(1.0, 2 * (int(other) + 1) / (len(boot) + 1))


# for callers with their own resamples (MAUVE's)
bootstrap_p = _bootstrap_p
percentile_ci = _percentile_ci


def paired_bootstrap(a: list[float], b: list[float], level: float = 0.95, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """CI and two-sided p for mean(a - b), resampling items so each item's pair stays together.

    With fewer than two pairs there is no spread to resample, so p is 1.0 (no evidence) and the
    interval collapses onto the observed difference.
    """
    level = _check_level(level)
    a, b = _pair(a, b, float)
    d = _floats(a, "a") - _floats(b, "b")
    if len(d) == 0:
        return {"n": 0, "diff": math.nan, "ci": (math.nan, math.nan), "p": 1.0}
    diff = float(d.mean())
    if len(d) == 1:
        return {"n": 1, "diff": diff, "ci": (diff, diff), "p": 1.0}
    boot = _boot_means(d, n_boot, np.random.default_rng(seed))
    return {"n": len(d), "diff": diff, "ci": _percentile_ci(boot, level), "p": _bootstrap_p(diff, boot)}


def _sign_flip_sums(d: np.ndarray, n_perm: int, seed: int) -> tuple[np.ndarray, bool]:
    """Sums of d under random sign flips: all 2**n patterns when few enough, else n_perm draws.

    Returns the sums and whether they are the exact (complete) null distribution.
    """
    n = len(d)
    if n <= _EXACT_MAX_N:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        return signs @ d, True
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    sums = np.empty(n_perm)
    for start in range(0, n_perm, chunk):
        stop = min(n_perm, start + chunk)
        sums[start:stop] = (rng.integers(0, 2, size=(stop - start, n)) * 2 - 1) @ d
    return sums, False


def permutation_test(a, b, n_perm: int = 10000, seed: int = 0) -> dict:
    """Paired sign-flip permutation test on mean(a - b).

    Under the null the labels within each pair are exchangeable, so each difference's sign is a
    coin flip. Exact when n <= 16 (the observed pattern is among the 2**n, so no correction is
    needed); otherwise Monte Carlo with the +1 correction, which keeps p valid and never 0.
    """
    a, b = _pair(a, b, float)
    d = _floats(a, "a") - _floats(b, "b")
    if len(d) == 0:
        return {"n": 0, "diff": math.nan, "p": 1.0}
    sums, exact = _sign_flip_sums(d, n_perm, seed)
    observed = abs(float(d.sum()))
    # A relative tolerance so float round-off cannot drop patterns that tie the observed sum.
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    extreme = int(np.count_nonzero(np.abs(sums) >= observed - tol))
    p = extreme / len(sums) if exact else (extreme + 1) / (len(sums) + 1)
    return {"n": len(d), "diff": float(d.mean()), "p": min(1.0, p)}


def rate_summary(outcomes: list[bool], level: float = 0.95) -> dict:
    """Count, rate and Wilson CI for pass/fail outcomes; an empty set's rate is nan, not 0."""
    outcomes = [bool(v) for v in outcomes]
    n, k = len(outcomes), sum(outcomes)
    return {"n": n, "k": k, "rate": k / n if n else math.nan, "ci": wilson(k, n, level)}


def mean_summary(values, level: float = 0.95, seed: int = 0) -> dict:
    """Count, mean and bootstrap CI for per-item scores; an empty set's mean is nan."""
    x = _floats(values)
    mean = float(x.mean()) if len(x) else math.nan
    return {"n": len(x), "mean": mean, "ci": bootstrap_mean(x, level=level, seed=seed)}


def fmt_ci(value: float, ci: tuple[float, float], digits: int = 2) -> str:
    """'0.61 [0.42, 0.77]': the one format every table and verdict shares."""
    lo, hi = ci
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _fmt_p(p: float, alpha: float) -> str:
    """'p = 0.012' with two significant digits, more if rounding would cross alpha.

    A printed 'p = 0.05' next to 'beat' (true p 0.0496) reads as a contradiction, so digits are
    added until the printed value sits on the same side of alpha as the real one.
    """
    if p < 0.001 and alpha > 0.001:
        return "p < 0.001"
    for digits in range(2, 7):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            break
    return f"p = {text if '.' in text or 'e' in text else text + '.0'}"


def _verdict(name_a: str, name_b: str, what: str, better: int, body: str) -> str:
    """The sentence for a comparison; better is +1 (a won), -1 (a lost) or 0 (not significant)."""
    if better > 0:
        return f"{name_a} beat {name_b} on {what}: {body}."
    if better < 0:
        return f"{name_a} did worse than {name_b} on {what}: {body}."
    return f"No significant difference between {name_a} and {name_b} on {what}: {body}."


def compare_rates(name_a: str, a: list[bool], name_b: str, b: list[bool], what: str,
                  alpha: float = 0.05) -> dict:
    """Two systems' pass rates on the same items, with a McNemar verdict.

    The direction is only claimed when the test is significant: a 5/18 vs 3/18 gap on its own
    is noise and is worded as such.
    """
    test = mcnemar(a, b)
    ra, rb = rate_summary(a), rate_summary(b)
    significant = bool(test["p"] < alpha)
    better = (1 if test["a_only"] > test["b_only"] else -1) if significant else 0
    body = (f"{fmt_ci(ra['rate'], ra['ci'])} vs {fmt_ci(rb['rate'], rb['ci'])} "
            f"(McNemar {_fmt_p(test['p'], alpha)}, n = {test['n']})")
    return {"a": ra, "b": rb, "test": test, "significant": significant,
            "verdict": _verdict(name_a, name_b, what, better, body)}


def compare_means(name_a: str, a: list[float], name_b: str, b: list[float], what: str,
                  alpha: float = 0.05, seed: int = 0, *, higher_is_better: bool = True) -> dict:
    """Two systems' mean scores on the same items, with a paired-bootstrap verdict.

    higher_is_better=False is for losses and error counts, where a lower mean "beats".
    """
    test = paired_bootstrap(a, b, seed=seed)
    ma, mb = mean_summary(a, seed=seed), mean_summary(b, seed=seed)
    significant = bool(test["p"] < alpha)
    sign = 1 if test["diff"] > 0 else -1
    better = (sign if higher_is_better else -sign) if significant else 0
    body = (f"{fmt_ci(ma['mean'], ma['ci'])} vs {fmt_ci(mb['mean'], mb['ci'])} "
            f"(paired bootstrap {_fmt_p(test['p'], alpha)}, n = {test['n']})")
    return {"a": ma, "b": mb, "test": test, "significant": significant,
            "verdict": _verdict(name_a, name_b, what, better, body)}
