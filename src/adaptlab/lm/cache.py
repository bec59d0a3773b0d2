"""A persistent answer cache in front of any LM, kept in one SQLite file.

The key is the sha256 of the model name, the chat and the sampling parameters,
so a different model, prompt or parameter (seed included) is a miss.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from adaptlab.lm.base import Chat, GenParams, OnResult, chat_each

_SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL)"


class CachedLM:
    """Wraps `inner`; only chats not seen before (same model and params) reach it."""

    def __init__(self, inner, path: str | Path):
        self.inner = inner
        self.name = inner.name
        self.answers_each = getattr(inner, "answers_each", False)
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # each answer is committed on arrival; in WAL mode NORMAL keeps commits through a
            # killed process without an fsync per commit
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        if callable(getattr(inner, "score", None)):
            self.score = inner.score  # passthrough, uncached

    def __repr__(self) -> str:
        return f"CachedLM({self.inner!r}, path={str(self.path)!r})"

    def key(self, chat: Chat, params: GenParams) -> str:
        blob = json.dumps(
            {"model": self.inner.name, "chat": chat, "params": params.to_dict()}, sort_keys=True
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def chat(self, chats: Sequence[Chat], params: GenParams,
             on_result: OnResult | None = None) -> list[str]:
        """Answers in order; `on_result(i, text)` as each is known (hits first, then misses as
        `inner` delivers them). Each new answer is stored the moment it arrives, so a batch that
        fails part-way keeps what it finished."""
        chats = list(chats)
        keys = [self.key(c, params) for c in chats]
        found = self._lookup(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        with self._lock:
            self.hits += len(chats) - len(missing)
            self.misses += len(missing)
        if on_result is not None:
            for i, k in enumerate(keys):
                if k in found:
                    on_result(i, found[k])
        if missing:
            found.update(self._fill(chats, keys, missing, params, on_result))
        return [found[k] for k in keys]

    def _fill(self, chats: list, keys: list[str], missing: list[int], params: GenParams,
              on_result: OnResult | None) -> dict:
        """Ask `inner` once per distinct missing chat, in order; store and return the answers."""
        users: dict[str, list[int]] = {}
        for i in missing:
            users.setdefault(keys[i], []).append(i)  # a chat repeated in one batch is asked once
        todo = list(users)
        fresh: dict[str, str] = {}

        def arrived(j: int, text: str) -> None:
            fresh[todo[j]] = text
            self._store({todo[j]: text})
            for i in users[todo[j]] if on_result is not None else ():
                on_result(i, text)

        chat_each(self.inner, [chats[users[k][0]] for k in todo], params, arrived)
        return fresh

    def _lookup(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # stay under SQLite's variable limit
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, text FROM answers WHERE key IN ({marks})", part
                ).fetchall()
                found.update(rows)
        return found

    def _store(self, fresh: dict[str, str]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO answers (key, text) VALUES (?, ?)", fresh.items()
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
