"""The tone study on the real packaged models, at micro scale."""
from __future__ import annotations

import json

import pytest

from adaptlab.io import read_json

CAL = "corpora/tone/calibration.jsonl"


def _calibration():
    rows = [json.loads(l) for l in open(CAL)]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def test_classifier_judge_beats_chance_by_a_clear_margin():
    from adaptlab.evaluate.judges import ClassifierJudge

    texts, labels = _calibration()
    rep = ClassifierJudge().cross_validate(texts, labels)
    assert rep["accuracy"] >= rep["chance"] + 0.2, rep


def test_llm_judge_beats_chance_by_a_clear_margin():
    from adaptlab.evaluate.judges import LLMJudge
    from adaptlab.lm.local import LocalLM
    from adaptlab.synth.simulate import ToneSpec

    texts, labels = _calibration()
    # A balanced, fixed subset keeps this test to a minute on 2 cores.
    pos = [i for i, y in enumerate(labels) if y == 1][:40]
    neg = [i for i, y in enumerate(labels) if y == 0][:40]
    idx = sorted(pos + neg)
    spec = ToneSpec()
    judge = LLMJudge(LocalLM("smollm2-135m-instruct", batch_size=16), spec.description, spec.contrast)
    rep = judge.calibrate([texts[i] for i in idx], [labels[i] for i in idx])
    assert rep["accuracy"] >= rep["chance"] + 0.15, rep


def test_tuned_adapter_changes_tone_judge_scores(tmp_path):
    """A few LoRA steps on in-tone answers move the judge's scores on a fixed question set."""
    from adaptlab.evaluate.judges import ClassifierJudge
    from adaptlab.lm.base import GenParams
    from adaptlab.lm.local import LocalLM
    from adaptlab.data.corpus import load_passages as load_corpus
    from adaptlab.train import TuneConfig
    from adaptlab.train.lora import tune

    texts, labels = _calibration()
    corpus = load_corpus("corpora/tone/passages.jsonl")
    questions = [qa["question"] for r in corpus for qa in r["qa"]]
    in_tone = [t for t, y in zip(texts, labels) if y == 1]
    examples = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                for q, a in zip(questions[:24], in_tone[:24])]
    tune(TuneConfig(max_steps=10, lr=1e-3, batch_size=4, save_every=0, lora_dropout=0.0), examples, tmp_path)
    fixed = [[{"role": "user", "content": q}] for q in questions[-6:]]
    params = GenParams(max_new_tokens=40)
    lm = LocalLM("smollm2-135m-instruct", batch_size=6)
    base = lm.chat(fixed, params)
    lm.set_adapter(str(tmp_path))
    tuned = lm.chat(fixed, params)
    judge = ClassifierJudge().fit(texts, labels)
    b, t = judge.score(base), judge.score(tuned)
    assert tuned != base
    assert sum(t) / len(t) > sum(b) / len(b) + 0.1, (b, t)


def test_recipe_with_another_tone_runs_unchanged_and_resumes(tmp_path, monkeypatch):
    """A new tone is a new recipe: a different description runs through every stage, no code change."""
    from adaptlab.api import run

    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    recipe = tmp_path / "pirate.yaml"
    recipe.write_text(
        "study: tone\nname: pirate\n"
        "tone:\n  description: like a cheerful pirate, with arr and matey\n"
        "  examples: [\"Arr, the tide be turnin', matey!\"]\n"
        "teacher: {model: smollm2-135m-instruct, batch_size: 8}\n"
        "judge: {model: smollm2-135m-instruct}\n"
        "judge_calibration_limit: 10\n"
        "split: {eval_questions: 2, val_questions: 2, train_questions: 6}\n"
        "filters: {min_tone: 0.0, min_topic_sim: 0.0}\n"
        "train_sizes: [4]\nmain_size: 4\n"
        "tune: {max_steps: 3, batch_size: 2, save_every: 0}\n"
        "curve_every: 1\nmax_new_tokens: 24\n"
    )
    out = run(recipe)
    d = tmp_path / "runs" / "pirate"
    report = read_json(d / "report" / "report.json")
    assert report["tone"] == "like a cheerful pirate, with arr and matey"
    assert set(report["systems"]) == {"base", "prompted", "few_shot", "tuned", "tuned_prompted", "teacher"}
    # the system bars and the convergence curves (4 points); one N: its "plot" is a table row
    assert (d / "report" / "report.html").read_text().count("data:image/png;base64") >= 2
    assert (d / "tune-fp32-n4" / "eval.csv").exists()
    again = run(recipe)  # everything cached: nothing re-runs
    assert all(v == 0.0 for v in again["timings_s"].values()), again["timings_s"]
    assert again["tuned_tone_rate"] == out["tuned_tone_rate"]
