"""The backend table: names -> factories `factory(cfg, **kwargs) -> LM`. It imports no config
(BackendConfig validates its `backend` field against this table), and each factory imports its
backend when called, so importing this never imports torch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import AdaptlabError
from .base import LM

if TYPE_CHECKING:
    from .config import BackendConfig

Factory = Callable[..., LM]
"""`factory(cfg: BackendConfig, **kwargs) -> LM`; kwargs are backend-specific."""


def _local(cfg: BackendConfig, **kwargs) -> LM:
    """kwargs: model=, tokenizer= (wrap a model already in memory), name=, device=."""
    from .local import LocalLM

    return LocalLM(cfg.model, precision=cfg.precision, batch_size=cfg.batch_size, **kwargs)


def _openai(cfg: BackendConfig, **kwargs) -> LM:
    from .openai_http import OpenAILM

    return OpenAILM(cfg.model, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                    concurrency=cfg.batch_size, **kwargs)


def _llamacpp(cfg: BackendConfig, **kwargs) -> LM:
    from .llamacpp import LlamaCppLM

    return LlamaCppLM(cfg.model, **kwargs)


def _vllm(cfg: BackendConfig, **kwargs) -> LM:
    """kwargs: adapter=, name=, llm=, tokenizer=; cfg.vllm_args go to vllm.LLM."""
    from .vllm_lm import VllmLM

    return VllmLM(cfg.model, precision=cfg.precision, **{**cfg.vllm_args, **kwargs})


BACKENDS: dict[str, Factory] = {"local": _local, "llamacpp": _llamacpp, "openai": _openai,
                                "vllm": _vllm}


def unknown_backend(name: object) -> str:
    return f"backend: expected one of {'/'.join(BACKENDS)}, got {name!r}"


def register_backend(name: str, factory: Factory) -> None:
    """Make `name` a valid `BackendConfig.backend`, built by `factory(cfg, **kwargs)`.
    Registering an existing name replaces its factory."""
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise AdaptlabError(f"backend name: expected a non-empty string without '/', got {name!r}")
    if not callable(factory):
        raise AdaptlabError(f"backend {name!r}: factory {factory!r} is not callable")
    BACKENDS[name] = factory
