"""The explanations study's logic on fakes: the data, the grid of tuning runs, the evaluation's
accuracies, unparsable counts, paired tests, thresholds and the report, checked against values
computed here from the generated files. Training writes a placeholder adapter; the fake student
answers according to the adapter it wears, so each run's accuracy is known in advance."""
from __future__ import annotations

import pytest

from adaptlab.data.listops import evaluate
from adaptlab.evaluate.stats import mcnemar
from adaptlab.io import read_json, read_jsonl
from adaptlab.lm.fake import FakeLM
from train_fakes import fake_tune

RECIPE = {
    "name": "explain-fake",
    "tasks": [{"name": "listops", "depth": 2, "classes": 10, "deeper": 12},
              {"name": "modsum", "ops": ["SM"], "deeper": 0}],
    "levels": ["none", "short", "long"],
    "train_sizes": [10, 20],
    "test_n": 40, "val_n": 0, "few_shot": 2, "threshold": 0.9,
}


def _expression(chat) -> str:
    text = chat[-1]["content"]
    return text[text.index("["):]


def _classes(chat) -> int:
    return int(chat[-1]["content"].split("sum mod ")[1].split(")")[0])


class FakeStudent(FakeLM):
    """long: always right; none: right only when the answer is even; short: unparsable when the
    answer is odd, else right; no adapter (few-shot): always "7". A full fine-tune is its own
    model, named by its directory (the run's stage)."""

    loaded: list[str] = []

    def __init__(self, ref, precision="fp32", batch_size=8, model=None, tokenizer=None, name=None, **kw):
        super().__init__(self._reply, name=name or f"local:{ref}")
        self.tok, self.ref = tokenizer, str(ref)
        FakeStudent.loaded.append(self.ref)

    def _reply(self, chat, params):
        gold = evaluate(_expression(chat), _classes(chat))
        a = self.adapter or (self.ref if "tune-" in self.ref else "")
        if "-long-" in a:
            return f"First, some steps.\nThe answer is {gold}."
        if "-short-" in a:
            return f"SM, 1\nThe answer is {gold}." if gold % 2 == 0 else "I cannot tell"
        if "-none-" in a:
            return str(gold) if gold % 2 == 0 else str((gold + 1) % 10)
        return "7"


def fake_tokenizer(ref, **kw):
    return lambda text: {"input_ids": text.split()}


@pytest.fixture
def faked(tmp_path, monkeypatch):
    import adaptlab.lm.local
    import adaptlab.models.load
    import adaptlab.train.lora

    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", FakeStudent)
    monkeypatch.setattr(adaptlab.train.lora, "tune", fake_tune)
    monkeypatch.setattr(adaptlab.models.load, "load_tokenizer", fake_tokenizer)
    return tmp_path / "runs" / RECIPE["name"]


def _cfg(overrides=None):
    from adaptlab.config import from_dict, merge
    from adaptlab.studies import explain

    return from_dict(explain.Config, merge(RECIPE, overrides or {}))


def _run(overrides=None, **kw):
    from adaptlab.runs.study import run_study
    from adaptlab.studies import explain

    return run_study("explain", explain, _cfg(overrides), **kw)


def test_data_splits_are_distinct_and_deeper_is_deeper(faked):
    _run()
    d = faked / "data-listops"
    parts = {p: read_jsonl(d / f"{p}.jsonl") for p in ("train", "val", "test", "deeper")}
    assert [len(parts[p]) for p in ("train", "test", "deeper")] == [20, 40, 12]
    assert read_jsonl(d / "train-n10.jsonl") == parts["train"][:10]
    seen = [e["expression"] for p in ("train", "test") for e in parts[p]]
    assert len(seen) == len(set(seen))
    assert max(e["depth"] for e in parts["train"]) <= 2
    assert {e["depth"] for e in parts["deeper"]} == {3}
    assert all("[MIN" not in e["expression"] for e in read_jsonl(faked / "data-modsum" / "train.jsonl"))


def test_accuracies_unparsable_and_paired_tests_match_the_answers(faked):
    out = _run()
    m = read_json(faked / "evaluate-listops" / "metrics.json")
    test = read_jsonl(faked / "data-listops" / "test.jsonl")
    even = [e["answer"] % 2 == 0 for e in test]
    runs = m["runs"]
    tag = "smollm2-135m-instruct"
    assert runs[f"tune-listops-{tag}-long-n20"]["test"]["accuracy"] == 1.0
    assert runs[f"tune-listops-{tag}-none-n20"]["test"]["accuracy"] == round(sum(even) / len(even), 4)
    assert runs[f"tune-listops-{tag}-short-n20"]["test_unparsable"] == len(even) - sum(even)
    assert runs[f"tune-listops-{tag}-none-n20"]["test_unparsable"] == 0
    point = next(p for p in m["points"] if p["level"] == "long" and p["n"] == 20)
    assert point["test_vs_none"]["test"]["p"] == pytest.approx(mcnemar([True] * len(even), even)["p"])
    gold7 = [e["answer"] == 7 for e in test]
    assert m["baselines"][f"{tag}:few_shot"]["test"]["accuracy"] == round(sum(gold7) / len(gold7), 4)
    train = read_jsonl(faked / "data-listops" / "train.jsonl")
    top = max(set(e["answer"] for e in train), key=[e["answer"] for e in train].count)
    assert m["baselines"]["majority"]["test"]["accuracy"] == round(
        sum(e["answer"] == top for e in test) / len(test), 4)
    reach = {r["level"]: r["examples_to_threshold"] for r in m["to_threshold"]}
    assert reach["long"] == 10 and reach["none"] == "> 20"
    assert out[f"listops_{tag}_long_acc"] == 1.0
    assert (faked / "report" / "report.html").exists()


