"""The LM protocol every backend implements, and the sampling parameters it takes."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence, runtime_checkable

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


@runtime_checkable
class Scorer(Protocol):
    """Log-probabilities of given continuations after given chats (no generation)."""

    name: str

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Trim `text` at the first occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
