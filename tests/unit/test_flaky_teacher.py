"""Synthesis against a flaky OpenAI-compatible teacher: nothing lost, duplicated or swapped.

The teacher is wired as in the tone study (OpenAILM behind CachedLM) and talks to a local fault
server that answers "echo: <last user message>", so every answer can be traced to its item.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
from faultserver import FAULTS, FaultServer

pytest.importorskip("openai")

from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.io import read_journal  # noqa: E402
from adaptlab.lm.base import GenParams  # noqa: E402
from adaptlab.lm.cache import CachedLM  # noqa: E402
from adaptlab.lm.openai_http import OpenAILM  # noqa: E402
from adaptlab.synth.simulate import Demo, ToneSpec, simulate, teacher_chat  # noqa: E402

KEY_ENV = "ADAPTLAB_TEST_FLAKY_KEY"
N, CHUNK = 40, 8
SPEC = ToneSpec(demos=[Demo("Why is the sky blue?", "Rayleigh scattering.", "It's the air, really!")])
PARAMS = GenParams(max_new_tokens=16, temperature=0.7, seed=11)
ITEMS = [{"id": f"i{k:02d}", "facts": f"Fact number {k}.", "question": f"Question {k}?"}
         for k in range(N)]


def prompt(it: dict) -> str:
    return teacher_chat(SPEC, it["facts"], it["question"])[-1]["content"]


EXPECTED = {it["id"]: "echo: " + prompt(it) for it in ITEMS}


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-flaky-test")


def teacher(server: FaultServer, cache, max_retries: int = 3) -> CachedLM:
    """As the tone study builds it, with small timeouts and backoff so faults cost little time."""
    inner = OpenAILM("teacher", base_url=server.url, api_key_env=KEY_ENV, concurrency=CHUNK,
                     max_retries=max_retries, timeout=2.0, backoff=0.005)
    return CachedLM(inner, cache)


def check_journal(path, ids) -> dict:
    """Journal rows by id; asserts none duplicated and every answer belongs to its item."""
    rows = read_journal(path)
    counts = Counter(r["id"] for r in rows)
    duplicated = sum(c - 1 for c in counts.values())
    swapped = [r["id"] for r in rows if r["simulated"] != EXPECTED[r["id"]]]
    lost = sorted(set(ids) - set(counts))
    print(f"journal: {len(rows)} rows, lost={len(lost)}, duplicated={duplicated}, "
          f"swapped={len(swapped)}")
    assert duplicated == 0 and swapped == [] and lost == []
    return {r["id"]: r for r in rows}


def test_synthesis_survives_every_kind_of_fault(tmp_path):
    with FaultServer(fault_rate=0.4, seed=38, max_faults_per_item=3, slow_s=2.5) as s:
        lm = teacher(s, tmp_path / "cache.sqlite")
        out = simulate(ITEMS, lm, SPEC, PARAMS, tmp_path / "journal.jsonl", chunk=CHUNK)
    stats = s.stats()
    print("flaky run:", json.dumps(stats))
    assert [r["id"] for r in out] == [it["id"] for it in ITEMS]
    assert all(r["simulated"] == EXPECTED[r["id"]] for r in out)
    check_journal(tmp_path / "journal.jsonl", EXPECTED)
    # exactly the scheduled faults, each retried once more, and every item answered once
    assert s.faults == s.schedule(prompt(it) for it in ITEMS)
    assert set(s.faults) == set(FAULTS)
    assert 0.3 <= stats["faulted_share"] <= 0.4
    assert s.answered == {prompt(it): 1 for it in ITEMS}
    assert stats["requests"] == N + sum(s.faults.values())
    assert (lm.hits, lm.misses) == (0, N)


def test_crash_keeps_finished_items_and_restart_asks_only_the_rest(tmp_path):
    k = 13  # not a chunk boundary: the failing chunk has answers both before and after the crash
    journal = tmp_path / "journal.jsonl"
    with FaultServer(fault_rate=0.35, seed=5, slow_s=2.5) as s:
        s.down_after = k
        with pytest.raises(AdaptlabError, match=r"failed after 4 attempts \(last status: HTTP 503\)"):
            simulate(ITEMS, teacher(s, tmp_path / "cache.sqlite"), SPEC, PARAMS, journal, chunk=CHUNK)
        kept = check_journal(journal, [])
        assert len(kept) == k  # every answer the server gave before going down was kept
        before = Counter(s.per_item)
        crash_stats = s.stats()

        s.down, s.down_after = False, None  # the teacher is back; a new process resumes
        lm = teacher(s, tmp_path / "cache.sqlite")
        out = simulate(ITEMS, lm, SPEC, PARAMS, journal, chunk=CHUNK)
    asked_again = [i for i in kept if s.per_item[prompt(kept[i])] != before[prompt(kept[i])]]
    print("crash run:", json.dumps(crash_stats))
    print("after restart:", json.dumps(s.stats()), f"re-requested={len(asked_again)}")
    assert asked_again == []
    assert (lm.hits, lm.misses) == (0, N - k)
    final = check_journal(journal, EXPECTED)
    assert len(final) == N and [r["id"] for r in out] == [it["id"] for it in ITEMS]
    assert all(r["simulated"] == EXPECTED[r["id"]] for r in out)
    assert s.answered == {prompt(it): 1 for it in ITEMS}  # each item answered once in all
    assert s.faults["down"] > 0


def test_cache_keeps_each_answer_of_a_failed_batch(tmp_path):
    """Without the journal, the call cache alone keeps what a failed batch finished."""
    chats = [teacher_chat(SPEC, it["facts"], it["question"]) for it in ITEMS[:12]]
    with FaultServer() as s:
        s.down_after = 5
        with pytest.raises(AdaptlabError):
            teacher(s, tmp_path / "c.sqlite", max_retries=1).chat(chats, PARAMS)
        s.down, s.down_after = False, None
        lm = teacher(s, tmp_path / "c.sqlite")
        assert lm.chat(chats, PARAMS) == [EXPECTED[it["id"]] for it in ITEMS[:12]]
    assert (lm.hits, lm.misses) == (5, 7)
    assert s.answered == {prompt(it): 1 for it in ITEMS[:12]}


class BatchLM:
    """A local-style teacher: an answer depends on its whole batch (size, position) and seed."""

    name = "batch"

    def __init__(self):
        self.batches = []

    def chat(self, chats, params):
        self.batches.append(len(chats))
        return [f"{c[-1]['content'][-9:]}|{len(chats)}|{i}|{params.seed}" for i, c in enumerate(chats)]


def test_local_teacher_resumed_mid_chunk_gives_identical_answers(tmp_path):
    full = simulate(ITEMS, BatchLM(), SPEC, PARAMS, tmp_path / "a.jsonl", chunk=CHUNK)
    lines = (tmp_path / "a.jsonl").read_text().splitlines(keepends=True)
    assert [json.loads(x)["id"] for x in lines] == [it["id"] for it in ITEMS]  # journal in order
    (tmp_path / "b.jsonl").write_text("".join(lines[:11]))  # killed 3 answers into chunk 1
    lm = BatchLM()
    resumed = simulate(ITEMS, lm, SPEC, PARAMS, tmp_path / "b.jsonl", chunk=CHUNK)
    assert resumed == full
    assert lm.batches == [CHUNK] * 4  # the partial chunk whole again, then the three left
    assert sorted(r["id"] for r in read_journal(tmp_path / "b.jsonl")) == sorted(EXPECTED)