def test_several_seeds_pair_items_not_item_seed_pairs_and_full_models_load_one_at_a_time(faked):
    from adaptlab.evaluate.stats import paired_bootstrap

    FakeStudent.loaded = []
    _run({"tasks": [{"name": "listops", "deeper": 0}], "levels": ["none", "long"],
          "train_sizes": [10], "seeds": [0, 1], "tune": {"method": "full"}})
    m = read_json(faked / "evaluate-listops" / "metrics.json")
    even = [float(e["answer"] % 2 == 0) for e in read_jsonl(faked / "data-listops" / "test.jsonl")]
    point = next(p for p in m["points"] if p["level"] == "long")
    assert point["test"]["n"] == len(even) and point["test"]["seeds"] == 2
    assert point["test_vs_none"]["test"]["p"] == pytest.approx(
        paired_bootstrap([1.0] * len(even), even)["p"])
    assert m["runs"]["tune-listops-smollm2-135m-instruct-long-n10-s1"]["test"]["accuracy"] == 1.0
    full = [r for r in FakeStudent.loaded if "tune-" in r]
    assert len(full) == 4 and len(set(full)) == 4  # each tuned model loaded once, for its own turn


def test_explained_demos_and_budgets_reach_the_student(faked):
    import adaptlab.lm.local

    seen = []

    class Spy(FakeStudent):
        def chat(self, chats, params):
            seen.append((self.adapter, len(chats[0]), params.max_new_tokens))
            return super().chat(chats, params)

    adaptlab.lm.local.LocalLM = Spy
    _run({"tasks": [{"name": "listops", "deeper": 0}], "levels": ["none", "long"], "train_sizes": [10]})
    plain = [s for s in seen if s[0] is None]
    assert {s[1] for s in plain} == {5}  # two demos (user + assistant each) and the question
    budgets = {("long" if "-long-" in (a or "") else "none"): b for a, _, b in seen if a}
    assert budgets["long"] > budgets["none"]


def test_stage_keys_follow_the_recipe(faked):
    from adaptlab.runs.study import run_study
    from adaptlab.studies import explain

    _run()
    dry = lambda o: {s["stage"]: s["status"] for s in run_study(  # noqa: E731
        "explain", explain, _cfg(o), dry=True)["stages"]}
    assert set(dry(None).values()) == {"cached"}
    st = dry({"test_n": 41})
    assert st["data-listops"] == "stale" and st["data-modsum"] == "stale"  # the rest follows the data
    st = dry({"tune": {"lr": 0.002}})
    assert st["data-listops"] == "cached" and st["tune-listops-smollm2-135m-instruct-long-n10"] == "stale"
    adapter = faked / "tune-listops-smollm2-135m-instruct-long-n10" / "adapter_model.safetensors"
    adapter.write_bytes(b"retrained")
    assert dry(None)["evaluate-listops"] == "stale"
    st = dry({"few_shot": 1})
    assert st["evaluate-listops"] == "stale" and st["tune-modsum-smollm2-135m-instruct-none-n20"] == "cached"


@pytest.mark.parametrize("bad,msg", [({"levels": ["huge"]}, "levels"),
                                     ({"tasks": [{"name": "a", "ops": ["POW"]}]}, "ops"),
                                     ({"tasks": [{"name": "Bad Name"}]}, "name"),
                                     ({"curve_every": 5, "val_n": 0}, "val_n"),
                                     ({"threshold": 0}, "threshold")])
def test_bad_recipe_values_are_refused(bad, msg):
    from adaptlab.config import ConfigError

    with pytest.raises(ConfigError, match=msg):
        _cfg(bad)


def test_a_larger_n_retrains_nothing_already_trained(faked):
    from adaptlab.runs.study import run_study
    from adaptlab.studies import explain

    _run()
    before = (faked / "data-listops" / "train-n20.jsonl").read_bytes()
    test_before = (faked / "data-listops" / "test.jsonl").read_bytes()
    _run({"train_sizes": [10, 20, 30]}, only="data-listops")
    assert (faked / "data-listops" / "train-n20.jsonl").read_bytes() == before
    assert (faked / "data-listops" / "test.jsonl").read_bytes() == test_before
    st = {s["stage"]: s["status"] for s in run_study(
        "explain", explain, _cfg({"train_sizes": [10, 20, 30]}), dry=True)["stages"]}
    assert st["tune-listops-smollm2-135m-instruct-long-n20"] == "cached"
    assert st["tune-listops-smollm2-135m-instruct-long-n30"] == "new"
