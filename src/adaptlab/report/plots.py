"""Plots for reports, drawn only where they carry information: grouped bars with interval
whiskers, and line series. PNG via matplotlib (extra `adaptlab[eval]`), written through the one
atomic writer. A helper given nothing worth drawing writes no file and returns None (the report
then shows the section's table alone)."""
from __future__ import annotations

from pathlib import Path

from ..errors import require
from .render import save_plot

MIN_LINE_POINTS = 3
"""A series needs this many points to be a curve; one point is a table row, two read better in
the table too."""


def pyplot():
    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars(path: Path, groups: dict[str, list[dict]], ylabel: str, ylim=(0, 1)) -> Path | None:
    """One bar per system for each group (e.g. judge); rows: {system, rate, ci_low, ci_high}.
    None, and no file, when there are fewer than 2 bars: nothing to compare."""
    if sum(len(rows) for rows in groups.values()) < 2:
        return None
    plt = pyplot()
    names = [r["system"] for r in next(iter(groups.values()))]
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(names)), 3.5))
    width = 0.8 / len(groups)
    for k, (label, rows) in enumerate(groups.items()):
        xs = [i + width * k for i in range(len(rows))]
        vals = [r["rate"] for r in rows]
        err = [[v - r["ci_low"] for v, r in zip(vals, rows)], [r["ci_high"] - v for v, r in zip(vals, rows)]]
        ax.bar(xs, vals, width=width, label=label, yerr=err, capsize=3)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(names))], names,
                  rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    _legend(ax)
    return save_plot(fig, path)


def _legend(ax) -> None:
    # beside the axes: bars and curves that reach the top are not hidden behind it
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def informative(panels: list[dict]) -> list[dict]:
    """The panels with at least one series of MIN_LINE_POINTS points or more."""
    return [p for p in panels if any(len(pts) >= MIN_LINE_POINTS for pts in p["series"].values())]


def _panel(ax, p: dict, legend: bool = True) -> None:
    for label, pts in p["series"].items():
        if not pts:
            continue
        xs, ys = [pt[0] for pt in pts], [pt[1] for pt in pts]
        marker = "o" if len(pts) < 30 else None
        if all(len(pt) == 4 for pt in pts):  # (x, y, low, high): error bars
            err = [[y - pt[2] for y, pt in zip(ys, pts)], [pt[3] - y for y, pt in zip(ys, pts)]]
            ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=3, label=label)
        else:
            ax.plot(xs, ys, marker=marker, label=label)
    ax.set_xlabel(p["xlabel"])
    ax.set_ylabel(p["ylabel"])
    if p.get("ylim"):
        ax.set_ylim(*p["ylim"])
    if legend:
        _legend(ax)


def lines(path: Path, panels: list[dict]) -> Path | None:
    """Side-by-side panels: {xlabel, ylabel, ylim?, series: {label: [(x, y), ...]}}; points
    (x, y, low, high) draw an error bar from low to high. Panels with no series of 3 points or
    more are left out; None, and no file, when none is left."""
    panels = informative(panels)
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    shared = all(list(p["series"]) == list(panels[0]["series"]) for p in panels)
    for i, (ax, p) in enumerate(zip(axes[0], panels)):
        # one legend, beside the last panel, when every panel has the same series
        _panel(ax, p, legend=not shared or i == len(panels) - 1)
    return save_plot(fig, path)
