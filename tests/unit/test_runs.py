"""Runs: stages keyed by config + input content; skip when done, resume when killed."""
from __future__ import annotations

import pytest

from adaptlab.io import read_json
from adaptlab.runs import Run
from adaptlab.runs.index import RunIndex


class Killed(Exception):
    pass


class Stage:
    """A stage function that counts calls, journals its work, and can be told to die."""

    def __init__(self, die: bool = False):
        self.calls = 0
        self.die = die
        self.seen_work: list[list[str]] = []

    def __call__(self, sdir, work):
        self.calls += 1
        self.seen_work.append(sorted(p.name for p in work.iterdir() if not p.name.startswith(".")))
        with open(work / "journal.txt", "a") as f:
            f.write(f"call {self.calls}\n")
        if self.die:
            raise Killed
        (sdir / "out.txt").write_text("result")
        return {"score": 0.75, "n": self.calls}


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text("one\n")
    return p


def test_stage_runs_then_skips(tmp_path, data):
    run = Run("r1", root=tmp_path / "runs")
    fn = Stage()
    first = run.stage("train", {"lr": 0.1}, {"data": data}, fn, seed=3)
    assert fn.calls == 1
    assert not first.skipped and first.metrics == {"score": 0.75, "n": 1}
    assert first.dir == tmp_path / "runs" / "r1" / "train"
    m = read_json(first.dir / "manifest.json")
    assert m["metrics"] == first.metrics and m["seed"] == 3 and m["config"] == {"lr": 0.1}
    assert m["inputs"]["data"]["path"] == str(data)

    second = Run("r1", root=tmp_path / "runs").stage("train", {"lr": 0.1}, {"data": data}, fn)
    assert fn.calls == 1  # not called again
    assert second.skipped and second.metrics == first.metrics
    assert (second.dir / "out.txt").read_text() == "result"


def test_config_change_reruns(tmp_path, data):
    run = Run("r", root=tmp_path)
    fn = Stage()
    run.stage("s", {"lr": 0.1}, {"data": data}, fn)
    res = run.stage("s", {"lr": 0.2}, {"data": data}, fn)
    assert fn.calls == 2 and not res.skipped and res.metrics["n"] == 2
    assert run.stage("s", {"lr": 0.2}, {"data": data}, fn).skipped
    assert fn.calls == 2


def test_input_content_change_reruns(tmp_path, data):
    run = Run("r", root=tmp_path)
    fn = Stage()
    run.stage("s", {}, {"data": data}, fn)
    data.write_text("one\n")  # rewritten, same content: still up to date
    assert run.stage("s", {}, {"data": data}, fn).skipped
    data.write_text("two\n")
    res = run.stage("s", {}, {"data": data}, fn)
    assert not res.skipped and fn.calls == 2


def test_input_dir_content_change_reruns(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "w").write_text("1")
    run = Run("r", root=tmp_path / "runs")
    fn = Stage()
    run.stage("s", {}, {"model": d}, fn)
    assert run.stage("s", {}, {"model": d}, fn).skipped
    (d / "w").write_text("2")
    assert not run.stage("s", {}, {"model": d}, fn).skipped
    assert fn.calls == 2


def test_killed_stage_leaves_no_manifest_and_resumes(tmp_path, data):
    run = Run("r", root=tmp_path)
    dying = Stage(die=True)
    with pytest.raises(Killed):
        run.stage("s", {"lr": 0.1}, {"data": data}, dying)
    sdir = tmp_path / "r" / "s"
    assert not (sdir / "manifest.json").exists()
    assert (sdir / "work" / "journal.txt").read_text() == "call 1\n"

    fn = Stage()
    res = Run("r", root=tmp_path).stage("s", {"lr": 0.1}, {"data": data}, fn)
    assert fn.calls == 1 and not res.skipped
    assert fn.seen_work == [["journal.txt"]]  # the work from before the kill is still there
    assert (sdir / "work" / "journal.txt").read_text() == "call 1\ncall 1\n"
    assert (sdir / "manifest.json").exists()


