"""The tone study on the kit gives the same answers and metrics as before it moved there.

tests/golden/tone_fake.json was written by the hand-wired tone study (commit 1fd9cd5, before the
study kit) on the fakes in tests/tone_fakes.py: every LM is a deterministic fake whose reply
depends on the system prompt, the demo turns, the question and the seed; embeddings are hashed
bags of words; training writes a placeholder adapter. Splits, simulation, filters, judges,
evaluation and every metric are the real code. Only the intervals and tests are new.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tone_fakes as fakes

pytest.importorskip("sklearn")

from adaptlab.io import read_json, read_jsonl  # noqa: E402

GOLDEN = Path(__file__).parent.parent / "golden" / "tone_fake.json"


def fake_tune(cfg, examples, out, source="data", eval_hook=None, **kw):
    fakes.fake_tune_files(Path(out), cfg.precision)
    return {"steps": 2, "final_loss": 1.5}


@pytest.fixture
def faked(tmp_path, monkeypatch):
    import adaptlab.evaluate.embed
    import adaptlab.lm.local
    import adaptlab.train.lora

    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(adaptlab.evaluate.embed, "embed", fakes.fake_embed)
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", fakes.FakeLocalLM)
    monkeypatch.setattr(adaptlab.train.lora, "tune", fake_tune)
    return tmp_path / "runs" / "golden"


def _run(overrides: dict | None = None):
    from adaptlab.config import from_dict, merge
    from adaptlab.runs.study import run_study
    from adaptlab.studies import tone

    cfg = from_dict(tone.Config, merge(fakes.RECIPE, overrides or {}))
    return run_study("tone", tone, cfg)


def test_same_answers_and_metrics_as_the_hand_wired_study(faked):
    golden = json.loads(GOLDEN.read_text())
    out = _run()
    d = faked
    metrics = read_json(d / "evaluate" / "metrics.json")
    assert {k: metrics[k] for k in golden["evaluate_metrics"]} == golden["evaluate_metrics"]
    assert read_jsonl(d / "evaluate" / "answers.jsonl") == golden["answers"]
    assert read_json(d / "judges" / "judges.json") == golden["judges"]
    assert read_json(d / "simulate" / "filter_stats.json") == golden["filter_stats"]
    assert read_jsonl(d / "simulate" / "train.jsonl") == golden["train"]
    for part, ids in golden["splits"].items():
        assert [r["id"] for r in read_jsonl(d / "split" / f"{part}.jsonl")] == ids
    # only the intervals are new: every comparison row has one
    for judge in ("classifier", "llm"):
        rows = metrics["evidence"][f"tone_{judge}"]
        assert [r["system"] for r in rows] == ["base", "prompted", "tuned", "teacher"]
        assert all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in rows)
    assert out["prompted_tone_rate"] == golden["evaluate_metrics"]["systems"]["prompted"]["tone_rate_classifier"]
