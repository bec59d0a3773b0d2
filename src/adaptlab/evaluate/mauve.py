"""MAUVE (Pillutla et al., NeurIPS 2021): how close two sets of texts are, as distributions.

Our own implementation; it follows the steps and defaults of the reference `compute_mauve`
(mauve-text 0.4.0, GPL, so only a dev-time cross-check: tests/dev/test_mauve_reference.py):

1. stack q over p, L2-normalise the rows, PCA (no whitening) keeping the leading components that
   explain `explained_var` of the variance;
2. k-means into `num_buckets` clusters ("auto": max(2, round(min(n, m) / 10))). The reference
   clusters with faiss; `_kmeans` redoes faiss's (MIT) Lloyd iterations step for step (seeded
   random init, best of `kmeans_num_redo` by objective, empty clusters split, stop at a fixed
   point), so the clusters, hence the scores, agree;
3. normalised histograms of the cluster labels of p and of q;
4. the divergence curve over mixtures r = w·p + (1-w)·q, `discretization` weights w evenly in
   [1e-6, 1-1e-6]: points (exp(-c·KL(q‖r)), exp(-c·KL(p‖r))) with c = `scaling`, plus the
   extremes (1, 0) and (0, 1);
5. MAUVE = the area under that curve (the mean of the areas along either axis, as the reference).

`frontier_integral` (lower = closer) is from the same histograms; the `_star` variants use
Krichevsky-Trofimov smoothing (+1/2 per bin; Pillutla et al., JMLR 2023). Scores depend on the
features: `mauve_texts` embeds with MiniLM, the reference with GPT-2 large, so numbers are not
comparable with published ones, only with each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import AdaptlabError, require


@dataclass(frozen=True)
class MauveResult:
    score: float                   # MAUVE, in (0, 1]; higher = closer
    frontier_integral: float       # in [0, 1]; lower = closer
    mauve_star: float              # MAUVE with smoothed histograms
    frontier_integral_star: float
    p_hist: np.ndarray             # share of p in each bucket
    q_hist: np.ndarray
    curve: np.ndarray              # (discretization + 2, 2): the divergence curve's points
    num_buckets: int
    dims: int                      # PCA components kept


def mauve(p_features, q_features, *, seed: int = 25, num_buckets: int | str = "auto",
          explained_var: float = 0.9, scaling: float = 5.0, discretization: int = 25,
          kmeans_num_redo: int = 5, kmeans_max_iter: int = 500) -> MauveResult:
    """MAUVE between feature sets p (n×d) and q (m×d); defaults as mauve-text's `compute_mauve`."""
    p, q = _features(p_features, "p"), _features(q_features, "q")
    if p.shape[1] != q.shape[1]:
        raise AdaptlabError(f"mauve: p has {p.shape[1]}-dim features, q {q.shape[1]}-dim")
    k = _buckets(num_buckets, len(p), len(q))
    _check(explained_var, scaling, discretization, kmeans_num_redo, kmeans_max_iter)
    labels, dims = _quantize(p, q, k, seed, explained_var, kmeans_num_redo, kmeans_max_iter)
    q_counts = np.bincount(labels[: len(q)], minlength=k)
    p_counts = np.bincount(labels[len(q):], minlength=k)
    weights = np.linspace(1e-6, 1 - 1e-6, discretization)
    p_hist, q_hist = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    p_kt, q_kt = (p_counts + 0.5) / (p_counts + 0.5).sum(), (q_counts + 0.5) / (q_counts + 0.5).sum()
    curve = divergence_curve(p_hist, q_hist, weights, scaling)
    return MauveResult(
        score=area(curve), frontier_integral=frontier_integral(p_hist, q_hist),
        mauve_star=area(divergence_curve(p_kt, q_kt, weights, scaling)),
        frontier_integral_star=frontier_integral(p_kt, q_kt),
        p_hist=p_hist, q_hist=q_hist, curve=curve, num_buckets=k, dims=dims)


def bootstrap(p_features, q_features: dict, *, n_boot: int = 200, seed: int = 0,
              **kwargs) -> dict[str, np.ndarray]:
    """MAUVE of each q set against p on `n_boot` resamples: each draw resamples p's rows once
    (with replacement) and each q's rows independently, so the scores of one draw share their
    reference sample and differences between q sets are paired on it. Returns, per q name, the
    n_boot scores (the `mauve` keywords apply to every draw; the k-means seed stays fixed, so the
    spread is the sampling noise of the texts, not of the clustering).

    Our own loop: the reference package reports no interval at all."""
    if n_boot < 1:
        raise AdaptlabError(f"mauve bootstrap: n_boot must be >= 1, got {n_boot}")
    p = _features(p_features, "p")
    qs = {name: _features(q, name) for name, q in q_features.items()}
    rng = np.random.default_rng(seed)
    out = {name: np.empty(n_boot) for name in qs}
    for b in range(n_boot):
        pb = p[rng.integers(0, len(p), len(p))]
        for name, q in qs.items():
            out[name][b] = mauve(pb, q[rng.integers(0, len(q), len(q))], **kwargs).score
    return out