def test_config_change_wipes_stale_work(tmp_path, data):
    run = Run("r", root=tmp_path)
    with pytest.raises(Killed):
        run.stage("s", {"lr": 0.1}, {"data": data}, Stage(die=True))
    sdir = tmp_path / "r" / "s"
    (sdir / "partial-output.bin").write_bytes(b"x")
    fn = Stage()
    run.stage("s", {"lr": 0.5}, {"data": data}, fn)
    assert fn.seen_work == [[]]  # started clean
    assert (sdir / "work" / "journal.txt").read_text() == "call 1\n"
    assert not (sdir / "partial-output.bin").exists()


def test_rerun_after_finished_stage_with_new_key_starts_clean(tmp_path, data):
    run = Run("r", root=tmp_path)
    run.stage("s", {"lr": 0.1}, {"data": data}, Stage())
    fn = Stage()
    run.stage("s", {"lr": 0.2}, {"data": data}, fn)
    assert fn.seen_work == [[]]
    assert read_json(tmp_path / "r" / "s" / "manifest.json")["config"] == {"lr": 0.2}


def test_stages_are_independent(tmp_path, data):
    run = Run("r", root=tmp_path)
    a, b = Stage(), Stage()
    run.stage("a", {}, {"data": data}, a)
    run.stage("b", {}, {"data": data}, b)
    assert run.stage("a", {}, {"data": data}, a).skipped
    assert (a.calls, b.calls) == (1, 1)
    assert set(run.timings) == {"a", "b"} and run.timings["a"] == 0.0


def test_stage_returning_none_records_empty_metrics(tmp_path):
    run = Run("r", root=tmp_path)
    res = run.stage("s", {}, {}, lambda sdir, work: None)
    assert res.metrics == {}
    assert run.stage("s", {}, {}, lambda sdir, work: pytest.fail("should be skipped")).skipped


def test_recipe_is_written(tmp_path):
    Run("r", root=tmp_path, recipe={"study": "tune", "lr": 0.1})
    assert read_json(tmp_path / "r" / "recipe.resolved.json") == {"study": "tune", "lr": 0.1}


def test_runs_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "elsewhere"))
    run = Run("envrun")
    assert run.dir == tmp_path / "elsewhere" / "envrun" and run.dir.is_dir()


def test_index_lists_runs_with_metrics(tmp_path, data):
    a = Run("alpha", root=tmp_path, study="tone")
    b = Run("beta", root=tmp_path, study="tune")
    res = a.stage("s", {}, {"data": data}, Stage())
    a.finish({"accuracy": 0.9, **res.metrics})
    rows = {r["name"]: r for r in RunIndex(tmp_path / "index.sqlite").list()}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"]["status"] == "done"
    assert rows["alpha"]["metrics"] == {"accuracy": 0.9, "score": 0.75, "n": 1}
    assert rows["alpha"]["study"] == "tone" and rows["alpha"]["dir"] == str(tmp_path / "alpha")
    assert rows["alpha"]["finished"]
    assert rows["beta"]["status"] == "running" and rows["beta"]["metrics"] == {}
    assert rows["beta"]["finished"] is None
    b.finish({"loss": 1.5})
    rows = {r["name"]: r for r in RunIndex(tmp_path / "index.sqlite").list()}
    assert rows["beta"]["metrics"] == {"loss": 1.5} and rows["beta"]["status"] == "done"


def test_index_restart_marks_running_again(tmp_path):
    Run("x", root=tmp_path).finish({"m": 1})
    Run("x", root=tmp_path)
    (row,) = RunIndex(tmp_path / "index.sqlite").list()
    assert row["status"] == "running"


def test_index_missing_file_lists_nothing(tmp_path):
    idx = RunIndex(tmp_path / "sub" / "index.sqlite")
    assert idx.list() == []
    (idx.path).unlink()
    assert idx.list() == []
