"""Run directories, stage caching and resume, manifests, and the SQLite run index."""
from .stage import Run, StageResult

__all__ = ["Run", "StageResult"]