def mauve_texts(p_texts: list[str], q_texts: list[str], features: str = "minilm-l6",
                seed: int = 25, **kwargs) -> MauveResult:
    """MAUVE between two lists of texts, embedded with `features` (a packaged sentence model).
    Empty texts are embedded like any other (mauve-text drops them)."""
    from . import embed as _embed  # looked up at call time: tests replace embed.embed

    for name, texts in (("p", p_texts), ("q", q_texts)):
        if not texts:
            raise AdaptlabError(f"mauve: no {name} texts")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise AdaptlabError(f"mauve: {name} text {bad} is a {type(texts[bad]).__name__}, "
                                "not a string")
    p = _embed.embed(list(p_texts), features)
    q = _embed.embed(list(q_texts), features)
    return mauve(p, q, seed=seed, **kwargs)


def divergence_curve(p: np.ndarray, q: np.ndarray, weights: np.ndarray,
                     scaling: float) -> np.ndarray:
    """Points (exp(-c KL(q‖r)), exp(-c KL(p‖r))), r = w p + (1-w) q, for w ascending, between
    the extremes (1, 0) and (0, 1)."""
    pts = [(0.0, np.inf)]
    for w in np.sort(weights):
        r = w * p + (1 - w) * q
        pts.append((_kl(q, r), _kl(p, r)))
    pts.append((np.inf, 0.0))
    return np.exp(-scaling * np.asarray(pts))


def area(curve: np.ndarray) -> float:
    """Mean of the areas under the curve taken along x and along y (points sorted each way)."""
    from sklearn.metrics import auc

    x, y = curve.T
    ix, iy = np.argsort(x), np.argsort(y)  # default sort kind, as the reference: ties keep its order
    return float(0.5 * (auc(x[ix], y[ix]) + auc(y[iy], x[iy])))


def frontier_integral(p: np.ndarray, q: np.ndarray, scaling: float = 2.0) -> float:
    """Frontier integral of two histograms (0 = identical, 1 = disjoint)."""
    total = 0.0
    for a, b in zip(p.tolist(), q.tolist()):
        if a == 0 or b == 0:
            total += (a + b) / 4
        elif abs(a - b) > 1e-8:
            total += 0.25 * (a + b) - 0.5 * a * b * (math.log(a) - math.log(b)) / (a - b)
    return float(total * scaling)


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    if np.any((a != 0) & (b == 0)):
        return float(np.inf)
    keep = (a != 0) & (b != 0)
    return float(np.sum(a[keep] * np.log(a[keep] / b[keep])))


