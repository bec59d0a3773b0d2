"""A deterministic fake LM for tests and dry runs: no model, no network."""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from .base import Chat, GenParams


class FakeLM:
    """Replies with `reply(chat, params)` (default: an echo of the last user turn), counting calls."""

    def __init__(self, reply: Callable[[Chat, GenParams], str] | None = None, name: str = "fake",
                 fail_after: int | None = None):
        self.reply = reply or (lambda chat, p: f"You asked: {chat[-1]['content'][:60]}")
        self.name = name
        self.calls = 0
        self.chats_seen = 0
        self.fail_after = fail_after

    def chat(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("FakeLM: simulated crash")
        self.calls += 1
        self.chats_seen += len(chats)
        return [self.reply(c, params) for c in chats]

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """A stable pseudo log-probability, so judges can run on it."""
        out = []
        for c, t in zip(chats, continuations):
            h = hashlib.sha256((str(c) + t).encode()).digest()
            out.append(-len(t.split()) * (1 + h[0] / 255))
        return out
