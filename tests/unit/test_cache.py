"""CachedLM: a persistent SQLite cache in front of any LM."""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading

import pytest

from adaptlab.evaluate.judges import LLMJudge
from adaptlab.lm.base import LM, AdapterHost, ChoiceScorer, GenParams, Scorer, supports
from adaptlab.lm.cache import CachedLM
from adaptlab.lm.fake import FakeLM as FullFake


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


def test_score_only_when_inner_scores(path):
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


# -- capabilities: forwarded only when the inner LM has them, and cached ----------------------
def asked(inner: FullFake, method: str) -> list[list]:
    """The inputs of each call of `method` that reached `inner`."""
    return [items for m, items in inner.log if m == method]


def test_capabilities_are_exactly_the_inner_ones(path):
    gen_only = CachedLM(FakeLM(), path)
    assert supports(gen_only, LM)
    assert not any(supports(gen_only, p) for p in (Scorer, ChoiceScorer, AdapterHost))
    scorer_only = CachedLM(FakeScorer(), path)
    assert supports(scorer_only, Scorer) and isinstance(scorer_only, Scorer)
    assert not supports(scorer_only, ChoiceScorer) and not supports(scorer_only, AdapterHost)
    full = CachedLM(FullFake(), path)
    assert all(isinstance(full, p) for p in (LM, Scorer, ChoiceScorer, AdapterHost))


def test_score_is_cached_only_misses_reach_inner_in_order(path):
    inner = FullFake()
    lm = CachedLM(inner, path)
    chats, conts = q("a", "b", "c", "d"), ["w x", "y", "z z z", "v"]
    expected = FullFake().score(chats, conts)
    assert lm.score(chats[1:3], conts[1:3]) == expected[1:3]
    assert lm.score(chats, conts) == expected
    assert asked(inner, "score") == [list(zip(chats[1:3], conts[1:3])),
                                      [(chats[0], conts[0]), (chats[3], conts[3])]]
    assert lm.score(chats[::-1], conts[::-1]) == expected[::-1]
    assert len(asked(inner, "score")) == 2  # all hits: inner not called
    assert lm.score([], []) == [] and len(asked(inner, "score")) == 2


def test_score_keys_on_model_chat_and_continuation(path):
    inner = FullFake()
    lm = CachedLM(inner, path)
    lm.score(q("a"), ["x"])
    lm.score(q("a"), ["other"])
    lm.score(q("b"), ["x"])
    CachedLM(FullFake(name="other-model"), path).score(q("a"), ["x"])
    assert len(asked(inner, "score")) == 3
    lm.score(q("a", "b"), ["other", "x"])
    assert len(asked(inner, "score")) == 3


def test_repeated_items_in_one_call_are_computed_once(path):
    inner = FullFake()
    lm = CachedLM(inner, path)
    out = lm.score(q("a", "b", "a"), ["x", "y", "x"])
    assert out[0] == out[2]
    assert asked(inner, "score") == [[(q("a")[0], "x"), (q("b")[0], "y")]]
    rows = lm.choice_logprobs(q("a", "a", "b"), ["Yes", "No"])
    assert rows[0] == rows[1] and rows[0] != rows[2]
    assert asked(inner, "choice_logprobs") == [[(q("a")[0], ["Yes", "No"]), (q("b")[0], ["Yes", "No"])]]


def test_choice_logprobs_are_cached_per_chat_and_options(path):
    inner = FullFake()
    lm = CachedLM(inner, path)
    expected = FullFake().choice_logprobs(q("a", "b", "c"), ["A", "B", "C"])
    assert lm.choice_logprobs(q("b"), ["A", "B", "C"]) == expected[1:2]
    assert lm.choice_logprobs(q("a", "b", "c"), ["A", "B", "C"]) == expected
    assert [[c for c, _ in items] for items in asked(inner, "choice_logprobs")] == [q("b"), q("a", "c")]
    assert lm.choice_logprobs(q("c", "a"), ["A", "B", "C"]) == [expected[2], expected[0]]
    assert len(asked(inner, "choice_logprobs")) == 2
    lm.choice_logprobs(q("a"), ["A", "B"])  # other options: a miss
    lm.choice_logprobs(q("a"), ["B", "A", "C"])  # order of options matters too
    assert len(asked(inner, "choice_logprobs")) == 4


class Exact:
    """Results that a rounding float encoding would change (and -inf, which strict JSON lacks)."""

    name = "exact"
    VALUES = [0.1 + 0.2, -1e-300, -math.inf, -1 / 3, -5e-324, 0.0]

    def __init__(self):
        self.calls = 0

    def chat(self, chats, params):
        return ["" for _ in chats]

    def score(self, chats, continuations):
        self.calls += 1
        return [self.VALUES[int(t)] for t in continuations]

    def choice_logprobs(self, chats, options):
        self.calls += 1
        return [[self.VALUES[int(c[-1]["content"])]] + [self.VALUES[int(o)] for o in options]
                for c in chats]


