"""Model references: hub ids, local directories, and packaged offline models."""
from .registry import PACKAGED, PackagedModel, cache_dir, list_models, resolve

__all__ = ["PACKAGED", "PackagedModel", "cache_dir", "list_models", "resolve"]
