"""Iris (Fisher 1936, as bundled with scikit-learn: 150 flowers, 50 of each species) as text
classification, the third task of the BetterTogether study (Soylu et al. 2024).

A flower's features are rendered as one line, "sepal length 5.1 cm, sepal width 3.5 cm, petal
length 1.4 cm, petal width 0.2 cm"; its label is the species name. `split` draws stratified,
seeded train/val/test sets. scikit-learn reads the table from its wheel: no network.
"""
from __future__ import annotations

import functools
import random

from ..errors import require

SPECIES = ("setosa", "versicolor", "virginica")
FEATURES = ("sepal length", "sepal width", "petal length", "petal width")


def features_text(values) -> str:
    """The four measurements (cm) as one line of text."""
    return ", ".join(f"{name} {float(v):.1f} cm" for name, v in zip(FEATURES, values, strict=True))


@functools.lru_cache(maxsize=1)
def _table() -> tuple[tuple[tuple[float, ...], str], ...]:
    require("sklearn", "programs")
    from sklearn.datasets import load_iris

    data = load_iris()
    names = [str(n) for n in data.target_names]
    if tuple(names) != SPECIES:
        raise RuntimeError(f"unexpected Iris species from scikit-learn: {names}")
    return tuple((tuple(round(float(v), 1) for v in row), names[int(t)])
                 for row, t in zip(data.data, data.target, strict=True))


def examples() -> list[dict]:
    """All 150 flowers, in scikit-learn's order: {"id", "features", "species", "values"}."""
    return [{"id": f"iris-{i:03d}", "features": features_text(values), "species": label,
             "values": list(values)} for i, (values, label) in enumerate(_table())]


def split(n_train: int = 60, n_val: int = 30, n_test: int = 60, seed: int = 0
          ) -> tuple[list[dict], list[dict], list[dict]]:
    """Stratified train/val/test sets, disjoint, each shuffled: the species counts of a set
    differ by at most one. Deterministic in `seed`."""
    sizes = (n_train, n_val, n_test)
    for name, v in zip(("n_train", "n_val", "n_test"), sizes):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    table = examples()
    if sum(sizes) > len(table):
        raise ValueError(f"Iris has {len(table)} flowers; the split sizes {sizes} need "
                         f"{sum(sizes)}")
    rng = random.Random(seed)
    pools = {s: [e for e in table if e["species"] == s] for s in SPECIES}
    for pool in pools.values():
        rng.shuffle(pool)
    # Deal flowers class by class in one seeded order (a, b, c, a, b, c, ...): every set is a
    # run of that deal, so its class counts differ by at most one, and no class runs out.
    order = rng.sample(SPECIES, len(SPECIES))
    deal = iter(order[j % len(order)] for j in range(sum(sizes)))
    taken = {s: iter(pool) for s, pool in pools.items()}
    out = []
    for n in sizes:
        part = [next(taken[next(deal)]) for _ in range(n)]
        rng.shuffle(part)
        out.append(part)
    return out[0], out[1], out[2]
