"""Kill and resume: SIGKILL a real tone-study run at random points, resume it, compare.

Each trial starts `adaptlab run` on a tiny recipe (the packaged student as teacher, judge and
student; sampling at temperature 0.8 in synthesis), waits inside one target stage (simulate, tune
or evaluate) until it has kept some work to resume from (journal lines, a checkpoint, cached
calls), kills it with SIGKILL at a random moment after that, records what was kept at the kill,
checks that no final file is half-written, resumes the run to the end and compares every output
with an uninterrupted reference run: simulated data, adapter bytes, training logs, answers and
metrics. The resumed run must have built on what was kept: its own log (not the killed run's)
says so for simulate ("N done earlier") and tune ("resuming ... from step K"); for evaluate,
every call cached before the kill is still the same SQLite row afterwards (a call asked again
would have replaced it).

To keep a trial short, the finished stages *before* the target are copied from the reference run
(they are skipped, as a resumed run would skip them); the call cache is never copied, so every
answer of the target stage and after is generated again.

The default suite runs one trial per stage, each running the target stage alone (`--only`) and
comparing its outputs; `-m slow` runs 12 (four per stage), each resuming the whole run to the end
and comparing everything.
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["split", "judges", "simulate", "tune-fp32-n4", "evaluate", "curves", "report"]
TARGETS = ["simulate", "tune-fp32-n4", "evaluate"]

RECIPE = f"""\
study: tone
name: tiny
corpus: {ROOT / 'corpora/tone/passages.jsonl'}
calibration: {ROOT / 'corpora/tone/calibration.jsonl'}
teacher: {{model: smollm2-135m-instruct, batch_size: 2}}
judge: {{model: smollm2-135m-instruct, batch_size: 8}}
judge_calibration_limit: 8
split: {{eval_questions: 3, val_questions: 2, train_questions: 8}}
filters: {{min_tone: 0.0, min_topic_sim: 0.0}}
teacher_temperature: 0.8
train_sizes: [4]
main_size: 4
tune: {{max_steps: 6, batch_size: 2, save_every: 1}}
curve_every: 3
max_new_tokens: 20
"""


def _env(runs: Path) -> dict:
    return {**os.environ, "ADAPTLAB_RUNS": str(runs), "ADAPTLAB_PROGRESS": "0"}


def _cmd(recipe: Path, only: str | None = None) -> list[str]:
    return [sys.executable, "-m", "adaptlab.cli", "run", str(recipe)] + (["--only", only] if only else [])


def _run_to_end(recipe: Path, runs: Path, log: Path, only: str | None = None) -> None:
    with open(log, "a") as f:
        r = subprocess.run(_cmd(recipe, only), env=_env(runs), stdout=f, stderr=f, timeout=900)
    assert r.returncode == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run; its stage timings place the kill points of the trials."""
    d = tmp_path_factory.mktemp("reference")
    recipe = d / "tiny.yaml"
    recipe.write_text(RECIPE)
    _run_to_end(recipe, d / "runs", d / "log.txt")
    run = d / "runs" / "tiny"
    seconds = {s: json.loads((run / s / "manifest.json").read_text())["seconds"] for s in STAGES}
    return {"dir": run, "recipe": recipe, "seconds": seconds}


