"""Plots for reports: grouped bars with interval whiskers, and line series. PNG via matplotlib
(extra `adaptlab[eval]`), written through the one atomic writer."""
from __future__ import annotations

from pathlib import Path

from ..errors import require
from .render import save_plot


def pyplot():
    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars(path: Path, groups: dict[str, list[dict]], ylabel: str, ylim=(0, 1)) -> Path:
    """One bar per system for each group (e.g. judge); rows: {system, rate, ci_low, ci_high}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(groups))
    names = [r["system"] for r in next(iter(groups.values()))] if groups else []
    for k, (label, rows) in enumerate(groups.items()):
        xs = [i + width * k for i in range(len(rows))]
        vals = [r["rate"] for r in rows]
        err = [[v - r["ci_low"] for v, r in zip(vals, rows)], [r["ci_high"] - v for v, r in zip(vals, rows)]]
        ax.bar(xs, vals, width=width, label=label, yerr=err, capsize=3)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.legend()
    return save_plot(fig, path)


def lines(path: Path, panels: list[dict]) -> Path:
    """Side-by-side panels: {xlabel, ylabel, ylim?, series: {label: [(x, y), ...]}}."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for label, pts in p["series"].items():
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o" if len(pts) < 30 else None,
                        label=label)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
        if p.get("ylim"):
            ax.set_ylim(*p["ylim"])
        if p["series"]:
            ax.legend(fontsize=8)
    return save_plot(fig, path)
