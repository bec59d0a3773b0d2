"""Backends by name: a plain dict of factories, `factory(cfg, **kwargs) -> LM`.

    lm = make_lm(BackendConfig(model="smollm2-135m-instruct"), cache=run_dir / "cache.sqlite")

A new backend is one `register_backend("vllm", factory)`; BackendConfig accepts any registered
name. Each factory imports its backend when called (so importing this module never imports torch,
and a test can monkeypatch the backend class in its module).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import AdaptlabError
from .backends import BACKENDS, Factory, register_backend, unknown_backend
from .base import LM
from .cache import CachedLM
from .config import BackendConfig

__all__ = ["BACKENDS", "Factory", "make_lm", "register_backend", "unknown_backend"]


def make_lm(cfg: BackendConfig, cache: str | Path | None = None, **kwargs) -> LM:
    """The backend `cfg` names, behind the on-disk call cache at `cache` when one is given;
    with `cfg.ray_workers > 0`, one copy of it in each Ray worker (`lm.raylm`), the cache in
    front of them all, in this process."""
    factory = BACKENDS.get(cfg.backend)
    if factory is None:
        raise AdaptlabError(unknown_backend(cfg.backend))
    if cfg.ray_workers:
        from .raylm import RayLM

        inner = RayLM(factory, cfg, kwargs)
    else:
        inner = factory(cfg, **kwargs)
    return inner if cache is None else CachedLM(inner, cache)


def make_student(model: str, batch_size: int, device: str = "cpu", cache: str | Path | None = None,
                 **kwargs) -> LM:
    """A student a study evaluates: the local backend, fp32 on the CPU (where bf16 would change
    its answers) and the hardware's best precision elsewhere; kwargs go to the backend."""
    cfg = BackendConfig(model=model, batch_size=batch_size, precision="fp32" if device == "cpu" else "auto")
    return make_lm(cfg, cache, device=device, **kwargs)
