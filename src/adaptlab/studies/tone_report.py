"""The tone study's plots and its curves stage (training loss and validation tone rate of every
adapter, one figure)."""
from __future__ import annotations

import csv
from pathlib import Path

from ..report.plots import bars, lines


def plot_systems(d: Path, evidence: dict) -> Path:
    return bars(d / "tone_by_system.png", {"in tone and content preserved": evidence["both"],
                                           "in tone (verdict classifier)": evidence["tone_classifier"],
                                           "content preserved": evidence["content"]},
                "share of held-out answers (95% CI)")


def plot_vs_n(d: Path, adapters: dict) -> Path:
    series = {}
    for prec in sorted({a["precision"] for a in adapters.values()}):
        series[prec] = sorted((a["n"], a["tone_rate_classifier"]) for a in adapters.values()
                              if a["precision"] == prec)
    return lines(d / "tone_vs_n.png", [{"xlabel": "simulated training examples N",
                                        "ylabel": "tone rate (classifier), held-out",
                                        "ylim": (0, 1), "series": series}])


def _csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def curves_stage(cfg, inputs: dict[str, Path], ctx) -> dict:
    """inputs: each adapter's manifest (its directory holds loss.csv and eval.csv)."""
    curves = {name: {"loss": _csv(p.parent / "loss.csv"), "eval": _csv(p.parent / "eval.csv")}
              for name, p in inputs.items()}
    loss = {n: [(r["step"], r["loss"]) for r in c["loss"]] for n, c in curves.items()}
    tone = {n: [(r["step"], r["tone_rate"]) for r in c["eval"]] for n, c in curves.items()}
    img = lines(ctx.dir / "convergence.png", [
        {"xlabel": "step", "ylabel": "training loss", "series": loss},
        {"xlabel": "step", "ylabel": "validation tone rate", "ylim": (0, 1), "series": tone}])
    ctx.section("Convergence by precision (loss and validation tone rate)", image=img, rank=30)
    ctx.data["curves"] = curves
    return {"adapters": len(curves)}
