"""A persistent call cache in front of any LM, kept in one SQLite file.

Answers are keyed on the sha256 of the model name, the chat and the sampling parameters, so a
different model, prompt or parameter (seed included) is a miss. The inner LM's other capabilities
are cached too, each in its own table, and only those it has: scores keyed on (model, chat,
continuation), choice log-probabilities on (model, chat, options); floats are stored exactly
(float.hex). An adapter swap changes the model name, so another adapter's results never match.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Sequence

from adaptlab.lm.base import (AdapterHost, Chat, ChoiceScorer, GenParams, OnResult, Scorer,
                              chat_each, supports)

_SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL)"
_TABLES = ("answers", "scores", "choices")  # table names are ours, never user input


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


class CachedLM:
    """Wraps `inner`; only calls not seen before (same model and inputs) reach it.

    Has `score`, `choice_logprobs` and `set_adapter` exactly when `inner` does (bound per
    instance, so `supports(cached, Scorer)` is `supports(inner, Scorer)`).
    """

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
            for table in _TABLES[1:]:
                self._db.execute(_SCHEMA.replace("answers", table, 1))
            self._db.commit()
        if supports(inner, Scorer):
            self.score = self._score
        if supports(inner, ChoiceScorer):
            self.choice_logprobs = self._choice_logprobs
        if supports(inner, AdapterHost):
            self.set_adapter = self._set_adapter

    def __repr__(self) -> str:
        return f"CachedLM({self.inner!r}, path={str(self.path)!r})"

    def key(self, chat: Chat, params: GenParams) -> str:
        return _digest({"model": self.inner.name, "chat": chat, "params": params.to_dict()})

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

    # -- the inner LM's other capabilities, exposed only when it has them --------------------
    def _score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """`score` (Scorer), cached per (model, chat, continuation)."""
        chats, continuations = list(chats), list(continuations)
        if len(chats) != len(continuations):
            raise ValueError(f"{len(chats)} chats but {len(continuations)} continuations")
        keys = [_digest({"model": self.inner.name, "chat": c, "continuation": t})
                for c, t in zip(chats, continuations)]

        def ask(idx: list[int]) -> list[str]:
            out = self.inner.score([chats[i] for i in idx], [continuations[i] for i in idx])
            return [float(v).hex() for v in out]

        return [float.fromhex(v) for v in self._cached("scores", keys, ask)]

    def _choice_logprobs(self, chats: Sequence[Chat], options: Sequence[str]) -> list[list[float]]:
        """`choice_logprobs` (ChoiceScorer), cached per (model, chat, options)."""
        chats, options = list(chats), list(options)
        keys = [_digest({"model": self.inner.name, "chat": c, "options": options}) for c in chats]

        def ask(idx: list[int]) -> list[str]:
            out = self.inner.choice_logprobs([chats[i] for i in idx], options)
            return [json.dumps([float(v).hex() for v in row]) for row in out]

        return [[float.fromhex(v) for v in json.loads(row)]
                for row in self._cached("choices", keys, ask)]

    def _set_adapter(self, path: str | None) -> None:
        """`set_adapter` (AdapterHost): the inner LM's name, hence every key, follows the adapter."""
        self.inner.set_adapter(path)
        self.name = self.inner.name

    def _cached(self, table: str, keys: list[str], ask: Callable[[list[int]], list[str]]) -> list[str]:
        """The stored value of each key, in order; the missing ones come from `ask(indices)`, one
        index per distinct missing key (its first occurrence), and are stored."""
        found = self._lookup(keys, table)
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in found:
                first.setdefault(k, i)
        if first:
            values = ask(list(first.values()))
            if len(values) != len(first):
                raise RuntimeError(f"{self.inner.name} returned {len(values)} results "
                                   f"for {len(first)} inputs")
            fresh = dict(zip(first, values))
            self._store(fresh, table)
            found.update(fresh)
        return [found[k] for k in keys]

    # -- storage ------------------------------------------------------------------------------
    def _lookup(self, keys: list[str], table: str = "answers") -> dict[str, str]:
        assert table in _TABLES
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # stay under SQLite's variable limit
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT key, text FROM {table} WHERE key IN ({marks})", part
                ).fetchall()
                found.update(rows)
        return found

    def _store(self, fresh: dict[str, str], table: str = "answers") -> None:
        assert table in _TABLES
        with self._lock:
            self._db.executemany(
                f"INSERT OR REPLACE INTO {table} (key, text) VALUES (?, ?)", fresh.items()
            )
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
