"""Feature sets on which adaptlab's MAUVE is compared with the reference mauve-text (GPL, dev-only).

Run as a script to write results/mauve-reference.json (needs `pip install mauve-text==0.4.0`,
which pulls faiss-cpu):

    .venv/bin/python tests/dev/mauve_reference_cases.py [--texts]

`--texts` adds one case on real MiniLM embeddings of the tone study's calibration texts.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _gauss(seed: int, n: int, m: int, d: int, shift: float, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)).astype(dtype),
            (rng.normal(size=(m, d)) + shift).astype(dtype))


def _dups(seed: int):
    """40 distinct points repeated 10 times each: k-means meets empty clusters (faiss splits)."""
    rng = np.random.default_rng(seed)
    return (np.repeat(rng.normal(size=(20, 8)), 10, axis=0),
            np.repeat(rng.normal(size=(20, 8)), 10, axis=0))


def _identical(seed: int):
    x = np.random.default_rng(seed).normal(size=(200, 16))
    return x, x.copy()


# name -> (what, function making (p, q), keyword arguments for both implementations)
CASES = {
    "same-dist": ("p, q ~ N(0, I), 200 x 32 each", lambda: _gauss(0, 200, 200, 32, 0.0), {}),
    "identical": ("q is a copy of p, 200 x 16", lambda: _identical(1), {}),
    "shift-0.1": ("q shifted by 0.1 in every dim, 200 x 32", lambda: _gauss(2, 200, 200, 32, 0.1), {}),
    "shift-0.3": ("q shifted by 0.3, 200 x 32", lambda: _gauss(3, 200, 200, 32, 0.3), {}),
    "shift-1.0": ("q shifted by 1.0, 300 x 32", lambda: _gauss(4, 300, 300, 32, 1.0), {}),
    "sizes-150-400": ("n=150, m=400, shift 0.2, 32 dims", lambda: _gauss(5, 150, 400, 32, 0.2), {}),
    "small-30": ("n=m=30 (3 buckets), shift 0.5", lambda: _gauss(6, 30, 30, 16, 0.5), {}),
    "subsampled": ("n=30, m=3000, 3 buckets: faiss subsamples the 3030 points to 768",
                   lambda: _gauss(7, 30, 3000, 16, 0.2), {}),
    "buckets-150": ("n=m=200 into 150 buckets, shift 0.3", lambda: _gauss(8, 200, 200, 16, 0.3),
                    {"num_buckets": 150}),
    "empty-clusters": ("40 distinct points x 10 copies (empty clusters split every iteration)",
                       lambda: _dups(9), {}),
    "float32-384": ("float32, 384 dims like MiniLM, n=m=500, shift 0.05",
                    lambda: _gauss(10, 500, 500, 384, 0.05, np.float32), {}),
    "seed-7": ("same-dist data, seed=7", lambda: _gauss(0, 200, 200, 32, 0.0), {"seed": 7}),
}


def compare(p, q, **kw) -> dict:
    """Both implementations on (p, q): their scores and the largest differences."""
    import mauve as reference

    from adaptlab.evaluate.mauve import mauve

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference.compute_mauve(p_features=p, q_features=q, **kw)
    t1 = time.perf_counter()
    ours = mauve(p, q, **kw)
    t2 = time.perf_counter()
    pairs = {"mauve": (ref.mauve, ours.score), "frontier_integral": (ref.frontier_integral,
             ours.frontier_integral), "mauve_star": (ref.mauve_star, ours.mauve_star),
             "frontier_integral_star": (ref.frontier_integral_star, ours.frontier_integral_star)}
    return {
        "reference": {k: float(a) for k, (a, _) in pairs.items()},
        "adaptlab": {k: float(b) for k, (_, b) in pairs.items()},
        "max_abs_diff": max(abs(float(a) - float(b)) for a, b in pairs.values()),
        "hists_identical": bool(np.array_equal(ref.p_hist, ours.p_hist)
                                and np.array_equal(ref.q_hist, ours.q_hist)),
        "num_buckets": int(ours.num_buckets), "pca_dims": ours.dims,
        "seconds": {"reference": round(t1 - t0, 3), "adaptlab": round(t2 - t1, 3)},
    }


def _text_case() -> tuple[str, tuple, dict]:
    from adaptlab.evaluate.embed import embed

    rows = [json.loads(line) for line in open(ROOT / "corpora/tone/calibration.jsonl")]
    a = [r["text"] for r in rows if r["label"] == 1]
    b = [r["text"] for r in rows if r["label"] == 0]
    return ("MiniLM embeddings of corpora/tone/calibration.jsonl: the 120 in-tone texts vs the "
            "120 others", (embed(a), embed(b)), {})


def main(argv: list[str]) -> None:
    import faiss
    import mauve as reference
    import sklearn

    from adaptlab.io import write_json

    cases = {name: (what, make(), kw) for name, (what, make, kw) in CASES.items()}
    if "--texts" in argv:
        cases["minilm-tone-calibration"] = _text_case()
    out = {}
    for name, (what, (p, q), kw) in cases.items():
        out[name] = {"what": what, "kwargs": kw, **compare(p, q, **kw)}
        print(f"{name}: reference {out[name]['reference']['mauve']:.6f}  "
              f"adaptlab {out[name]['adaptlab']['mauve']:.6f}  "
              f"max |diff| {out[name]['max_abs_diff']:.1e}", file=sys.stderr)
    write_json(ROOT / "results/mauve-reference.json", {
        "what": "adaptlab.evaluate.mauve.mauve vs the reference mauve-text compute_mauve (default "
                "settings unless kwargs says otherwise) on the same feature arrays",
        "made_by": "OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python "
                   "tests/dev/mauve_reference_cases.py " + " ".join(argv),
        "date": time.strftime("%Y-%m-%d"),
        "versions": {"mauve-text": getattr(reference, "__version__", "0.4.0"),
                     "faiss-cpu": faiss.__version__, "scikit-learn": sklearn.__version__,
                     "numpy": np.__version__},
        "max_abs_diff_over_cases": max(c["max_abs_diff"] for c in out.values()),
        "all_hists_identical": all(c["hists_identical"] for c in out.values()),
        "cases": out,
    })


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main(sys.argv[1:])
