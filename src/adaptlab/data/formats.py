"""Read and write examples; every record is validated and normalized to chat `messages`.

Accepted record shapes (each may carry an optional string `explanation`):
  {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
  {"prompt": str, "completion": str}
  {"instruction": str, "input": str (optional), "output": str}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import AdaptlabError, InputError, one_line, require

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 4 << 20  # a line past this is refused, not parsed


class _Bad(Exception):
    def __init__(self, field: str | None, problem: str):
        self.field, self.problem = field, problem


def _str(rec: dict, key: str, prefix: str = "", optional: bool = False) -> str | None:
    if key not in rec or (optional and rec[key] is None):  # tables hold null for absent fields
        if optional:
            return None
        raise _Bad(prefix + key, "missing field")
    v = rec[key]
    if not isinstance(v, str):
        raise _Bad(prefix + key, f"expected a string, got {type(v).__name__}")
    return v


def _messages(rec: dict, require_reply: bool) -> list[dict]:
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise _Bad("messages", "expected a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _Bad(where, f"expected an object, got {type(m).__name__}")
        role = _str(m, "role", where + ".")
        if role not in ROLES:
            raise _Bad(f"{where}.role", f"expected one of system/user/assistant, got {role!r}")
        content = _str(m, "content", where + ".")
        if role == "system" and i != 0:
            raise _Bad(f"{where}.role", "a system message may only come first")
        out.append({"role": role, "content": content})
    if require_reply and out[-1]["role"] != "assistant":
        raise _Bad(f"messages[{len(out) - 1}].role", "conversation must end on an assistant turn")
    for i, m in enumerate(out):  # an empty target teaches the model to say nothing
        if m["role"] == "assistant" and not m["content"].strip():
            raise _Bad(f"messages[{i}].content", "empty assistant reply")
    if not any(m["role"] == "user" for m in out):
        raise _Bad("messages", "no user turn")
    return out


def _nonempty(reply: str | None, key: str) -> None:
    if reply is not None and not reply.strip():
        raise _Bad(key, "empty assistant reply")


def to_messages(rec: Any, require_reply: bool = True) -> dict:
    """Validate one record and normalize it to {"messages": [...], "explanation"?: str}."""
    if not isinstance(rec, dict):
        raise _Bad(None, f"expected a JSON object, got {type(rec).__name__}")
    if "messages" in rec:
        msgs = _messages(rec, require_reply)
    elif "prompt" in rec:
        prompt = _str(rec, "prompt")
        completion = _str(rec, "completion", optional=not require_reply)
        msgs = [{"role": "user", "content": prompt}]
        msgs += [{"role": "assistant", "content": completion}] if completion is not None else []
        _nonempty(completion, "completion")
    elif "instruction" in rec:
        ins, inp = _str(rec, "instruction"), _str(rec, "input", optional=True)
        out = _str(rec, "output", optional=not require_reply)
        msgs = [{"role": "user", "content": f"{ins}\n\n{inp}" if inp else ins}]
        msgs += [{"role": "assistant", "content": out}] if out is not None else []
        _nonempty(out, "output")
    else:
        raise _Bad(None, "unknown format: expected 'messages', 'prompt'/'completion' "
                         "or 'instruction'/'output'")
    result = {"messages": msgs}
    expl = _str(rec, "explanation", optional=True)
    if expl is not None:
        result["explanation"] = expl
    return result


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json object_pairs_hook: a repeated key would silently drop a value, so refuse it."""
    rec: dict = {}
    for k, v in pairs:
        if k in rec:
            raise _Bad(k, "duplicate key")
        rec[k] = v
    return rec


def validate_record(rec: Any, path: str, line: int, require_reply: bool = True) -> dict:
    try:
        return to_messages(rec, require_reply)
    except _Bad as e:
        raise InputError(path, line, e.field, e.problem) from None


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(str(path), None, None, e.strerror or one_line(e)) from None
    with f:
        # readline(limit): a huge line is refused without reading all of it into memory
        for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(str(path), n, None, f"line longer than {MAX_LINE_BYTES} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(str(path), n, None, f"invalid UTF-8 at byte {e.start}") from None
            if not text.strip():
                continue
            try:
                # rstrip: so a truncated line's column is its end
                rec = json.loads(text.rstrip("\r\n"), object_pairs_hook=_unique_keys)
            except _Bad as e:
                raise InputError(str(path), n, e.field, e.problem) from None
            except json.JSONDecodeError as e:
                hint = "; JSONL holds one record per line" if text.strip() in ("[", "{") else ""
                raise InputError(str(path), n, None,
                                 f"invalid JSON ({e.msg}, column {e.colno}{hint})") from None
            except (ValueError, RecursionError) as e:  # huge integers, too deeply nested
                raise InputError(str(path), n, None, f"invalid JSON ({one_line(e)})") from None
            yield n, rec


def _table_records(rows: list[dict]) -> Iterator[tuple[int, Any]]:
    yield from enumerate(rows, 1)


def _source(path: str) -> Iterator[tuple[int, Any]]:
    p = Path(path)
    if path.startswith("hf:"):
        load_dataset = require("datasets", "data").load_dataset  # online users: a hub dataset
        try:
            return _table_records(list(load_dataset(path[3:], split="train")))
        except Exception as e:  # offline, no such dataset, no train split: many types
            raise InputError(path, None, None, f"cannot load dataset ({one_line(e)})") from None
    if not p.exists():
        raise InputError(path, None, None, "no such file or directory")
    if p.is_dir():
        load_from_disk = require("datasets", "data").load_from_disk
        try:
            ds = load_from_disk(str(p))
        except (FileNotFoundError, ValueError) as e:
            raise InputError(path, None, None, f"not a saved dataset ({one_line(e)})") from None
        if hasattr(ds, "keys"):
            if not ds:
                raise InputError(path, None, None, "saved dataset has no splits")
            ds = ds["train"] if "train" in ds else ds[next(iter(ds.keys()))]
        return _table_records(list(ds))
    if p.suffix == ".parquet":
        pq = require("pyarrow.parquet", "data")
        try:
            return _table_records(pq.read_table(p).to_pylist())
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise InputError(path, None, None, f"unreadable parquet ({one_line(e)})") from None
    return _jsonl_records(p)


def prompt_turns(messages: list[dict]) -> list[dict]:
    """The chat up to its last user turn: what a model is asked, without the reply."""
    msgs = list(messages)
    while msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    return msgs


def read_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line or row number, raw record) of a JSONL / Parquet / saved-dataset file; unreadable
    files and bad JSON lines raise InputError naming the file and line. Callers check fields."""
    return _source(str(path))


def load_examples(path: str | Path, require_reply: bool = True) -> list[dict]:
    """All records of a JSONL / Parquet / saved-dataset file, validated and normalized."""
    path = str(path)
    out = [validate_record(rec, path, n, require_reply) for n, rec in _source(path)]
    if not out:
        raise InputError(path, None, None, "no examples (empty file)")
    return out


def save_examples(path: str | Path, examples: list[dict]) -> Path:
    """Write examples as JSONL or Parquet (by suffix), atomically."""
    from ..io import atomic_path, write_jsonl

    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = dict.fromkeys(k for ex in examples for k in ex)  # from_pylist sees row 1 only
        table = pa.Table.from_pydict({k: [ex.get(k) for ex in examples] for k in keys})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path
    if path.suffix not in (".jsonl", ".json"):
        raise AdaptlabError(f"{path}: unsupported output format (use .jsonl or .parquet)")
    return write_jsonl(path, examples)
