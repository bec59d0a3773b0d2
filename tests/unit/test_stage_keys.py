"""Each stage re-runs exactly when something it reads changes.

The tone study runs once on the fakes of tests/tone_fakes.py; then every recipe field is changed
in turn and the dry run says which stages are stale. Each stage must be stale for every field it
reads (else a stale result would be reused: the drift this kit was built to end) and cached for
every field it does not read (else work is redone for nothing).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tone_fakes as fakes

pytest.importorskip("sklearn")

TUNES = ["tune-fp32-n8", "tune-fp32-n16", "tune-bf16-n8", "tune-bf16-n16"]
ALL = ["split", "judges", "validate", "simulate", *TUNES, "evaluate", "curves"]

# recipe field -> new value -> the stages that read it (curve_every = 0: no validation curve)
CHANGES = [
    ("seed", 1, ALL),
    ("corpus", "OTHER_CORPUS", ["split"]),
    ("calibration", "OTHER_CALIBRATION", ["judges", "validate", "simulate", "evaluate"]),
    ("tone.description", "like a pirate", ["judges", "validate", "simulate", "evaluate"]),
    ("tone.contrast", "legal prose", ["judges", "validate", "evaluate"]),
    ("tone.examples", ["Arr!"], ["simulate", "evaluate"]),
    ("student", "other-student", [*TUNES, "evaluate"]),
    ("teacher.model", "other-teacher", ["simulate", "evaluate"]),
    ("teacher.batch_size", 4, ["simulate", "evaluate"]),
    ("judge.model", "other-judge", ["judges", "validate", "evaluate"]),
    ("judge_calibration_limit", 10, ["judges"]),
    ("split.eval_questions", 10, ["split"]),
    ("filters.max_copy", 0.9, ["simulate"]),
    ("teacher_source", "passage", ["simulate", "evaluate"]),
    ("context", "passage", ["simulate", "evaluate"]),
    ("main_size", 8, ["evaluate", "curves"]),
    ("seeds", [0], []),  # the default, [] = [seed], spelled out: the same stages
    ("seeds", [1], [*TUNES, "curves"]),  # one seed: no -s suffix, so the same names, stale
    ("tune.lr", 1e-3, TUNES),
    ("tune.lora_r", 4, TUNES),
    ("max_new_tokens", 20, ["simulate", "evaluate"]),
    ("eval_batch_size", 3, ["evaluate"]),
    ("teacher_temperature", 0.1, ["simulate", "evaluate"]),
    ("larger", [{"model": "bigger-model"}], ["evaluate"]),
    ("content_threshold", 0.5, ["validate", "evaluate"]),
]


def _set(d: dict, dotted: str, value) -> dict:
    import copy

    out = copy.deepcopy(d)
    *parents, leaf = dotted.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return out


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        yield _ran(tmp_path_factory.mktemp("keys"), mp)


def _ran(tmp_path, monkeypatch):
    """The recipe, run once on the fakes; returns (recipe, stale(changed recipe), paths)."""
    import adaptlab.evaluate.embed
    import adaptlab.lm.local
    import adaptlab.train.lora
    from adaptlab.config import from_dict
    from adaptlab.runs.declare import dry_run
    from adaptlab.runs.study import run_study
    from adaptlab.studies import tone

    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(adaptlab.evaluate.embed, "embed", fakes.fake_embed)
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", fakes.FakeLocalLM)

    def fake_tune(cfg, examples, out, source="data", eval_hook=None, **kw):
        fakes.fake_tune_files(Path(out), cfg.precision)
        return {"steps": 2, "final_loss": 1.5}
    monkeypatch.setattr(adaptlab.train.lora, "tune", fake_tune)
    corpus, cal = tmp_path / "corpus.jsonl", tmp_path / "cal.jsonl"
    shutil.copy("corpora/tone/passages.jsonl", corpus)
    shutil.copy("corpora/tone/calibration.jsonl", cal)
    recipe = {**fakes.RECIPE, "corpus": str(corpus), "calibration": str(cal)}
    run_study("tone", tone, from_dict(tone.Config, recipe))

    def stale(changed: dict) -> list[str]:
        cfg = from_dict(tone.Config, changed)
        rows = dry_run(tmp_path / "runs" / cfg.name, tone.stages(cfg))
        assert {r["status"] for r in rows} <= {"cached", "stale"}, rows
        return [r["stage"] for r in rows if r["status"] == "stale"]

    other_corpus, other_cal = tmp_path / "corpus2.jsonl", tmp_path / "cal2.jsonl"
    other_corpus.write_text("".join(corpus.read_text().splitlines(True)[:-1]))
    other_cal.write_text("".join(cal.read_text().splitlines(True)[1:]))
    subst = {"OTHER_CORPUS": str(other_corpus), "OTHER_CALIBRATION": str(other_cal)}
    return recipe, stale, subst


def test_nothing_is_stale_after_a_run(ran):
    recipe, stale, _ = ran
    assert stale(recipe) == []


@pytest.mark.parametrize("field,value,readers", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_stage_reruns_exactly_when_a_field_it_reads_changes(ran, field, value, readers):
    recipe, stale, subst = ran
    got = stale(_set(recipe, field, subst.get(value, value) if isinstance(value, str) else value))
    assert got == [s for s in ALL if s in readers]


def test_with_a_validation_curve_tuning_reads_answer_length_and_calibration(ran):
    """The drift this kit ended: the curve reads max_new_tokens and the calibration file."""
    recipe, stale, subst = ran
    curved = {**recipe, "curve_every": 1}
    assert stale(curved) == TUNES  # the curve itself is new
    for field, value in (("max_new_tokens", 20), ("calibration", subst["OTHER_CALIBRATION"]),
                         ("context", "passage"), ("content_threshold", 0.5)):
        assert set(TUNES) <= set(stale(_set(curved, field, value))), field
