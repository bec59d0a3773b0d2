"""CachedLM: a persistent SQLite cache in front of any LM."""
from __future__ import annotations

import threading

import pytest

from adaptlab.lm.base import GenParams
from adaptlab.lm.cache import CachedLM


class FakeLM:
    """Counts calls; the answer is a function of the last message and the seed."""

    def __init__(self, name: str = "fake"):
        self.name = name
        self.calls: list[list] = []

    def chat(self, chats, params):
        self.calls.append(list(chats))
        return [f"{c[-1]['content']}!{params.seed}" for c in chats]


class FakeScorer(FakeLM):
    def score(self, chats, continuations):
        return [-float(len(c)) for c in continuations]


def q(*texts):
    return [[{"role": "user", "content": t}] for t in texts]


P = GenParams(max_new_tokens=16)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "nested" / "dir" / "cache.sqlite"


def test_second_call_costs_nothing(path):
    inner = FakeLM()
    lm = CachedLM(inner, path)
    first = lm.chat(q("a", "b", "c"), P)
    assert first == ["a!0", "b!0", "c!0"]
    assert lm.chat(q("a", "b", "c"), P) == first
    assert len(inner.calls) == 1
    assert (lm.hits, lm.misses) == (3, 3)
    assert lm.name == "fake"
    assert path.exists()


def test_partial_hits_send_only_misses_in_order(path):
    inner = FakeLM()
    lm = CachedLM(inner, path)
    lm.chat(q("b", "d"), P)
    out = lm.chat(q("a", "b", "c", "d", "e"), P)
    assert out == ["a!0", "b!0", "c!0", "d!0", "e!0"]
    assert inner.calls[-1] == q("a", "c", "e")
    assert len(inner.calls) == 2
    assert (lm.hits, lm.misses) == (2, 5)


def test_all_hits_do_not_call_inner(path):
    inner = FakeLM()
    lm = CachedLM(inner, path)
    lm.chat(q("x"), P)
    lm.chat(q("x", "x"), P)
    assert len(inner.calls) == 1


def test_duplicates_in_one_batch_are_asked_once(path):
    inner = FakeLM()
    lm = CachedLM(inner, path)
    assert lm.chat(q("a", "b", "a"), P) == ["a!0", "b!0", "a!0"]
    assert inner.calls == [q("a", "b")]


def test_different_params_or_model_miss(path):
    inner = FakeLM()
    lm = CachedLM(inner, path)
    lm.chat(q("a"), P)
    assert lm.chat(q("a"), GenParams(max_new_tokens=16, seed=1)) == ["a!1"]
    lm.chat(q("a"), GenParams(max_new_tokens=16, stop=("\n",)))
    lm.chat(q("a"), GenParams(max_new_tokens=17))
    assert len(inner.calls) == 4
    other = CachedLM(FakeLM("other-model"), path)
    other.chat(q("a"), P)
    assert other.misses == 1 and other.hits == 0


def test_new_instance_on_same_path_sees_earlier_results(path):
    CachedLM(FakeLM(), path).chat(q("a", "b"), P)
    inner = FakeLM()
    again = CachedLM(inner, path)
    assert again.chat(q("a", "b"), P) == ["a!0", "b!0"]
    assert inner.calls == []
    assert again.hits == 2


def test_inner_failure_keeps_earlier_batches(path):
    class Flaky(FakeLM):
        def chat(self, chats, params):
            if any(c[-1]["content"] == "boom" for c in chats):
                raise RuntimeError("down")
            return super().chat(chats, params)

    lm = CachedLM(Flaky(), path)
    lm.chat(q("a"), P)
    with pytest.raises(RuntimeError):
        lm.chat(q("boom"), P)
    inner = FakeLM()
    assert CachedLM(inner, path).chat(q("a"), P) == ["a!0"]
    assert inner.calls == []


def test_score_passthrough_only_when_inner_scores(path):
    assert not hasattr(CachedLM(FakeLM(), path), "score")
    lm = CachedLM(FakeScorer(), path)
    assert lm.score(q("a"), ["xyz"]) == [-3.0]


def test_threads_share_one_cache(path):
    inner = FakeLM()
    lm = CachedLM(inner, path)
    errors = []

    def work(k):
        try:
            for i in range(20):
                assert lm.chat(q(f"t{k}-{i}", "shared"), P) == [f"t{k}-{i}!0", "shared!0"]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert lm.hits + lm.misses == 4 * 20 * 2
