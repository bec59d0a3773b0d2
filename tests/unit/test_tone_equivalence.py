"""The tone study on the kit gives the same answers and metrics as before it moved there.

Since then the study changed on purpose (the tone-evidence issue): the classifier that filters
the training data and the one that measures tone learn from disjoint halves of the labeled set,
the teacher is evaluated as it made the data, and new systems are compared. What those changes
touch is no longer compared with the golden file; everything else still is, exactly.

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
    same = ("base", "prompted", "tuned")  # the teacher is now evaluated as it made the data
    judged = {"tone_rate_classifier", "judge_agreement"}  # now the verdict classifier's
    for s in same:
        want = golden["evaluate_metrics"]["systems"][s]
        assert {k: v for k, v in metrics["systems"][s].items() if k in want and k not in judged} == \
            {k: v for k, v in want.items() if k not in judged}
    new_fields = {"tone_classifier", "content_ok"}
    assert [{k: v for k, v in a.items() if k not in new_fields} for a in read_jsonl(d / "evaluate" / "answers.jsonl")
            if a["system"] in same] == [{k: v for k, v in a.items() if k != "tone_classifier"}
                                        for a in golden["answers"] if a["system"] in same]
    for k in ("main_adapter", "n_eval"):
        assert metrics[k] == golden["evaluate_metrics"][k]
    judges = read_json(d / "judges" / "judges.json")
    assert {k: judges[k] for k in golden["judges"]} == golden["judges"]
    assert read_json(d / "simulate" / "filter_stats.json") == golden["filter_stats"]
    assert read_jsonl(d / "simulate" / "train.jsonl") == golden["train"]
    for part, ids in golden["splits"].items():
        assert [r["id"] for r in read_jsonl(d / "split" / f"{part}.jsonl")] == ids
    # only the intervals are new: every comparison row has one
    for judge in ("classifier", "llm"):
        rows = metrics["evidence"][f"tone_{judge}"]
        assert [r["system"] for r in rows] == ["base", "prompted", "few_shot", "tuned",
                                               "tuned_prompted", "teacher"]
        assert all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in rows)
    assert out["best_prompted"] in ("prompted", "few_shot")


def test_every_comparison_table_in_the_report_has_intervals(faked):
    import re

    _run()
    report = read_json(faked / "report" / "report.json")
    tables = {s["title"]: s["table"] for s in report["sections"] if s.get("table")}
    not_comparisons = ("Side by side", "Simulated data filters", "Stage wall time")
    compared = {t: tab for t, tab in tables.items() if not t.startswith(not_comparisons)}
    assert len(compared) == 5, list(compared)  # systems, N, judges on labeled outputs and texts, agreement
    interval = re.compile(r"^\d\.\d\d \[\d\.\d\d, \d\.\d\d\]$")
    for title, tab in compared.items():
        cols = [i for i, c in enumerate(tab["cols"]) if all(interval.match(str(r[i])) for r in tab["rows"])]
        assert cols, f"no interval column in {title!r}: {tab['cols']}"
    verdict = next(s["text"] for s in report["sections"] if s["title"] == "Verdict")
    assert verdict.count("McNemar p") == 4 and "in tone and content preserved" in verdict


def test_judge_command_scores_texts_with_the_calibrated_judges(faked, tmp_path, capsys):
    import yaml

    from adaptlab.cli import main

    recipe = tmp_path / "golden.yaml"
    recipe.write_text(yaml.safe_dump({"study": "tone", **fakes.RECIPE}))
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(
        ["Well, you know, you'll love it, it's neat. Really!",
         "The procedure is documented as follows: item 3. Furthermore, it is 4."])))
    out = tmp_path / "judged.jsonl"
    assert main(["judge", str(recipe), str(texts), "--out", str(out)]) == 0
    rows = read_jsonl(out)
    assert [r["text"] for r in rows] == [json.loads(l)["text"] for l in texts.read_text().splitlines()]
    for r in rows:
        assert r["classifier_in_tone"] == (r["classifier"] > 0.5) and r["llm_in_tone"] == (r["llm"] > 0.5)
    assert rows[0]["classifier"] > rows[1]["classifier"]  # the spoken text scores as in tone
    judges = read_json(faked / "judges" / "judges.json")
    assert rows[0]["llm"] != rows[1]["llm"] and judges["llm_bias"] is not None
    capsys.readouterr()
    assert main(["judge", str(recipe), str(texts)]) == 0  # judges cached; prints JSON lines
    assert [json.loads(l) for l in capsys.readouterr().out.splitlines()] == rows
    texts.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    assert main(["judge", str(recipe), str(texts), "--out", str(tmp_path / "bad.jsonl")]) == 2
    assert f"{texts}:2: text: expected a string" in capsys.readouterr().err
    assert not (tmp_path / "bad.jsonl").exists()


def test_validate_stage_measures_every_judge_on_the_labeled_outputs(faked):
    _run()
    v = read_json(faked / "validate" / "manifest.json")["metrics"]
    assert set(v) == {"verdict classifier", "filter classifier", "LLM judge (smollm2-135m-instruct)",
                      "content check", "degenerate check"}
    report = read_json(faked / "report" / "report.json")
    rows = report["validation"]["rows"]
    assert [r["n"] for r in rows] == [216] * 5
    assert [r["share of 1s"] for r in rows][-1] == round(20 / 216, 3)  # the hand labels, read back
