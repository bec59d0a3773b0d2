"""Named systems (base, prompted, few-shot, adapter, teacher …) answering the same items, and
the comparison table every study reports: each system's rate or mean with its interval, and a
paired test against a reference system.

Adapters are swapped through the backend (`AdapterHost.set_adapter`), so one loaded base model
serves every tuned system, and cached answers of different adapters never mix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import AdaptlabError
from ..lm.base import AdapterHost, GenParams
from . import stats


@dataclass
class System:
    name: str
    lm: object
    """Any LM backend (through the call cache)."""
    prompt: Callable[[dict], list[dict]]
    """item -> the chat this system is asked."""
    adapter: str | None = None
    """A LoRA adapter directory swapped into `lm` for this system."""
    label: str = ""
    """What the system is, for tables."""
    params: GenParams | None = None
    """Its own sampling parameters (else the comparison's)."""
    post: Callable[[str], str] | None = None
    """Applied to each answer (e.g. the trimming a data pipeline applied)."""


def answer(systems: Sequence[System], items: Sequence[dict], params: GenParams) -> dict[str, list[str]]:
    """Every system's answers to every item, in item order."""
    out = {}
    for s in systems:
        host = isinstance(s.lm, AdapterHost)
        if s.adapter is not None and not host:
            raise AdaptlabError(f"system {s.name}: backend {s.lm.name} cannot load an adapter")
        if host:
            s.lm.set_adapter(s.adapter)
        try:
            texts = s.lm.chat([s.prompt(it) for it in items], s.params or params)
            out[s.name] = [s.post(t) for t in texts] if s.post else texts
        finally:
            if host and s.adapter is not None:
                s.lm.set_adapter(None)
    return out


def rate_table(outcomes: dict[str, list[bool]], reference: str | None = None) -> list[dict]:
    """One row per system: rate, Wilson interval, and McNemar against `reference`."""
    rows = []
    for name, o in outcomes.items():
        r = stats.rate_summary(o)
        row = {"system": name, "n": r["n"], "rate": round(r["rate"], 4),
               "ci_low": round(r["ci"][0], 4), "ci_high": round(r["ci"][1], 4)}
        if reference is not None and name != reference:
            row[f"p_vs_{reference}"] = round(stats.mcnemar(o, outcomes[reference])["p"], 4)
        rows.append(row)
    return rows


def mean_table(values: dict[str, list[float]], reference: str | None = None, seed: int = 0) -> list[dict]:
    """One row per system: mean, bootstrap interval, and a paired bootstrap against `reference`."""
    rows = []
    for name, v in values.items():
        m = stats.mean_summary(v, seed=seed)
        row = {"system": name, "n": m["n"], "mean": round(m["mean"], 4),
               "ci_low": round(m["ci"][0], 4), "ci_high": round(m["ci"][1], 4)}
        if reference is not None and name != reference:
            row[f"p_vs_{reference}"] = round(stats.paired_bootstrap(v, values[reference], seed=seed)["p"], 4)
        rows.append(row)
    return rows
