"""Run directories, declared stages (cached, resumable), manifests, and the SQLite run index."""
from .declare import Ctx, Out, Stage, run_stages
from .stage import Run, StageResult

__all__ = ["Ctx", "Out", "Run", "Stage", "StageResult", "run_stages"]
