"""The report stage every study ends with: the sections its stages logged, in one document."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_json
from .render import table, write_report


@dataclass
class ReportConfig:
    title: str = "adaptlab report"
    """The report's heading."""
    stages: list[str] = field(default_factory=list)
    """Stages whose sections are assembled, in this order (ties in rank keep it)."""


def report_inputs(stages: list[str]) -> dict:
    """Each stage's manifest: it is rewritten whenever the stage re-runs, so the report's
    cache key changes exactly when something it shows may have."""
    from ..runs.declare import Out

    return {name: Out(name, "manifest.json") for name in stages}


def report_stage(cfg: ReportConfig, inputs: dict[str, Path], ctx) -> dict:
    from ..runs.declare import collect_sections

    dirs = [inputs[name].parent for name in cfg.stages]
    sections, data = collect_sections(dirs)
    manifests = {name: read_json(inputs[name]) for name in cfg.stages}
    timings = {n: m.get("seconds") for n, m in manifests.items()}
    sections.append({"title": "Stage wall time (s, when each stage last ran)",
                     "table": table([{"stage": n, "seconds": s} for n, s in timings.items()])})
    data = {**data, "metrics": {n: m.get("metrics", {}) for n, m in manifests.items()},
            "timings_s": timings,
            "sections": [{k: (str(v) if isinstance(v, Path) else v) for k, v in s.items()}
                         for s in sections]}
    paths = write_report(ctx.dir, cfg.title, sections, data)
    return {"sections": len(sections), **{k: str(Path(v).name) for k, v in paths.items()}}
