"""The LM protocol every backend implements, the capabilities some add, and the sampling parameters.

Capabilities are protocols, tested with `supports(lm, Scorer)` (or isinstance), never hasattr:
- LM: chat(chats, params) -> texts; every backend.
- Scorer: score(chats, continuations) -> log-probabilities (local models).
- ChoiceScorer: choice_logprobs(chats, options) -> one log-probability per option (local models).
- AdapterHost: set_adapter(path | None); the LM's name then names the adapter's weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}
Chat = list[Message]


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters for one batch of chats."""

    max_new_tokens: int = 128
    """Upper bound on generated tokens per answer."""
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (used only when temperature > 0)."""
    seed: int = 0
    """Seed for sampling; the same seed and inputs give the same texts."""
    stop: tuple[str, ...] = ()
    """Extra stop strings; generation also stops at the end-of-sequence token."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@runtime_checkable
class LM(Protocol):
    """Batches of chats in, texts out."""

    name: str

    def chat(self, chats: Sequence[Chat], params: GenParams) -> list[str]: ...


OnResult = Callable[[int, str], None]
"""Called with (index in the batch, final text) as each answer is ready."""


def chat_each(lm, chats: Sequence[Chat], params: GenParams, on_result: OnResult) -> list[str]:
    """`lm.chat`, calling `on_result` for each answer as soon as it is final.

    Backends whose chats are answered independently (`answers_each = True`, e.g. HTTP) take an
    `on_result` keyword and call it, on the caller's thread, as each answer arrives, so a batch
    that fails part-way still hands over what it finished. Others answer the batch as a whole and
    `on_result` is called for each text afterwards.
    """
    chats = list(chats)
    if getattr(lm, "answers_each", False):
        texts = lm.chat(chats, params, on_result=on_result)
    else:
        texts = lm.chat(chats, params)
        if len(texts) != len(chats):
            raise RuntimeError(f"{lm.name} returned {len(texts)} texts for {len(chats)} chats")
        for i, t in enumerate(texts):
            on_result(i, t)
    return texts


@runtime_checkable
class Scorer(Protocol):
    """Log-probabilities of given continuations after given chats (no generation)."""

    name: str

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]: ...


@runtime_checkable
class ChoiceScorer(Protocol):
    """For each chat, the log-probability of each option as the reply (multiple choice, Yes/No)."""

    name: str

    def choice_logprobs(self, chats: Sequence[Chat], options: Sequence[str]) -> list[list[float]]: ...


@runtime_checkable
class AdapterHost(Protocol):
    """Swaps LoRA adapters on one loaded base; `name` changes with the adapter's weights."""

    name: str

    def set_adapter(self, path: str | None) -> None: ...


def supports(lm: object, protocol: type) -> bool:
    """Whether `lm` has the capability `protocol` (one of the runtime-checkable protocols here)."""
    return isinstance(lm, protocol)


def adapter_name(base: str, path: str | None) -> str:
    """The name of `base` with the adapter at `path`: `base+<first 16 hex of the sha256 of
    path/adapter_model.safetensors>` (`base+none` if there is no such file), `base` for None.
    Named by content, not path, so cached answers of different weights never collide."""
    if path is None:
        return base
    from ..io import sha256_file

    weights = Path(path) / "adapter_model.safetensors"
    return f"{base}+{sha256_file(weights)[:16] if weights.is_file() else 'none'}"


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Trim `text` at the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
