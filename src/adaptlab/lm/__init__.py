"""LMs: the protocols (LM, Scorer, ChoiceScorer, AdapterHost), the backend registry and the cache.

    from adaptlab.lm import BackendConfig, make_lm, supports, Scorer

Lazy, like the package: importing adaptlab.lm (or any name here) never imports torch.
"""
from __future__ import annotations

_LAZY = {
    "Chat": "base", "GenParams": "base", "LM": "base", "Scorer": "base", "ChoiceScorer": "base",
    "AdapterHost": "base", "supports": "base", "adapter_name": "base",
    "BackendConfig": "config",
    "BACKENDS": "registry", "register_backend": "registry", "make_lm": "registry",
    "CachedLM": "cache", "FakeLM": "fake",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
