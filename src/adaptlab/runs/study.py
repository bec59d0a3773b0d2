"""Run a study: its checks, its declared stages (cached, resumable), its headline metrics.

A study is a module with `Config` (a dataclass), `EXTRAS` (the extras it needs, checked before
anything is written), `check(cfg)` (validate every input before
anything is written), `stages(cfg) -> list[Stage]` and `summary(metrics) -> dict` (headline
metrics from each stage's manifest metrics). See docs/writing-a-study.md.
"""
from __future__ import annotations

from ..config import to_dict
from ..errors import requires
from ..io import read_json
from .declare import dry_run, run_stages
from .stage import Run, runs_root


def stage_metrics(run_dir, names: list[str]) -> dict[str, dict] | None:
    """Each finished stage's metrics; None if a stage has not finished."""
    out = {}
    for n in names:
        m = run_dir / n / "manifest.json"
        if not m.exists():
            return None
        out[n] = read_json(m).get("metrics", {})
    return out


def evaluated(metrics: dict[str, dict]) -> dict:
    """A study's headline metrics when they are its evaluate-* stages' and its summary's: them
    all, merged (a study's `summary` may simply be this)."""
    out = {}
    for stage, m in metrics.items():
        if stage.startswith("evaluate-") or stage == "summary":
            out.update(m)
    return out


def run_study(study: str, module, cfg, only: str | None = None, start: str | None = None,
              force: bool = False, dry: bool = False) -> dict:
    requires(*getattr(module, "EXTRAS", ()))
    module.check(cfg)
    stages = module.stages(cfg)
    if dry:
        return {"run": str(runs_root() / cfg.name), "stages": dry_run(runs_root() / cfg.name, stages)}
    r = Run(cfg.name, recipe=to_dict(cfg), study=study, seed=getattr(cfg, "seed", None))
    results = run_stages(r, stages, only=only, start=start, force=force)
    out = {"run": str(r.dir), "stages_run": [n for n, s in results.items() if not s.skipped]}
    per_stage = stage_metrics(r.dir, [s.name for s in stages])
    if per_stage is not None:  # every stage has finished: the run is complete
        metrics = module.summary(per_stage)
        r.finish(metrics)
        out.update(metrics)
    if (r.dir / "report" / "report.html").exists():
        out["report"] = str(r.dir / "report" / "report.html")
    out["timings_s"] = {k: round(v, 1) for k, v in r.timings.items()}
    return out
