"""The hand-written yes/no questions of corpora/boolq/questions.jsonl (SoftSRV's BoolQ-style
domain): well formed, balanced, and each decided by a span copied verbatim from its passage in
corpora/tone/passages.jsonl."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ROOT / "corpora" / "boolq" / "questions.jsonl"
PASSAGES = ROOT / "corpora" / "tone" / "passages.jsonl"
FIELDS = {"id", "passage_id", "question", "answer", "evidence"}


def _rows(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), f"blank line in {path}"
    return [json.loads(line) for line in lines]


def test_every_line_parses_with_the_documented_fields():
    rows = _rows(QUESTIONS)
    assert len(rows) == 200
    for row in rows:
        assert set(row) == FIELDS, row
        assert all(isinstance(row[k], str) and row[k].strip() for k in FIELDS), row


def test_ids_unique_and_questions_distinct():
    rows = _rows(QUESTIONS)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("bq-") for i in ids)
    normalized = [" ".join(r["question"].lower().split()) for r in rows]
    assert len(set(normalized)) == len(normalized)


def test_questions_end_with_a_question_mark():
    assert all(r["question"].rstrip().endswith("?") for r in _rows(QUESTIONS))


def test_answers_are_yes_or_no_and_balanced():
    counts = Counter(r["answer"] for r in _rows(QUESTIONS))
    assert set(counts) == {"yes", "no"}
    assert counts["yes"] == 100 and counts["no"] == 100


def test_passages_exist_and_evidence_is_verbatim():
    passages = {p["id"]: p["passage"] for p in _rows(PASSAGES)}
    for row in _rows(QUESTIONS):
        assert row["passage_id"] in passages, row["id"]
        assert row["evidence"] in passages[row["passage_id"]], row["id"]


def test_one_question_per_passage_across_every_topic():
    rows = _rows(QUESTIONS)
    used = [r["passage_id"] for r in rows]
    assert len(set(used)) == len(used)
    topics = {p["id"]: p["topic"] for p in _rows(PASSAGES)}
    assert {topics[p] for p in used} == set(topics.values())
