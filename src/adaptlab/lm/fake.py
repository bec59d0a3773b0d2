"""A deterministic fake LM for tests and dry runs: no model, no network."""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

from .base import Chat, GenParams, adapter_name


def _unit(*parts: object) -> float:
    """A stable number in [0, 1] from its inputs."""
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[0] / 255


class FakeLM:
    """Replies with `reply(chat, params)` (default: an echo of the last user turn), counting calls.

    Also a Scorer, ChoiceScorer and AdapterHost with hash-based results, so logic that needs
    those runs on it. `log` records each call as (method, its inputs)."""

    def __init__(self, reply: Callable[[Chat, GenParams], str] | None = None, name: str = "fake",
                 fail_after: int | None = None):
        self.reply = reply or (lambda chat, p: f"You asked: {chat[-1]['content'][:60]}")
        self.name = self.base_name = name
        self.adapter: str | None = None
        self.calls = 0
        self.chats_seen = 0
        self.fail_after = fail_after
        self.log: list[tuple[str, list]] = []

    def chat(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("FakeLM: simulated crash")
        self.calls += 1
        self.chats_seen += len(chats)
        self.log.append(("chat", list(chats)))
        return [self.reply(c, params) for c in chats]

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """A stable pseudo log-probability, so judges can run on it."""
        self.log.append(("score", list(zip(chats, continuations))))
        out = []
        for c, t in zip(chats, continuations):
            h = hashlib.sha256((str(c) + t).encode()).digest()
            out.append(-len(t.split()) * (1 + h[0] / 255))
        return out

    def choice_logprobs(self, chats: Sequence[Chat], options: Sequence[str]) -> list[list[float]]:
        """Stable pseudo log-probabilities of each option (they sum to 1 over the options)."""
        self.log.append(("choice_logprobs", [(c, list(options)) for c in chats]))
        out = []
        for c in chats:
            logits = [4 * _unit(c, o, self.name) for o in options]
            norm = math.log(sum(math.exp(v) for v in logits)) if logits else 0.0
            out.append([v - norm for v in logits])
        return out

    def set_adapter(self, path: str | None) -> None:
        """Named like LocalLM's: `<name>+<hash of path/adapter_model.safetensors>` (`+none` when
        the file is absent), the bare name for None; replies do not change."""
        self.adapter = path
        self.name = adapter_name(self.base_name, path)
