"""Corpora the studies read (passages with questions, labeled texts), validated on load, and
splits by group so nothing seen in training is evaluated.

Every record goes through the same reader as training data (`read_records`), so a bad line is
reported as `file:line: field: problem`, never a traceback.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from .formats import read_records


def _field(rec: Any, path: str, n: int, key: str, check: Callable[[Any], bool], want: str):
    if not isinstance(rec, dict):
        raise InputError(path, n, None, f"expected a JSON object, got {type(rec).__name__}")
    if not check(rec.get(key)):
        raise InputError(path, n, key, want)
    return rec[key]


def _text(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def load_records(path: str | Path, check: Callable[[Any, str, int], None]) -> list[dict]:
    """All records of `path`, each passed to `check(rec, path, line)`; an empty file is refused."""
    path = str(path)
    rows = []
    for n, rec in read_records(path):
        check(rec, path, n)
        rows.append(rec)
    if not rows:
        raise InputError(path, None, None, "no records (empty file)")
    return rows


def _text_record(rec, path: str, n: int) -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
        raise InputError(path, n, "text", "expected a string")


def load_texts(path: str | Path) -> list[str]:
    """`{"text": ...}` per line (other fields are ignored)."""
    return [r["text"] for r in load_records(path, _text_record)]


def _passage(rec, path: str, n: int) -> None:
    for key in ("id", "passage"):
        _field(rec, path, n, key, _text, "expected a non-empty string")
    qa = _field(rec, path, n, "qa", lambda v: isinstance(v, list) and bool(v),
                "expected a non-empty list of {question, answer}")
    for j, item in enumerate(qa):
        for key in ("question", "answer"):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise InputError(path, n, f"qa[{j}].{key}", "expected a string")


def load_passages(path: str | Path) -> list[dict]:
    """Passages `{id, passage, topic?, qa: [{question, answer}]}`."""
    return load_records(path, _passage)


def _labeled(rec, path: str, n: int) -> None:
    _field(rec, path, n, "text", lambda v: isinstance(v, str), "expected a string")
    _field(rec, path, n, "label", lambda v: v in (0, 1) and not isinstance(v, bool),
           "expected label 0 or 1")


def load_labeled(path: str | Path) -> tuple[list[str], list[int]]:
    """Labeled texts `{text, label: 0|1}` -> (texts, labels)."""
    rows = load_records(path, _labeled)
    return [r["text"] for r in rows], [r["label"] for r in rows]


def question_items(passage: dict) -> list[dict]:
    """One item per question of a passage, carrying the passage it came from."""
    return [{"id": f"{passage['id']}-q{j}", "passage_id": passage["id"],
             "topic": passage.get("topic", ""), "passage": passage["passage"],
             "question": qa["question"], "answer": qa["answer"]}
            for j, qa in enumerate(passage["qa"])]


def split_by_group(groups: list, sizes: dict[str, int], seed: int,
                   items: Callable[[Any], list[dict]] = question_items) -> dict[str, list[dict]]:
    """Shuffle the groups (passages) with `seed`, then fill the parts in the order given, a
    whole group at a time, each cut to its size: no group straddles two parts."""
    groups = list(groups)
    random.Random(seed).shuffle(groups)
    out: dict[str, list[dict]] = {k: [] for k in sizes}
    it = iter(groups)
    for part, want in sizes.items():
        while len(out[part]) < want:
            g = next(it, None)
            if g is None:
                break
            out[part] += items(g)
        out[part] = out[part][:want]
    return out