# -- what "the same outputs" means ---------------------------------------------------------------
def _rows_without_time(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _without_time(x):
    """Drop wall-clock fields (timings_s, seconds) at any depth, and `seconds` columns of tables."""
    if isinstance(x, dict) and isinstance(x.get("cols"), list) and "seconds" in x["cols"]:
        keep = [i for i, c in enumerate(x["cols"]) if c != "seconds"]
        x = {**x, "cols": [x["cols"][i] for i in keep],
             "rows": [[r[i] for i in keep] for r in x["rows"]]}
    if isinstance(x, dict):
        return {k: _without_time(v) for k, v in x.items() if k not in ("timings_s", "seconds")}
    if isinstance(x, list):
        return [_without_time(v) for v in x]
    return x


def _report_without_time(path: Path) -> dict:
    """report.json, wall clock left out; paths into the run dir (its images) relative to it."""
    run = str(path.parent.parent)
    return _without_time(json.loads(path.read_text().replace(json.dumps(run)[1:-1], "<run>")))


OWN = {"simulate": ("simulated", "train", "filters"),
       "tune-fp32-n4": ("adapter", "adapter_config", "loss", "curve"),
       "evaluate": ("answers", "metrics")}
"""The outputs each target stage writes (what a trial run with --only must reproduce)."""


def outputs(run: Path, keys=None) -> dict:
    """Everything a resumed run must reproduce exactly (wall-clock fields left out); `keys`: only
    those."""
    tune = run / "tune-fp32-n4"
    readers = {
        "split": lambda: {p.name: p.read_bytes() for p in sorted((run / "split").glob("*.jsonl"))},
        "judges": lambda: (run / "judges" / "judges.json").read_bytes(),
        "simulated": lambda: (run / "simulate" / "candidates.jsonl").read_bytes(),
        "train": lambda: (run / "simulate" / "train.jsonl").read_bytes(),
        "filters": lambda: (run / "simulate" / "filter_stats.json").read_bytes(),
        "adapter": lambda: (tune / "adapter_model.safetensors").read_bytes(),
        "adapter_config": lambda: (tune / "adapter_config.json").read_bytes(),
        "loss": lambda: _rows_without_time(tune / "loss.csv"),
        "curve": lambda: _rows_without_time(tune / "eval.csv"),
        "answers": lambda: (run / "evaluate" / "answers.jsonl").read_bytes(),
        "metrics": lambda: (run / "evaluate" / "metrics.json").read_bytes(),
        "report": lambda: _report_without_time(run / "report" / "report.json"),
    }
    return {k: f() for k, f in readers.items() if keys is None or k in keys}


def assert_no_torn_final_files(run: Path) -> int:
    """Outside work/ dirs and dot-files (journals, checkpoints, temp files), every file parses."""
    from safetensors import safe_open

    checked = 0
    for p in run.rglob("*"):
        rel = p.relative_to(run).parts
        if not p.is_file() or "work" in rel or any(s.startswith(".") for s in rel):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            text = p.read_text()
            assert text.endswith("\n"), f"{p}: torn last line"
            [json.loads(line) for line in text.splitlines()]
        elif p.suffix == ".safetensors":
            with safe_open(str(p), "pt") as f:
                [f.get_tensor(k) for k in f.keys()]
        elif p.suffix == ".csv":
            assert p.read_text().endswith("\n"), f"{p}: torn last row"
        else:
            continue
        checked += 1
    return checked


# -- what a killed stage kept -------------------------------------------------------------------
def _journal_ids(path: Path) -> set:
    """Ids of the whole lines of a journal (a torn last line is dropped, as the stage drops it)."""
    ids = set()
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            ids.add(json.loads(line)["id"])
        except (ValueError, KeyError):
            break
    return ids


def _checkpoint_steps(stage: Path) -> list[int]:
    found = [*stage.glob("checkpoints/step-*"), *stage.glob("work/checkpoints/step-*")]
    return sorted(int(p.name[5:]) for p in found if p.is_dir())


def _cache_rows(db: Path) -> dict:
    """(table, key) -> SQLite rowid of every cached call. The cache stores only calls it missed,
    with INSERT OR REPLACE: a call asked again would come back under a new rowid."""
    if not db.exists():
        return {}
    rows = {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        for table in ("answers", "scores", "choices"):
            try:
                rows |= {(table, k): r for k, r in con.execute(f"SELECT key, rowid FROM {table}")}
            except sqlite3.Error:  # not created yet, or the writer is setting it up
                pass
    finally:
        con.close()
    return rows


def kept(run: Path, target: str) -> dict | None:
    """What a resumed `target` can build on, or None while there is nothing yet."""
    if target == "simulate":
        n = len(_journal_ids(run / target / "work" / "journal.jsonl"))
        return {"journal_answers": n} if n else None
    if target.startswith("tune"):
        steps = _checkpoint_steps(run / target)
        return {"checkpoint_step": steps[-1]} if steps else None
    rows = _cache_rows(run / "cache.sqlite")
    return {"cached_calls": len(rows), "rows": rows} if rows else None


def assert_resumed_from(target: str, at_kill: dict, run: Path, log2: str) -> None:
    """The second run built on what the killed one kept, by its own log or its cache."""
    tail = "\n--- the resumed run's log ---\n" + log2[-3000:]
    assert f"tiny/{target}: running" in log2, f"{target} did not run again" + tail
    if target == "simulate":
        n = at_kill["journal_answers"]
        assert f"simulate: {n} done earlier," in log2, \
            f"the resumed run did not take the {n} journaled answers" + tail
    elif target.startswith("tune"):
        step = at_kill["checkpoint_step"]
        assert any("resuming" in line and target in line and line.endswith(f"from step {step}")
                   for line in log2.splitlines()), \
            f"the resumed run did not resume from the step-{step} checkpoint" + tail
    else:
        after = _cache_rows(run / "cache.sqlite")
        asked_again = {k for k, r in at_kill["rows"].items() if after.get(k) != r}
        assert not asked_again, (f"{len(asked_again)} of the {len(at_kill['rows'])} calls cached "
                                 "before the kill were made again")


# -- one trial ------------------------------------------------------------------------------------
def _wait_for(cond, proc, log: Path, what: str, timeout: float = 300, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (found := cond()):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(poll)
    return found


def kill_trial(reference: dict, tmp: Path, target: str, rng: random.Random,
               only: bool = False) -> dict:
    """One trial; `only`: the killed and the resumed run do the target stage alone (`--only`),
    and only its outputs are compared (the stages after it would redo the same work)."""
    runs = tmp / "runs"
    run = runs / "tiny"
    run.mkdir(parents=True)
    for s in STAGES[: STAGES.index(target)]:
        shutil.copytree(reference["dir"] / s, run / s)
    recipe = tmp / "tiny.yaml"
    shutil.copy(reference["recipe"], recipe)
    log1, log2 = tmp / "killed.log", tmp / "resumed.log"
    stage_done = run / target / "manifest.json"
    with open(log1, "w") as f:
        proc = subprocess.Popen(_cmd(recipe, target if only else None), env=_env(runs),
                                stdout=f, stderr=f)
        try:
            _wait_for(lambda: (run / target / "work" / ".key").exists(), proc, log1, f"{target} start")
            t0 = time.monotonic()
            # Kill only once there is something to resume from, then anywhere in what is left of
            # the stage (its time in the reference run includes loading models).
            _wait_for(lambda: kept(run, target) or stage_done.exists(), proc, log1,
                      f"{target} keeping work", poll=0.02 if target != "evaluate" else 0.1)
            left = max(0.0, reference["seconds"][target] - (time.monotonic() - t0))
            delay = rng.uniform(0.0, 0.8) * left
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
    # Where did it land? The first stage without a manifest is the one that was killed.
    killed_in = next((s for s in STAGES if not (run / s / "manifest.json").exists()), None)
    at_kill = kept(run, target) if killed_in == target else None
    checked = assert_no_torn_final_files(run)
    _run_to_end(recipe, runs, log2, target if only else None)
    if at_kill is not None:
        assert_resumed_from(target, at_kill, run, log2.read_text())
    keys = OWN[target] if only else None
    got, want = outputs(run, keys), outputs(reference["dir"], keys)
    assert set(got) == set(want) and got
    differ = sorted(k for k in want if got[k] != want[k])
    return {"target": target, "delay_s": round(delay, 2), "killed_in": killed_in,
            "kept_at_kill": {k: v for k, v in (at_kill or {}).items() if k != "rows"} or None,
            "final_files_checked": checked, "differ": differ}


def _trials(reference, tmp_path, targets, seed, only=False):
    rng = random.Random(seed)
    results = []
    for i, target in enumerate(targets):
        results.append(kill_trial(reference, tmp_path / f"trial{i}", target, rng, only))
    print("\nkill trials:", json.dumps(results, indent=1))
    resumed = [r for r in results if r["kept_at_kill"]]
    identical = [r for r in results if not r["differ"]]
    print(f"kill trials: {len(results)}, killed inside the target stage with work kept: "
          f"{len(resumed)}, identical to the uninterrupted run: {len(identical)}")
    assert len(identical) == len(results), [r for r in results if r["differ"]]
    # Most kills must land inside the target stage with work to resume from (a kill after the
    # stage, on a slow or busy machine, proves little); each of those was checked to resume.
    assert len(resumed) >= len(results) - 1, results
    return results


def test_kill_once_per_stage_and_resume_identically(reference, tmp_path):
    _trials(reference, tmp_path, TARGETS, seed=0, only=True)


@pytest.mark.slow
def test_twelve_kills_at_random_points_resume_identically(reference, tmp_path):
    _trials(reference, tmp_path, TARGETS * 4, seed=1)
