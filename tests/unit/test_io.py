"""io: atomic writes, journals that survive a kill, content hashes."""
from __future__ import annotations

from pathlib import Path

import pytest

from adaptlab.io import (
    append_jsonl,
    atomic_dir,
    atomic_path,
    hash_path,
    read_journal,
    read_json,
    read_jsonl,
    sha256_json,
    write_bytes,
    write_json,
    write_jsonl,
    write_text,
)


class Boom(Exception):
    pass


def names(d):
    return sorted(p.name for p in d.iterdir())


# -- atomic_path ----------------------------------------------------------------------------

def test_atomic_path_success_renames(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("data")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_text() == "data"
    assert names(target.parent) == ["out.txt"]


def test_atomic_path_error_leaves_no_file(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert not target.exists()
    assert names(tmp_path) == []  # temp file cleaned up too


def test_atomic_path_error_keeps_old_content(tmp_path):
    target = write_text(tmp_path / "out.txt", "old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise Boom
    assert target.read_text() == "old"
    assert names(tmp_path) == ["out.txt"]


def test_write_text_replaces(tmp_path):
    p = write_text(tmp_path / "a.txt", "one")
    write_text(p, "two")
    assert p.read_text() == "two"
    write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"


# -- json / jsonl ---------------------------------------------------------------------------

def test_write_json_round_trip(tmp_path):
    obj = {"a": [1, 2.5, None, True], "b": {"ü": "✓"}, "path": tmp_path}
    p = write_json(tmp_path / "x.json", obj)
    assert read_json(p) == {**obj, "path": str(tmp_path)}
    assert "✓" in p.read_text(encoding="utf-8")  # not escaped
    assert p.read_text().endswith("\n")


def test_write_jsonl_round_trip(tmp_path):
    rows = [{"i": i, "s": "line\nbreak \u2028 sep"} for i in range(5)]
    p = write_jsonl(tmp_path / "x.jsonl", rows)
    assert read_jsonl(p) == rows
    assert len(p.read_text(encoding="utf-8").split("\n")) == 6  # one line per row + final ""


def test_write_jsonl_empty(tmp_path):
    p = write_jsonl(tmp_path / "e.jsonl", [])
    assert p.read_text() == "" and read_jsonl(p) == []


# -- atomic_dir -----------------------------------------------------------------------------

def test_atomic_dir_creates(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "w.bin").write_bytes(b"1")
        assert not target.exists()
    assert names(target) == ["w.bin"]
    assert names(tmp_path) == ["model"]


def test_atomic_dir_replaces_existing_entirely(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")
    (target / "keep-name.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "keep-name.txt").write_text("new")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "f").write_text("n")
    assert names(target) == ["keep-name.txt", "nested"]  # stale.bin is gone
    assert (target / "keep-name.txt").read_text() == "new"
    assert names(tmp_path) == ["model"]  # no .old or .tmp left behind


def test_atomic_dir_error_leaves_existing_untouched(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
            raise Boom
    assert names(target) == ["a.txt"]
    assert (target / "a.txt").read_text() == "old"
    assert names(tmp_path) == ["model"]


def test_atomic_dir_error_creates_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "x").write_text("x")
            raise Boom
    assert names(tmp_path) == []


# -- journals -------------------------------------------------------------------------------

def test_journal_append_and_read(tmp_path):
    p = tmp_path / "j" / "journal.jsonl"
    assert read_journal(p) == []
    append_jsonl(p, [{"i": 0}, {"i": 1}])
    append_jsonl(p, [{"i": 2}])
    assert read_journal(p) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_read_journal_drops_torn_last_line(tmp_path):
    p = tmp_path / "journal.jsonl"
    append_jsonl(p, [{"i": 0}, {"i": 1}])
    with open(p, "a") as f:
        f.write('{"i": 2, "text": "half wri')  # killed mid-write
    assert read_journal(p) == [{"i": 0}, {"i": 1}]


def test_read_journal_torn_multibyte_char(tmp_path):
    p = tmp_path / "journal.jsonl"
    append_jsonl(p, [{"s": "ok"}])
    with open(p, "ab") as f:
        f.write('{"s": "✓'.encode()[:-1])  # cut inside a UTF-8 sequence
    assert read_journal(p) == [{"s": "ok"}]


def test_append_after_torn_line_keeps_new_rows(tmp_path):
    # A run killed mid-write, then resumed: rows appended afterwards must not be lost.
    p = tmp_path / "journal.jsonl"
    append_jsonl(p, [{"i": 0}])
    with open(p, "a") as f:
        f.write('{"i": 1, "x": "tor')
    append_jsonl(p, [{"i": 1}, {"i": 2}])
    assert read_journal(p) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert p.read_text().count("\n") == 3


def test_append_after_torn_first_line(tmp_path):
    p = tmp_path / "journal.jsonl"
    p.write_text('{"i": 0, "x"')
    append_jsonl(p, [{"i": 0}])
    assert read_journal(p) == [{"i": 0}]


def test_journal_rows_with_unicode_line_separators(tmp_path):
    rows = [{"s": "a\u2028b"}, {"s": "c\x85d\u2029"}, {"s": "e"}]
    p = tmp_path / "journal.jsonl"
    append_jsonl(p, rows)
    assert read_journal(p) == rows


# -- hashes ---------------------------------------------------------------------------------

def test_hash_path_file(tmp_path):
    a = write_text(tmp_path / "a", "x")
    b = write_text(tmp_path / "b", "x")
    assert hash_path(a) == hash_path(b)  # content, not name
    write_text(b, "y")
    assert hash_path(a) != hash_path(b)


def test_hash_path_dir_changes_with_content_and_names(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("1")
    (d / "sub" / "b.txt").write_text("2")
    h0 = hash_path(d)
    assert hash_path(d) == h0  # deterministic
    (d / "sub" / "b.txt").write_text("3")
    h1 = hash_path(d)
    assert h1 != h0
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")
    h2 = hash_path(d)
    assert h2 != h1
    (d / "new.txt").write_text("")
    assert hash_path(d) != h2


def test_hash_path_dir_ignores_dotfiles(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    h = hash_path(d)
    (d / ".key").write_text("whatever")
    assert hash_path(d) == h


def test_hash_path_same_tree_same_hash(tmp_path):
    for name in ("x", "y"):
        (tmp_path / name / "s").mkdir(parents=True)
        (tmp_path / name / "s" / "f").write_text("same")
    assert hash_path(tmp_path / "x") == hash_path(tmp_path / "y")


def test_sha256_json_ignores_key_order():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})
    assert sha256_json({"p": Path("/x/y")}) == sha256_json({"p": "/x/y"})  # Paths hash as str