def _features(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise AdaptlabError(f"mauve: {name}_features must be 2-D (rows × dims), got shape "
                            f"{arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise AdaptlabError(f"mauve: {name}_features is empty (shape {arr.shape})")
    if arr.dtype.kind not in "fiub":
        raise AdaptlabError(f"mauve: {name}_features must be numbers, got {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise AdaptlabError(f"mauve: {name}_features contains NaN or infinity")
    return arr


def _buckets(num_buckets, n: int, m: int) -> int:
    if num_buckets == "auto":
        return max(2, int(round(min(n, m) / 10)))
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, (int, np.integer)):
        raise AdaptlabError(f"mauve: num_buckets must be 'auto' or an integer, got {num_buckets!r}")
    if num_buckets < 2:
        raise AdaptlabError(f"mauve: num_buckets must be at least 2, got {num_buckets}")
    if num_buckets > n + m:
        raise AdaptlabError(f"mauve: too few samples: {n} + {m} feature rows for "
                            f"{num_buckets} buckets (need at least one row per bucket)")
    return int(num_buckets)


def _check(explained_var, scaling, discretization, redo, max_iter) -> None:
    if not 0 < explained_var < 1:
        raise AdaptlabError(f"mauve: explained_var must be in (0, 1), got {explained_var}")
    if not scaling > 0:
        raise AdaptlabError(f"mauve: scaling must be positive, got {scaling}")
    for name, v in (("discretization", discretization), ("kmeans_num_redo", redo),
                    ("kmeans_max_iter", max_iter)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise AdaptlabError(f"mauve: {name} must be a positive integer, got {v!r}")


def _quantize(p, q, k, seed, explained_var, redo, max_iter) -> tuple[np.ndarray, int]:
    """Cluster labels of q's rows then p's (the reference's order) and the PCA dims kept."""
    decomposition = require("sklearn.decomposition", "eval")
    from sklearn.preprocessing import normalize

    data = normalize(np.vstack([q, p]), norm="l2", axis=1)
    pca = decomposition.PCA(n_components=None, whiten=False, random_state=seed + 1)
    pca.fit(data)
    dims = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= explained_var)) + 1
    x = pca.transform(data)[:, :dims].astype(np.float32)
    return _nearest(x, _kmeans(x, k, seed + 2, redo, max_iter)), dims


# --- k-means as faiss.Kmeans(d, k, niter, nredo, seed).train(x) does it (faiss is MIT-licensed) ---

_MAX_POINTS_PER_CENTROID = 256  # faiss subsamples larger training sets
_REDO_SEED_STEP = 15486557
_SPLIT_EPS = np.float32(1 / 1024)


class _MT19937:
    """std::mt19937 seeded like faiss's RandomGenerator (numpy's legacy seeding is the same)."""

    def __init__(self, seed: int):
        self._rs = np.random.RandomState(seed % 2**32)

    def draws(self, n: int) -> np.ndarray:
        return self._rs.randint(0, 2**32, size=n, dtype=np.uint32)

    def rand_float(self) -> float:  # mt() / float(mt.max()), in float32
        return float(np.float32(self.draws(1)[0]) / np.float32(4294967295))


def _rand_perm(n: int, seed: int) -> np.ndarray:
    """faiss::rand_perm: Fisher-Yates forwards, i2 = i + mt() % (n - i)."""
    perm = np.arange(n)
    if n < 2:
        return perm
    jumps = (_MT19937(seed).draws(n - 1) % np.arange(n, 1, -1, dtype=np.uint32)).tolist()
    out = perm.tolist()
    for i, j in enumerate(jumps):
        out[i], out[i + j] = out[i + j], out[i]
    return np.asarray(out)


def _kmeans(x: np.ndarray, k: int, seed: int, nredo: int, niter: int) -> np.ndarray:
    """Centroids (k×d, float32) of the best of `nredo` Lloyd runs, as faiss's Clustering::train."""
    if len(x) > k * _MAX_POINTS_PER_CENTROID:
        x = x[_rand_perm(len(x), seed)[: k * _MAX_POINTS_PER_CENTROID]]
    if len(x) == k:
        return x.copy()
    best, best_obj = None, np.inf
    for redo in range(nredo):
        c = x[_rand_perm(len(x), seed + 1 + redo * _REDO_SEED_STEP)[:k]].copy()
        c, obj = _lloyd(x, c, niter)
        if obj < best_obj:  # strictly: on a tie the earlier run stays, as in faiss
            best, best_obj = c, obj
    return best


def _lloyd(x: np.ndarray, c: np.ndarray, niter: int) -> tuple[np.ndarray, float]:
    """Up to `niter` assign/update steps; stops at a fixed point (faiss stops one step later,
    when the objective repeats, with the same centroids). Returns the centroids and the
    objective of the last assignment."""
    prev = None
    for _ in range(niter):
        labels = _nearest(x, c)
        obj = _objective(x, c, labels)
        c, nsplit = _update(x, labels, len(c))
        if nsplit == 0 and prev is not None and np.array_equal(labels, prev):
            break
        prev = labels
    return c, obj


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centroid (squared L2, first on ties), computed in float64."""
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    d = (c64 * c64).sum(axis=1)[None, :] - 2 * (x64 @ c64.T)
    return d.argmin(axis=1)


def _objective(x: np.ndarray, c: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances to the assigned centroids; the same for a relabelled partition,
    so two runs that find the same clusters tie (and the first stays, as in faiss)."""
    diff = x.astype(np.float64) - c.astype(np.float64)[labels]
    return float(np.einsum("ij,ij->i", diff, diff).sum())


def _update(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """faiss compute_centroids (float32 sums in row order, times 1/count) + split_clusters."""
    c = np.zeros((k, x.shape[1]), dtype=np.float32)
    np.add.at(c, labels, x)
    counts = np.bincount(labels, minlength=k).astype(np.float32)
    full = counts > 0
    c[full] *= (np.float32(1) / counts[full])[:, None]
    return (c, 0) if full.all() else (c, _split_empty(c, counts, len(x)))


def _split_empty(c: np.ndarray, counts: np.ndarray, n: int) -> int:
    """faiss split_clusters: each empty cluster takes a copy of a donor picked at random
    (weighted by size), both nudged apart by ±1/1024, and half its count."""
    k, rng, nsplit = len(c), _MT19937(1234), 0
    up, down = np.float32(1) + _SPLIT_EPS, np.float32(1) - _SPLIT_EPS
    for ci in range(k):
        if counts[ci] != 0:
            continue
        donor = next((t % k for t in range(10 * k)
                      if rng.rand_float() < (float(counts[t % k]) - 1.0) / float(np.float32(n - k))),
                     int(np.argmax(counts)))
        c[ci] = c[donor]
        c[ci, 0::2] *= up
        c[donor, 0::2] *= down
        c[ci, 1::2] *= down
        c[donor, 1::2] *= up
        counts[ci] = counts[donor] / np.float32(2)
        counts[donor] -= counts[ci]
        nsplit += 1
    return nsplit
