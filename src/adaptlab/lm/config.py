"""Where an LM runs: the one backend config every study uses (built by `lm.registry.make_lm`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class BackendConfig:
    """Where an LM runs: a local model (packaged name, dir or hub id) or an OpenAI-compatible URL."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    """Model reference (local) or model name (openai)."""
    backend: str = "local"
    """local = transformers on this machine; llamacpp = the packaged GGUF on llama.cpp (extra
    `adaptlab[llamacpp]`; fast quantized CPU decoding, for teachers); openai = any
    OpenAI-compatible endpoint; vllm = vLLM's offline engine on a GPU (extra `adaptlab[vllm]`)."""
    base_url: str | None = None
    """Endpoint for backend=openai (vLLM, llama.cpp server, Ollama, OpenAI)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written anywhere)."""
    batch_size: int = 8
    """Local batch size / HTTP concurrency (backend=openai: requests in flight at once); with
    ray_workers, also the most chats one worker is handed at a time. vLLM batches by itself
    (vllm_args max_num_seqs) and ignores it."""
    precision: Literal["fp32", "bf16", "int8", "int8-dynamic", "auto"] = "auto"
    """Local weights precision for inference: auto = bf16 where the hardware has native bf16,
    else fp32; int8-dynamic = int8 weights and activations on the CPU's int8 kernels (about 1.8x
    fp32 on an AVX2 CPU, outputs close to fp32's but not equal; for teachers and judges)."""
    vllm_args: dict[str, Any] = field(default_factory=dict)
    """backend=vllm only: keyword arguments for `vllm.LLM` (tensor_parallel_size,
    gpu_memory_utilization, max_model_len, max_num_seqs, enable_lora, max_lora_rank, ...)."""
    ray_workers: int = 0
    """0 = off. N > 0: each call is split into shards of at most batch_size chats, answered by N
    Ray actors that each hold their own copy of this backend (extra `adaptlab[scale]`)."""
    ray_address: str | None = None
    """The Ray cluster to join: None = an already initialized Ray, else RAY_ADDRESS, else the
    cluster last started on this machine, else a new local one; 'auto' = an existing one only;
    'host:port' or 'ray://host:port'. Used only with ray_workers > 0."""
    ray_cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each worker (it also sets the worker's OMP_NUM_THREADS to this)."""
    ray_gpus_per_worker: float = 0.0
    """GPUs Ray reserves for each worker (1 for a local or vllm backend on its own GPU)."""
    ray_task_retries: int = 3
    """How often a shard is retried after its worker died (a dead worker is always replaced);
    a shard that kills its worker more often fails the call. Exceptions are not retried."""

    def __post_init__(self) -> None:
        import re

        from .backends import BACKENDS, unknown_backend

        if self.backend not in BACKENDS:
            raise ValueError(unknown_backend(self.backend))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            # most likely the key itself, pasted here: it would be saved with the config; don't echo it
            raise ValueError("api_key_env: expected the name of an environment variable that holds "
                             "the key (e.g. OPENAI_API_KEY), not the key")
        if self.vllm_args and self.backend != "vllm":
            raise ValueError(f"vllm_args: only backend=vllm takes them, not {self.backend!r}")
        self._check_ray()

    def _check_ray(self) -> None:
        for name in ("ray_workers", "ray_task_retries", "ray_cpus_per_worker",
                     "ray_gpus_per_worker"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.ray_workers and self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1 with ray_workers, got {self.batch_size}")
