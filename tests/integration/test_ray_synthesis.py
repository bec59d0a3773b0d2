"""The Ray path (BackendConfig.ray_workers) on a real local Ray: 2 worker processes, a fake backend.

Checks that the merged output equals one process's, in input order, each chat answered once;
that a worker process killed in the middle of a shard has the shard answered again by its
restarted copy, with the output still complete and equal; and that the call cache and the
teacher stage's journal work in front of it. The fakes answer from the chat alone, so any lost,
repeated or misplaced answer shows.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

# Ray's one-machine mode: every Ray process on the loopback address, not this machine's network
# address (read when ray is imported; Ray's own processes inherit it)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # (off for ray.init() already: stay so)
ray = pytest.importorskip("ray")

import adaptlab.lm.registry as registry  # noqa: E402
from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.lm.base import GenParams, chat_each  # noqa: E402
from adaptlab.lm.config import BackendConfig  # noqa: E402
from adaptlab.lm.registry import make_lm  # noqa: E402
from adaptlab.synth.simulate import ToneSpec, simulate  # noqa: E402

P = GenParams(max_new_tokens=16, seed=3)


def reply(chat, params) -> str:
    text = chat[-1]["content"]
    return f"{text[::-1]} #{hashlib.sha256(f'{text}|{params.seed}'.encode()).hexdigest()[:8]}"


class LoggingLM:
    """Answers with `reply`; appends `<pid> <contents...>` to `log` for every batch it answers.
    On the first batch holding a chat that contains DIE it kills its own process instead,
    once: the `marker` file (it holds the dead pid) is shared by all the workers."""

    def __init__(self, log: Path, marker: Path):
        self.name, self.log, self.marker = "fake:logging", log, marker

    def chat(self, chats, params):
        if any("DIE" in c[-1]["content"] for c in chats) and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # no exception, no clean-up: as if the process were killed
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(" ".join([str(os.getpid())] + [c[-1]["content"] for c in chats]) + "\n")
        return [reply(c, params) for c in chats]


def logging_factory(cfg, log, marker, **kwargs):
    return LoggingLM(Path(log), Path(marker))


class EachLM:
    """A backend that answers each chat on its own (as HTTP ones do): `answers_each`."""

    name, answers_each = "fake:each", True

    def chat(self, chats, params, on_result=None):
        return [reply(c, params) for c in chats]


def broken_factory(cfg, **kwargs):
    raise AdaptlabError(f"model {cfg.model!r} is not installed")


@pytest.fixture(scope="module")
def local_ray():
    # the fakes above live in this test module, which the workers cannot import: send them whole
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    saved = dict(registry.BACKENDS)
    registry.register_backend("fake-logging", logging_factory)
    registry.register_backend("fake-each", lambda cfg, **kwargs: EachLM())
    registry.register_backend("fake-broken", broken_factory)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()
    registry.BACKENDS.clear()
    registry.BACKENDS.update(saved)
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def chats(n: int, die_at: int | None = None) -> list:
    return [[{"role": "system", "content": "Be brief."},
             {"role": "user", "content": f"q{i:02d}" + ("DIE" if i == die_at else "")}]
            for i in range(n)]


def worker_log(path: Path) -> list[tuple[int, list[str]]]:
    rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    return [(int(r[0]), r[1:]) for r in rows]


def ray_lm(tmp_path, cache=None, **cfg):
    cfg = BackendConfig(model="m", backend="fake-logging", ray_workers=2, batch_size=8, **cfg)
    return make_lm(cfg, cache, log=str(tmp_path / "log"), marker=str(tmp_path / "marker"))


def single(chs, params=P) -> list[str]:
    return [reply(c, params) for c in chs]


def test_merged_output_is_the_single_process_output(local_ray, tmp_path):
    lm = ray_lm(tmp_path)
    try:
        assert type(lm).__name__ == "RayLM" and lm.name == "fake:logging"
        cs = chats(40)
        assert lm.chat(cs, P) == single(cs)
        log = worker_log(tmp_path / "log")
        assert len({pid for pid, _ in log}) == 2  # both workers answered shards
        assert sorted(len(qs) for _, qs in log) == [8] * 5  # shards of batch_size
        assert sorted(q for _, qs in log for q in qs) == [c[-1]["content"] for c in cs]
        assert lm.chat(cs[:3], P) == single(cs[:3])  # a call smaller than the workers' number
        assert lm.chat([], P) == []
    finally:
        lm.close()


def test_a_killed_workers_shard_is_answered_again(local_ray, tmp_path):
    lm = ray_lm(tmp_path, ray_task_retries=2)
    try:
        cs = chats(40, die_at=13)
        assert lm.chat(cs, P) == single(cs)
        dead = int((tmp_path / "marker").read_text())
        log = worker_log(tmp_path / "log")
        # each chat answered exactly once: the dying shard left nothing behind, then came again
        assert sorted(q for _, qs in log for q in qs) == [c[-1]["content"] for c in cs]
        (retried,) = [pid for pid, qs in log if "q13DIE" in qs]
        assert retried != dead and dead not in {pid for pid, _ in log}
        assert lm.chat(cs, P) == single(cs)  # the pool works on after the restart
    finally:
        lm.close()


def test_call_cache_and_journal_in_front(local_ray, tmp_path):
    items = [{"id": f"i{k}", "facts": f"fact {k}", "question": f"question {k}?"} for k in range(20)]
    spec = ToneSpec()
    lm = ray_lm(tmp_path, cache=tmp_path / "cache.sqlite")
    try:
        rows = simulate(items, lm, spec, P, tmp_path / "journal.jsonl", chunk=8)
        want = simulate(items, _Local(), spec, P, tmp_path / "single.jsonl", chunk=8)
        assert rows == want and len((tmp_path / "journal.jsonl").read_text().splitlines()) == 20
        assert (lm.hits, lm.misses) == (0, 20)
        again = simulate(items, lm, spec, P, tmp_path / "journal2.jsonl", chunk=8)
        assert again == rows and (lm.hits, lm.misses) == (20, 20)  # the workers were not asked
    finally:
        lm.inner.close()


def test_answers_each_backends_stream_each_answer_once(local_ray, tmp_path):
    cfg = BackendConfig(model="m", backend="fake-each", ray_workers=2, batch_size=4)
    lm = make_lm(cfg, tmp_path / "cache.sqlite")
    try:
        assert lm.answers_each and lm.name == "fake:each"
        got: list[tuple[int, str]] = []
        cs = chats(18)
        assert chat_each(lm, cs, P, lambda i, t: got.append((i, t))) == single(cs)
        assert sorted(got) == list(enumerate(single(cs)))  # every index once, its own answer
    finally:
        lm.inner.close()


def test_a_backend_that_fails_to_build_is_a_one_line_error(local_ray):
    cfg = BackendConfig(model="m", backend="fake-broken", ray_workers=2)
    with pytest.raises(AdaptlabError) as e:
        make_lm(cfg)
    assert str(e.value) == ("ray worker: backend 'fake-broken' failed to start: "
                            "adaptlab.errors.AdaptlabError: model 'm' is not installed")


@pytest.mark.slow
def test_local_transformers_backend_over_two_workers(local_ray):
    """The real local backend, one model copy per worker, greedy: one process's answers."""
    from adaptlab.models.registry import PACKAGED, source_files

    if source_files(PACKAGED["smollm2-135m-instruct"]) is None:
        pytest.skip("smollm2-135m-instruct not installed")
    cfg = BackendConfig(model="smollm2-135m-instruct", precision="fp32", batch_size=4)
    cs = [[{"role": "user", "content": q}] for q in
          ("What colour is the sky?", "Name a fruit.", "What do bees make?", "Who wrote Hamlet?")]
    p = GenParams(max_new_tokens=12)
    want = make_lm(cfg).chat(cs, p)
    assert all(want)
    lm = make_lm(BackendConfig(**{**cfg.__dict__, "ray_workers": 2}))
    try:
        assert lm.name == "local:smollm2-135m-instruct:fp32"
        assert lm.chat(cs, p) == want
    finally:
        lm.close()


class _Local:
    """The same answers in this process."""

    name = "fake:logging"

    def chat(self, chs, params):
        return single(chs, params)
