"""Declarative stages: a study lists its stages as data, the kit runs, caches and resumes them.

A `Stage` names a function, the stage's own config (a dataclass) and its inputs (files, or
`Out(stage, path)`: what an earlier stage wrote). The function is called as
`fn(config, inputs, ctx)` and gets nothing else, so the cache key (config + input contents +
function name) covers everything it can read: a stale result cannot happen.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import progress
from ..config import to_dict
from ..errors import AdaptlabError
from ..io import hash_path, read_json, sha256_json, write_json
from .stage import SCHEMA, Run, StageResult

SECTIONS = "sections.json"


@dataclass(frozen=True)
class Out:
    """A file or directory written by an earlier stage: `Out("split", "train.jsonl")`."""

    stage: str
    path: str = ""


@dataclass
class Ctx:
    """What a stage function may touch besides its config and inputs."""

    dir: Path
    """The stage's output directory (its files are its outputs)."""
    work: Path
    """Kept across kills: journals and checkpoints for resuming."""
    cache: Path
    """The run's LM call cache (answers are keyed by model, prompt and parameters)."""
    sections: list[dict] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    """Machine-readable results for the report's JSON (by key)."""

    def section(self, title: str, text: str = "", table: dict | None = None,
                image: str | Path | None = None, rank: int = 50) -> None:
        """Log a report section (text, table, image); the report stage assembles them by
        rank, then stage order. Images are files in this stage's directory."""
        self.sections.append({"title": title, "text": text, "table": table,
                              "image": Path(image).name if image else None, "rank": rank})


StageFn = Callable[[Any, dict, Ctx], "dict | None"]


@dataclass
class Stage:
    name: str
    fn: StageFn
    config: Any = None
    """A dataclass (or None): the only settings `fn` receives."""
    inputs: dict[str, str | Path | Out] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        return getattr(self.config, "seed", None)

    def config_dict(self) -> dict:
        c = to_dict(self.config) if self.config is not None else {}
        return {"fn": f"{self.fn.__module__}.{self.fn.__qualname__}", "config": c}


def resolve_inputs(run_dir: Path, stage: Stage) -> dict[str, Path]:
    return {k: (run_dir / v.stage / v.path if isinstance(v, Out) else Path(v))
            for k, v in stage.inputs.items()}


def check_order(stages: list[Stage]) -> None:
    """Every `Out` names an earlier stage; names are unique."""
    seen: set[str] = set()
    for s in stages:
        for k, v in s.inputs.items():
            if isinstance(v, Out) and v.stage not in seen:
                raise AdaptlabError(f"stage {s.name}: input {k} comes from {v.stage!r}, "
                                    "which is not an earlier stage")
        if s.name in seen:
            raise AdaptlabError(f"stage {s.name}: declared twice")
        seen.add(s.name)


def stage_key(run_dir: Path, stage: Stage) -> str | None:
    """The cache key, or None while an input does not exist yet."""
    paths = resolve_inputs(run_dir, stage)
    if not all(p.exists() for p in paths.values()):
        return None
    hashes = {k: hash_path(p) for k, p in paths.items()}
    return sha256_json({"schema": SCHEMA, "config": stage.config_dict(), "inputs": hashes})


def status(run_dir: Path, stage: Stage) -> str:
    """cached / stale / new / waiting (its inputs come from stages that have not run)."""
    key = stage_key(run_dir, stage)
    manifest = run_dir / stage.name / "manifest.json"
    if key is None:
        return "waiting"
    if not manifest.exists():
        return "partial" if (run_dir / stage.name / "work").exists() else "new"
    return "cached" if read_json(manifest).get("key") == key else "stale"


def select(stages: list[Stage], only: str | None, start: str | None) -> list[str]:
    names = [s.name for s in stages]
    for n in (only, start):
        if n is not None and n not in names:
            raise AdaptlabError(f"no stage {n!r}; stages: {', '.join(names)}")
    if only is not None:
        return [only]
    return names[names.index(start):] if start is not None else names


def run_stage(run: Run, stage: Stage, force: bool = False) -> StageResult:
    paths = resolve_inputs(run.dir, stage)
    missing = [f"{k} ({p})" for k, p in paths.items() if not p.exists()]
    if missing:
        raise AdaptlabError(f"stage {stage.name}: missing input {missing[0]}; run the stage "
                            "that writes it first (drop --only/--from)")
    if force:
        (run.dir / stage.name / "manifest.json").unlink(missing_ok=True)

    def call(d: Path, work: Path) -> dict:
        ctx = Ctx(d, work, run.dir / "cache.sqlite")
        metrics = stage.fn(stage.config, paths, ctx) or {}
        write_json(d / SECTIONS, {"sections": ctx.sections, "data": ctx.data})
        return metrics
    return run.stage(stage.name, stage.config_dict(), paths, call, seed=stage.seed)


def run_stages(run: Run, stages: list[Stage], only: str | None = None, start: str | None = None,
               force: bool = False) -> dict[str, StageResult]:
    """Run the selected stages in order (finished ones with the same key are skipped).

    Stages before `start`, or all but `only`, are not run: their outputs must exist already."""
    check_order(stages)
    chosen = set(select(stages, only, start))
    out = {}
    for s in stages:
        if s.name in chosen:
            out[s.name] = run_stage(run, s, force=force)
    return out


def dry_run(run_dir: Path, stages: list[Stage]) -> list[dict]:
    """Each stage and whether it is cached, without running or writing anything."""
    check_order(stages)
    return [{"stage": s.name, "status": status(run_dir, s), "seed": s.seed,
             "inputs": ", ".join(f"{k}={v.stage}/{v.path}" if isinstance(v, Out) else f"{k}={v}"
                                 for k, v in s.inputs.items())} for s in stages]


def collect_sections(stage_dirs: list[Path]) -> tuple[list[dict], dict]:
    """Every section the stages logged (by rank, then stage order; images as paths) and
    their report data merged."""
    found, data = [], {}
    for order, d in enumerate(stage_dirs):
        p = d / SECTIONS
        logged = json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
        data.update(logged.get("data", {}))
        for s in logged.get("sections", []):
            if s.get("image"):
                s = {**s, "image": d / s["image"]}
            found.append((s.get("rank", 50), order, s))
    return [s for _, _, s in sorted(found, key=lambda t: t[:2])], data
