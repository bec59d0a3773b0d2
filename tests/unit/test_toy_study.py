"""A study defined only in this file, with no change to the kit: two stages, cached, resumed
after a SIGKILL. If the kit needs editing to host a new study, this test is where it shows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

from adaptlab.io import append_jsonl, read_journal, read_json, write_json, write_jsonl
from adaptlab.runs.declare import Out, Stage
from adaptlab.runs.study import run_study


@dataclass
class WordsConfig:
    upper: bool = False
    seed: int = 0


@dataclass
class ScoreConfig:
    weight: int = 2
    delay_s: float = 0.0
    seed: int = 0


@dataclass
class ToyConfig:
    name: str = "toy"
    words: str = "words.txt"
    upper: bool = False
    weight: int = 2
    delay_s: float = 0.0
    """Seconds per item in the second stage (so a test can kill it part-way)."""
    seed: int = 7


def words_stage(cfg: WordsConfig, inputs: dict, ctx) -> dict:
    words = Path(inputs["words"]).read_text().split()
    write_jsonl(ctx.dir / "items.jsonl", [{"id": i, "w": w.upper() if cfg.upper else w}
                                          for i, w in enumerate(words)])
    return {"items": len(words)}


def score_stage(cfg: ScoreConfig, inputs: dict, ctx) -> dict:
    """Journals each item's score as it goes: a killed run resumes where it stopped."""
    items = [json.loads(l) for l in Path(inputs["items"]).read_text().splitlines()]
    journal = ctx.work / "journal.jsonl"
    done = {r["id"]: r for r in read_journal(journal)}
    for it in items:
        if it["id"] in done:
            continue
        time.sleep(cfg.delay_s)
        row = {"id": it["id"], "score": cfg.weight * len(it["w"]), "pid": os.getpid()}
        append_jsonl(journal, [row])
        done[it["id"]] = row
    total = sum(r["score"] for r in done.values())
    write_json(ctx.dir / "total.json", {"total": total})
    ctx.section("Toy total", text=f"total {total}")
    return {"total": total}


def toy_stages(cfg: ToyConfig) -> list[Stage]:
    return [Stage("words", words_stage, WordsConfig(cfg.upper, cfg.seed), {"words": cfg.words}),
            Stage("score", score_stage, ScoreConfig(cfg.weight, cfg.delay_s, cfg.seed),
                  {"items": Out("words", "items.jsonl")})]


TOY = types.SimpleNamespace(Config=ToyConfig, check=lambda cfg: None, stages=toy_stages,
                            summary=lambda m: {"total": m["score"]["total"]})


def _setup(tmp_path, monkeypatch, n: int = 12):
    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    words = tmp_path / "words.txt"
    words.write_text(" ".join(f"w{'x' * i}" for i in range(n)))
    return ToyConfig(words=str(words))


def test_toy_study_runs_two_stages_then_is_cached(tmp_path, monkeypatch):
    cfg = _setup(tmp_path, monkeypatch)
    first = run_study("toy", TOY, cfg)
    assert first["stages_run"] == ["words", "score"]
    assert first["total"] == sum(2 * (1 + i) for i in range(12))
    again = run_study("toy", TOY, cfg)
    assert again["stages_run"] == [] and again["total"] == first["total"]
    m = read_json(tmp_path / "runs" / "toy" / "score" / "manifest.json")
    assert m["seed"] == 7 and m["config"]["config"]["weight"] == 2
    changed = run_study("toy", TOY, ToyConfig(words=cfg.words, weight=3))
    assert changed["stages_run"] == ["score"]  # words does not read weight


def test_toy_study_resumes_after_sigkill(tmp_path, monkeypatch):
    cfg = _setup(tmp_path, monkeypatch)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import test_toy_study as t; from adaptlab.runs.study import run_study; "
            f"run_study('toy', t.TOY, t.ToyConfig(words={cfg.words!r}, delay_s=0.3))")
    env = {**os.environ, "ADAPTLAB_RUNS": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    journal = tmp_path / "runs" / "toy" / "score" / "work" / "journal.jsonl"
    deadline = time.time() + 60
    while len(read_journal(journal)) < 4 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_journal(journal)
    assert 4 <= len(before) < 12, "the kill should land part-way through the score stage"
    assert not (journal.parent.parent / "manifest.json").exists()
    # delay_s is in the stage's key: resume with the same config, as a user reruns the command
    out = run_study("toy", TOY, ToyConfig(words=cfg.words, delay_s=0.3))
    assert out["stages_run"] == ["score"]  # words had finished before the kill
    rows = read_journal(journal)
    assert [r["id"] for r in rows] == list(range(12))  # nothing lost, nothing twice
    assert {r["pid"] for r in rows[: len(before)]} == {proc.pid}
    assert {r["pid"] for r in rows[len(before):]} == {os.getpid()}
    assert out["total"] == sum(2 * (1 + i) for i in range(12))


def test_dry_run_only_and_from(tmp_path, monkeypatch):
    import pytest

    from adaptlab.errors import AdaptlabError

    cfg = _setup(tmp_path, monkeypatch)
    status = lambda c: {r["stage"]: r["status"] for r in run_study("toy", TOY, c, dry=True)["stages"]}  # noqa: E731
    assert status(cfg) == {"words": "new", "score": "waiting"}
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    with pytest.raises(AdaptlabError, match="score: missing input items"):
        run_study("toy", TOY, cfg, only="score")  # its input comes from a stage not yet run
    assert run_study("toy", TOY, cfg, only="words")["stages_run"] == ["words"]
    assert status(cfg) == {"words": "cached", "score": "new"}
    assert run_study("toy", TOY, cfg, start="score")["stages_run"] == ["score"]
    assert status(ToyConfig(words=cfg.words, upper=True)) == {"words": "stale", "score": "cached"}
    assert run_study("toy", TOY, cfg, start="words", force=True)["stages_run"] == ["words", "score"]
    with pytest.raises(AdaptlabError, match="no stage 'nope'; stages: words, score"):
        run_study("toy", TOY, cfg, only="nope")


def test_cli_dry_run_lists_the_tone_stages(capsys):
    from adaptlab.cli import main

    assert main(["run", "recipes/tone.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for stage in ("split", "judges", "simulate", "tune-fp32-n100", "evaluate", "curves", "report"):
        assert stage in out
