"""The precision claim: seeds, the validation curve of "in tone and content preserved", and the
curves stage's mean over seeds with intervals, steps to the target and the paired test.

The study runs on the fakes of tests/tone_fakes.py with a fake training loop that calls the real
validation hook at steps 0, 2 and 4. The student's fake reply depends on the step it is asked at
and on the precision: a validation question is answered in tone once training has gone far
enough for it, twice as fast at int8, and with the reference answer's facts for every other
question. Then the curves stage is checked on hand-written curves with numbers worked out here.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import tone_fakes as fakes

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from adaptlab.io import read_json  # noqa: E402

REFERENCES = {qa["question"]: qa["answer"] for line in Path("corpora/tone/passages.jsonl").open()
              for qa in json.loads(line)["qa"]}
STEPS = (0, 2, 4)


class StepModel(fakes.FakeModel):
    """What the fake loop hands the hook: how far training has gone, at which precision."""

    def __init__(self, step: int, precision: str):
        self.step, self.speed = step, 2 if precision == "int8" else 1


def _unit(*parts) -> float:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()[0] / 256


def student_reply(chat, p, model: StepModel) -> str:
    q = chat[-1]["content"]
    facts = REFERENCES[q] if _unit(q) < 0.5 else "Something else entirely, unrelated."
    if _unit(q, p.seed, "tone") < model.step * model.speed / 4:  # in tone once far enough
        return f"Well, you know, here's the thing. You'll love it! {facts} Really!"
    return f"The answer is documented as follows: {facts} Furthermore, it is noted."


class CurveLM(fakes.FakeLocalLM):
    def __init__(self, model_ref, model=None, **kw):
        super().__init__(model_ref, model=model, **kw)
        if isinstance(model, StepModel):
            self.reply = lambda chat, p: student_reply(chat, p, model)


def fake_tune(cfg, examples, out, source="data", eval_hook=None, **kw):
    from adaptlab.train.logs import write_logs

    out = Path(out)
    fakes.fake_tune_files(out, cfg.precision)
    evals = ([{"step": s, **eval_hook(s, StepModel(s, cfg.precision), None)} for s in STEPS]
             if eval_hook else [])
    loss = [{"step": s, "loss": 2.0 - s / 10 - cfg.seed / 100} for s in range(1, STEPS[-1] + 1)]
    write_logs(out, {"loss": loss, "eval": evals})
    return {"steps": STEPS[-1], "final_loss": loss[-1]["loss"]}


RECIPE = {**fakes.RECIPE, "labeled_outputs": "", "split": {"eval_questions": 4, "val_questions": 8,
                                                          "train_questions": 20},
          "train_sizes": [8], "main_size": 8, "precisions": ["fp32", "int8"], "seeds": [0, 1, 2],
          "curve_every": 2, "compare": False, "content_threshold": 0.5}
TUNES = [f"tune-{p}-n8-s{s}" for p in ("fp32", "int8") for s in (0, 1, 2)]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    import adaptlab.evaluate.embed
    import adaptlab.lm.local
    import adaptlab.train.lora
    from adaptlab.config import from_dict
    from adaptlab.runs.study import run_study
    from adaptlab.studies import tone

    tmp = tmp_path_factory.mktemp("precision")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTLAB_RUNS", str(tmp / "runs"))
        mp.setattr(adaptlab.evaluate.embed, "embed", fakes.fake_embed)
        mp.setattr(adaptlab.lm.local, "LocalLM", CurveLM)
        mp.setattr(adaptlab.train.lora, "tune", fake_tune)
        cfg = from_dict(tone.Config, RECIPE)
        out = run_study("tone", tone, cfg)
        yield out, tmp / "runs" / "golden", cfg


def test_each_seed_is_its_own_stage_and_evaluate_can_be_left_out(ran):
    from adaptlab.config import from_dict
    from adaptlab.studies import tone

    out, d, cfg = ran
    names = [s.name for s in tone.stages(cfg)]
    assert names == ["split", "judges", "simulate", *TUNES, "curves", "report"]
    assert [read_json(d / t / "tuned.json")["seed"] for t in TUNES] == [0, 1, 2] * 2
    assert (d / "report" / "report.html").exists() and not (d / "evaluate").exists()
    assert out["curve_int8_steps_to_target_both"] is not None  # the summary holds the curves
    compared = tone.stages(from_dict(tone.Config, {**RECIPE, "compare": True}))
    ev = next(s for s in compared if s.name == "evaluate")
    assert ev.config.main_adapter == "tune-fp32-n8-s0" and ev.config.adapters == TUNES
    one = from_dict(tone.Config, {**RECIPE, "seeds": []})  # [] = just `seed`: no suffix
    assert [s.name for s in tone.stages(one) if s.name.startswith("tune")] == ["tune-fp32-n8", "tune-int8-n8"]


def test_the_curve_records_both_rates_per_question(ran):
    from adaptlab.studies.tone_report import _csv

    _, d, _ = ran
    for t in TUNES:
        rows = _csv(d / t / "eval.csv")
        assert [r["step"] for r in rows] == list(STEPS)
        for r in rows:
            tone, content, both = (r[f"{m}_items"] for m in ("tone", "content", "both"))
            assert len(both) == 8 and both == "".join(
                "1" if a == b == "1" else "0" for a, b in zip(tone, content))
            assert r["both_rate"] == round(both.count("1") / 8, 4)
            assert r["tone_rate"] == round(tone.count("1") / 8, 4)
            assert r["content_rate"] == round(content.count("1") / 8, 4)
        assert rows[0]["tone_items"] == "0" * 8  # untrained: nothing in tone
        assert 0 < rows[-1]["content_rate"] < 1  # the facts of every other question
        assert rows[-1]["tone_items"] == "1" * 8  # step 4: every question in tone


def test_curves_aggregate_over_seeds_with_intervals(ran):
    from adaptlab.evaluate import stats
    from adaptlab.studies.tone_report import _csv

    _, d, _ = ran
    report = read_json(d / "report" / "report.json")
    conv = report["convergence"]
    assert conv["plotted_interval"] == "seeds_ci"
    points = {(p["precision"], p["step"]): p for p in conv["points"]}
    assert sorted(points) == [(p, s) for p in ("fp32", "int8") for s in STEPS]
    for (prec, step), p in points.items():
        rows = [next(r for r in _csv(d / f"tune-{prec}-n8-s{s}" / "eval.csv") if r["step"] == step)
                for s in (0, 1, 2)]
        rates = [r["both_rate"] for r in rows]
        k = sum(r["both_items"].count("1") for r in rows)
        assert p["both"]["per_seed"] == rates and p["both"]["mean"] == pytest.approx(sum(rates) / 3)
        assert p["both"]["seeds_ci"] == list(stats.bootstrap_mean(rates, seed=0))
        assert p["both"]["wilson"] == list(stats.wilson(k, 24)) and p["questions"] == 8
        assert p["both"]["seeds_ci"][0] <= p["both"]["mean"] <= p["both"]["seeds_ci"][1]
    # int8 goes in tone twice as fast in this fake: it reaches fp32's final rate sooner
    steps = conv["verdict"]["steps_to_target"]
    assert steps["tone"] == {"fp32": 4, "int8": 2} and steps["both"]["int8"] < steps["both"]["fp32"] == 4
    section = next(s for s in report["sections"] if s["title"].startswith("Convergence by precision"))
    assert "bootstrap interval over the seeds' rates" in section["text"] and section["image"]
    cols = section["table"]["cols"]
    assert len(section["table"]["rows"]) == 6 and any("Wilson" in c for c in cols)
    verdict = next(s for s in report["sections"] if s["title"] == "Verdict: convergence by precision")
    assert "McNemar" in verdict["text"] and "reaches fp32's final mean" in verdict["text"]


def _curve(d: Path, name: str, both: list[str], tone: list[str]) -> Path:
    from adaptlab.train.logs import write_logs

    rows = [{"step": s, "tone_rate": 0.0, "both_rate": 0.0, "tone_items": t, "content_items": b,
             "both_items": b} for s, b, t in zip(STEPS, both, tone)]
    write_logs(d / name, {"loss": [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)], "eval": rows})
    return d / name / "manifest.json"


def test_curves_stage_on_hand_written_curves(tmp_path):
    """Worked by hand: fp32 ends at (2 + 3) / 8 = 0.625, int8 gets there at step 2; at step 4,
    int8 is right on 3 pooled pairs where fp32 is not and never the reverse: McNemar p = 0.25."""
    from adaptlab.runs.declare import Ctx
    from adaptlab.studies.tone_config import CurveAdapter, CurvesStage
    from adaptlab.studies.tone_report import curves_stage

    curves = {("fp32", 0): ["0000", "1000", "1100"], ("fp32", 1): ["0000", "0000", "1110"],
              ("int8", 0): ["0000", "1100", "1111"], ("int8", 1): ["0000", "1110", "1111"]}
    tone = ["0000", "1111", "1111"]
    inputs = {f"{p}-s{s}": _curve(tmp_path, f"{p}-s{s}", b, tone) for (p, s), b in curves.items()}
    cfg = CurvesStage([CurveAdapter(f"{p}-s{s}", p, 8, s) for p, s in curves], 8, "fp32", 0)
    ctx = Ctx(tmp_path / "curves", tmp_path / "curves" / "work", tmp_path / "cache.sqlite")
    ctx.dir.mkdir()
    m = curves_stage(cfg, inputs, ctx)
    v = ctx.data["convergence"]["verdict"]
    assert v["final"]["fp32"]["both"] == 0.625 and v["final"]["int8"]["both"] == 1.0
    assert v["steps_to_target"]["both"] == {"fp32": 4, "int8": 2}
    assert v["steps_to_target"]["tone"] == {"fp32": 2, "int8": 2}
    assert v["tests"]["int8_vs_fp32_both"]["p"] == pytest.approx(0.25)
    assert v["tests"]["int8_vs_fp32_tone"]["p"] == 1.0  # no discordant pair
    assert v["sentences"][-2].startswith('No significant difference between int8 and fp32 on "in '
                                         'tone and content preserved" at the last step (step 4), '
                                         "pooled over 2 seeds x 4 validation questions")
    assert m["curve_int8_vs_fp32_both_p"] == 0.25 and m["curve_fp32_steps_to_target_both"] == 4
    last = next(p for p in ctx.data["convergence"]["points"] if p["precision"] == "fp32" and p["step"] == 4)
    assert last["both"]["per_seed"] == [0.5, 0.75] and last["both"]["pooled"] == 0.625
    assert 0.5 <= last["both"]["seeds_ci"][0] < last["both"]["seeds_ci"][1] <= 0.75
    assert (ctx.dir / "convergence.png").exists()
