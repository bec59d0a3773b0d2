"""adaptlab: adapt small open language models with very little data.

Importing adaptlab is cheap: torch, transformers and peft load only inside the calls that use them.
"""
from __future__ import annotations

from . import _quiet  # noqa: F401  (filters only; imports nothing heavy)

__version__ = "0.1.0"

_LAZY = {
    "tune": ("adaptlab.api", "tune"),
    "generate": ("adaptlab.api", "generate"),
    "run": ("adaptlab.api", "run"),
    "judge": ("adaptlab.api", "judge"),
    "serve": ("adaptlab.api", "serve"),
    "load_examples": ("adaptlab.data", "load_examples"),
    "list_models": ("adaptlab.models", "list_models"),
    "resolve_model": ("adaptlab.models", "resolve"),
    "GenParams": ("adaptlab.lm.base", "GenParams"),
    "LocalLM": ("adaptlab.lm.local", "LocalLM"),
    "OpenAILM": ("adaptlab.lm.openai_http", "OpenAILM"),
    "CachedLM": ("adaptlab.lm.cache", "CachedLM"),
    "TuneConfig": ("adaptlab.train.config", "TuneConfig"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'adaptlab' has no attribute {name!r}")


__all__ = sorted(_LAZY)