def test_results_are_exact_and_survive_reopening_the_file(path):
    idx = [str(i) for i in range(len(Exact.VALUES))]
    first = CachedLM(Exact(), path)
    scores = first.score(q(*idx), idx)
    choices = first.choice_logprobs(q(*idx), ["1", "2"])
    first.close()
    inner = Exact()
    again = CachedLM(inner, path)
    assert again.score(q(*idx), idx) == scores == Exact.VALUES
    assert again.choice_logprobs(q(*idx), ["1", "2"]) == choices
    assert choices == [[v, Exact.VALUES[1], Exact.VALUES[2]] for v in Exact.VALUES]
    assert inner.calls == 0
    assert all(type(v) is float for v in again.score(q("0"), ["0"]))


def test_inner_returning_too_few_results_is_an_error_not_a_cache_entry(path):
    class Short(FakeLM):
        def score(self, chats, continuations):
            return [0.0]

    lm = CachedLM(Short(), path)
    with pytest.raises(RuntimeError, match="1 results for 2 inputs"):
        lm.score(q("a", "b"), ["x", "y"])
    with pytest.raises(ValueError):
        lm.score(q("a", "b"), ["x"])


def test_llm_judge_uses_yes_no_on_a_cached_generation_only_lm(path):
    class GenOnly(FakeLM):
        def chat(self, chats, params):
            super().chat(chats, params)
            return ["Yes" if "you" in c[-1]["content"].split('"""')[1] else "No" for c in chats]

    inner = GenOnly()
    judge = LLMJudge(CachedLM(inner, path), "talks to you")
    s = judge.score(["Here's what you do.", "The procedure is as follows."])
    assert s[0] > 0.5 > s[1] and len(inner.calls) == 1


def test_llm_judge_scores_through_the_cache_on_a_scorer(path):
    inner = FullFake()
    lm = CachedLM(inner, path)
    texts = ["Here's what you do.", "The procedure is as follows."]
    first = LLMJudge(lm, "talks to you").score(texts)
    assert LLMJudge(lm, "talks to you").score(texts) == first
    assert [m for m, _ in inner.log] == ["score"]  # contrastive path, asked once, no generation


# -- adapters ---------------------------------------------------------------------------------
def adapter(tmp_path, name: str, weights: bytes):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(weights)
    return str(d)


def test_set_adapter_renames_so_other_weights_miss(tmp_path, path):
    a, b = adapter(tmp_path, "a", b"weights A"), adapter(tmp_path, "b", b"weights B")
    inner = FullFake()
    lm = CachedLM(inner, path)
    lm.chat(q("hi"), P)
    lm.score(q("hi"), ["x"])
    lm.set_adapter(a)
    assert inner.adapter == a
    assert lm.name == inner.name == "fake+" + hashlib.sha256(b"weights A").hexdigest()[:16]
    lm.chat(q("hi"), P)
    lm.score(q("hi"), ["x"])
    assert inner.calls == 2 and len(asked(inner, "score")) == 2
    lm.set_adapter(b)
    lm.chat(q("hi"), P)
    assert inner.calls == 3
    lm.set_adapter(a)
    lm.chat(q("hi"), P)
    lm.score(q("hi"), ["x"])
    assert inner.calls == 3 and len(asked(inner, "score")) == 2
    lm.set_adapter(None)
    assert lm.name == "fake"
    lm.chat(q("hi"), P)
    assert inner.calls == 3 and (lm.hits, lm.misses) == (2, 3)


def test_adapter_is_named_by_content_not_path(tmp_path, path):
    a = adapter(tmp_path, "a", b"step 10")
    inner = FullFake()
    lm = CachedLM(inner, path)
    lm.set_adapter(a)
    lm.chat(q("hi"), P)
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"step 20")  # retrained in place
    lm.set_adapter(a)
    lm.chat(q("hi"), P)
    assert inner.calls == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    lm.set_adapter(str(empty))
    assert lm.name == "fake+none"


# -- the answers table is unchanged, so existing caches stay valid -----------------------------
def test_answers_key_and_table_unchanged(path):
    chat = q("a")[0]
    old_key = hashlib.sha256(json.dumps(
        {"model": "fake", "chat": chat, "params": P.to_dict()}, sort_keys=True).encode("utf-8")).hexdigest()
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(str(path))  # a cache written before scores were cached
    db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL)")
    db.execute("INSERT INTO answers VALUES (?, ?)", (old_key, "from an old run"))
    db.commit()
    db.close()
    inner = FakeLM()
    lm = CachedLM(inner, path)
    assert lm.key(chat, P) == old_key
    assert lm.chat([chat], P) == ["from an old run"] and inner.calls == []
