"""Where an LM runs: the one backend config every study uses (built by `lm.registry.make_lm`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class BackendConfig:
    """Where an LM runs: a local model (packaged name, dir or hub id) or an OpenAI-compatible URL."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    """Model reference (local) or model name (openai)."""
    backend: str = "local"
    """local = transformers on this machine; llamacpp = the packaged GGUF on llama.cpp (extra
    `adaptlab[llamacpp]`; fast quantized CPU decoding, for teachers); openai = any
    OpenAI-compatible endpoint."""
    base_url: str | None = None
    """Endpoint for backend=openai (vLLM, llama.cpp server, Ollama, OpenAI)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written anywhere)."""
    batch_size: int = 8
    """Local batch size / HTTP concurrency."""
    precision: Literal["fp32", "bf16", "int8", "int8-dynamic", "auto"] = "auto"
    """Local weights precision for inference: auto = bf16 where the hardware has native bf16,
    else fp32; int8-dynamic = int8 weights and activations on the CPU's int8 kernels (about 1.8x
    fp32 on an AVX2 CPU, outputs close to fp32's but not equal; for teachers and judges)."""

    def __post_init__(self) -> None:
        import re

        from .backends import BACKENDS, unknown_backend

        if self.backend not in BACKENDS:
            raise ValueError(unknown_backend(self.backend))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            # most likely the key itself, pasted here: it would be saved with the config; don't echo it
            raise ValueError("api_key_env: expected the name of an environment variable that holds "
                             "the key (e.g. OPENAI_API_KEY), not the key")
