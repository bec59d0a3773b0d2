"""Stages are functions over files.

A stage gets its own directory runs/<run>/<stage>/. It is keyed by a hash of its config and
input files; `manifest.json` is written last and marks it done. A finished stage with the same
key is skipped; a killed stage keeps its `work/` directory (journals, checkpoints) and resumes;
a stage whose key changed starts clean.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from .. import progress
from ..io import hash_path, read_json, sha256_json, write_json, write_text
from .index import RunIndex

SCHEMA = 1
_VERSIONED = ("adaptlab", "torch", "transformers", "peft", "accelerate", "sentence-transformers",
              "scikit-learn", "openai")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class StageResult:
    dir: Path
    metrics: dict
    skipped: bool
    seconds: float


def runs_root() -> Path:
    return Path(os.environ.get("ADAPTLAB_RUNS", "runs"))


class Run:
    def __init__(self, name: str, root: str | Path | None = None, recipe: dict | None = None,
                 study: str = "", seed: int | None = None):
        self.name = name
        self.seed = seed
        """Recorded in the manifest of a stage that has no seed of its own."""
        self.root = Path(root) if root is not None else runs_root()
        self.dir = self.root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index = RunIndex(self.root / "index.sqlite")
        self.recipe = recipe or {}
        self.study = study
        self.timings: dict[str, float] = {}
        if recipe is not None:
            write_json(self.dir / "recipe.resolved.json", recipe)
        self.index.start(name, study, str(self.dir))

    def stage(self, name: str, config: dict, inputs: dict[str, str | Path],
              fn: Callable[[Path, Path], dict], seed: int | None = None) -> StageResult:
        """Run `fn(stage_dir, work_dir) -> metrics` unless a finished stage has the same key."""
        sdir = self.dir / name
        in_hashes = {k: hash_path(v) for k, v in inputs.items()}
        key = sha256_json({"schema": SCHEMA, "config": config, "inputs": in_hashes})
        manifest = sdir / "manifest.json"
        if manifest.exists() and read_json(manifest).get("key") == key:
            m = read_json(manifest)
            progress.log(f"{self.name}/{name}: up to date, skipped")
            self.timings[name] = 0.0
            return StageResult(sdir, m.get("metrics", {}), True, 0.0)
        keyfile = sdir / "work" / ".key"
        if sdir.exists() and not (keyfile.exists() and keyfile.read_text() == key):
            shutil.rmtree(sdir)  # inputs or config changed: earlier partial work is stale
        manifest.unlink(missing_ok=True)
        write_text(keyfile, key)
        progress.log(f"{self.name}/{name}: running")
        t0 = time.time()
        metrics = fn(sdir, sdir / "work") or {}
        seconds = time.time() - t0
        write_json(manifest, {
            "stage": name, "key": key, "config": config,
            "inputs": {k: {"path": str(v), "sha256": in_hashes[k]} for k, v in inputs.items()},
            "versions": versions(), "seed": self.seed if seed is None else seed, "seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "metrics": metrics,
        })
        self.timings[name] = seconds
        progress.log(f"{self.name}/{name}: done in {seconds:.0f}s")
        return StageResult(sdir, metrics, False, seconds)

    def finish(self, metrics: dict) -> None:
        self.index.finish(self.name, metrics)
