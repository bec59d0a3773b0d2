"""The BetterTogether study's logic on a fake student behind the real server and provider: each
strategy's test score is known in advance (zero-shot the fake echoes its input, with demos it
always says setosa, with an adapter it is right), a step with no passing trace to train on is
reported as failed, costs are counted, and the stage keys follow the recipe."""
from __future__ import annotations

import pytest

pytest.importorskip("dspy")
pytest.importorskip("bm25s")

import adaptlab.train  # noqa: E402
from adaptlab.config import ConfigError, from_dict  # noqa: E402
from adaptlab.data import iris  # noqa: E402
from adaptlab.io import read_json  # noqa: E402
from adaptlab.lm.fake import FakeLM  # noqa: E402
from adaptlab.programs import tasks  # noqa: E402
from adaptlab.programs.provider import AdaptlabProvider  # noqa: E402
from adaptlab.runs.study import run_study  # noqa: E402
from adaptlab.studies import bettertogether as bt  # noqa: E402
from adaptlab.studies.bettertogether_config import chains  # noqa: E402
from train_fakes import fake_tune  # noqa: E402

TRUTH = {e["features"]: e["species"] for e in iris.examples()}


def reply(lm, chat, params) -> str:
    system, last = chat[0]["content"], chat[-1]["content"]
    if "produce `species`" in system:
        features = last.split("Features: ", 1)[1].split("\n")[0].strip()
        if lm.adapter:
            return f"Species: {TRUTH[features]}"
        return "Species: setosa" if len(chat) > 2 else last
    return "Reasoning: I cannot tell.\nAnswer: 0"  # word problems: always wrong


class Fake(FakeLM):
    def __init__(self):
        super().__init__(lambda chat, p: reply(self, chat, p), name="fake-student")


SIZES = {"iris": {"train": 10, "val": 5, "test": 12}, "wordproblems": {"train": 4, "val": 2, "test": 4}}


def config(**kw):
    return from_dict(bt.Config, {"name": "bt", "model": "fake-student", "tasks": ["iris", "wordproblems"],
                                 "sizes": SIZES, "candidates": 0, "threads": 2, **kw})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bt")
    trained = []

    def tune(cfg, data, out, source="data", **kw):
        trained.append((cfg, data))
        return fake_tune(cfg, data, out, source)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
        mp.setattr(AdaptlabProvider, "_local_lm", lambda self: Fake())
        mp.setattr(adaptlab.train, "tune", tune)
        cfg = config()
        result = run_study("bettertogether", bt, cfg)
        yield cfg, result, trained, tmp_path / "runs" / "bt"


def test_chains_cover_every_strategy():
    assert chains(["vanilla", "p", "w", "p -> w", "w -> p", "p -> w -> p"]) == ["p -> w -> p", "w -> p"]
    assert chains(["p", "w"]) == ["p", "w"]
    assert chains(["p -> w", "p"]) == ["p -> w"]


def test_scores_failures_and_cost(study):
    cfg, result, trained, run = study
    train, _, test = tasks.get("iris").load(seed=0, n_train=10, n_val=5, n_test=12)
    setosa_test = sum(e.species == "setosa" for e in test) / len(test)
    assert result["iris/vanilla"] == 0  # zero-shot: no species named
    assert result["iris/p"] == round(setosa_test, 4)  # demos: always setosa
    assert result["iris/p -> w"] == 1.0 and result["iris/p -> w -> p"] == 1.0  # the adapter
    assert result["wordproblems/vanilla"] == 0 and result["wordproblems/p"] == 0
    # w from vanilla has no passing trace to train on (iris: zero-shot never names a species;
    # word problems: always wrong), nor does p -> w on word problems: reported, not hidden
    for failed in ("iris/w", "iris/w -> p", "wordproblems/w", "wordproblems/p -> w"):
        assert failed not in result
    assert result["compilation_errors"] == 3  # iris w->p, word problems both chains

    chain = read_json(run / "chain-iris-s0-pwp" / "results.json")
    assert chain["flag_compilation_error_occurred"] is False
    # the one fine-tune: the p program's traces that passed on the trainset, i.e. its setosa
    assert len(trained) == 1 and len(chain["jobs"]) == 1
    cfg_used, data = trained[0]
    assert len(data) == sum(e.species == "setosa" for e in train)
    assert (cfg_used.lora_r, cfg_used.epochs, cfg_used.lr) == (cfg.lora_r, cfg.epochs, cfg.lr)
    s = chain["strategies"]
    assert s["p -> w"]["models"] == [f"openai/{chain['jobs'][0]['name']}"]
    assert s["p"]["models"] == ["openai/fake-student"]
    assert s["p"]["cost"]["generations"] > 0
    assert s["p -> w"]["cost"]["generations"] > s["p"]["cost"]["generations"]
    assert [st["step"] for st in chain["steps"]] == ["p", "w", "p"]
    assert len(s["vanilla"]["test"]) == 12 and {"accuracy", "valid", "output"} <= set(s["p"]["test"][0])

    wp = read_json(run / "chain-iris-s0-wp" / "results.json")
    assert wp["flag_compilation_error_occurred"] is True
    assert "no training data" in wp["strategies"]["w"]["failed"]
    assert "no training data" in wp["strategies"]["w -> p"]["failed"]
    assert "vanilla" not in wp["strategies"]  # tested once per task and seed, in the first chain

    report = (run / "report" / "report.md").read_text()
    assert "Table 1 layout" in report and "The paper's numbers" in report
    assert "iris, w: AdaptlabError: no training data" in report
    table = read_json(run / "table" / "table.json")
    verdicts = {(v["task"], v["a"], v["b"]) for v in table["verdicts"]}
    assert ("iris", "p -> w -> p", "p") in verdicts and ("iris", "w", "vanilla") not in verdicts
    assert ("iris", "p -> w -> p", "constant") in verdicts
    assert "constant answer (reference)" in [r["strategy"] for r in table["rows"]]
    top = max(("setosa", "versicolor", "virginica"), key=lambda c: sum(e.species == c for e in train))
    assert tasks.constant_answer(tasks.get("iris"), train) == top
    const = next(r for r in table["rows"] if r["strategy"] == "constant answer (reference)")
    rate = sum(e.species == top for e in test) / len(test)
    assert const["Iris (accuracy)"].startswith(f"{100 * rate:.1f} [")


def test_stage_keys_follow_the_recipe(study, monkeypatch):
    run = study[3]
    monkeypatch.setenv("ADAPTLAB_RUNS", str(run.parent))

    def stale(**kw):
        out = run_study("bettertogether", bt, config(**kw), dry=True)["stages"]
        return sorted(r["stage"] for r in out if r["status"] != "cached")

    assert stale() == []
    assert stale(epochs=1) == ["chain-iris-s0-pwp", "chain-iris-s0-wp", "chain-wordproblems-s0-pwp",
                               "chain-wordproblems-s0-wp"]
    sizes = {**SIZES, "iris": {**SIZES["iris"], "test": 11}}
    # the table reads the sizes too (its constant-answer row)
    assert stale(sizes=sizes) == ["chain-iris-s0-pwp", "chain-iris-s0-wp", "table"]
    assert stale(max_tokens=50, candidates=1) == stale(epochs=1)
    assert stale(task_max_tokens={"wordproblems": 50}) == ["chain-wordproblems-s0-pwp",
                                                           "chain-wordproblems-s0-wp"]


@pytest.mark.parametrize("kw, msg", [
    ({"tasks": ["hotpot"]}, "tasks: expected some of"),
    ({"strategies": ["p -> p"]}, "strategies: expected some of"),
    ({"seeds": [1, 1]}, "seeds: expected distinct"),
    ({"sizes": {"iris": {"train": 0}}}, "sizes.iris: train, val and test must be at least 1"),
    ({"sizes": {"iris": {"trian": 3}}}, "sizes.iris: unknown field trian"),
    ({"task_max_tokens": {"gsm8k": 64}}, "task_max_tokens: unknown task gsm8k"),
    ({"task_max_tokens": {"iris": 0}}, "task_max_tokens.iris: must be a positive integer"),
])
def test_bad_recipes_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        config(**kw)


def test_table_pools_seeds_by_item(tmp_path):
    # two seeds of iris, each with its own split: every strategy's cell counts the items of both
    # seeds (keyed by seed and id), vanilla comes from each seed's first chain, and the constant
    # row is each seed's own training set's most common species
    from adaptlab.runs.declare import Ctx
    from adaptlab.studies.bettertogether_config import Sizes, TableStage
    from adaptlab.studies.bettertogether_stages import table_stage

    sizes = Sizes(10, 5, 12)
    inputs, names = {}, []
    truth = {}
    for seed in (0, 1):
        train, _, test = tasks.get("iris").load(seed=seed, n_train=10, n_val=5, n_test=12)
        truth[seed] = (train, test)
        right = [{"id": e.id, "accuracy": float(i % 2 == 0), "valid": 1.0} for i, e in enumerate(test)]
        for chain, strategies in (("p", {"vanilla": 0.0, "p": None}), ("w", {"w": 1.0})):
            res = {}
            for s, score in strategies.items():
                items = right if score is None else [{**r, "accuracy": score} for r in right]
                res[s] = {"failed": None, "test": items, "cost": dict.fromkeys(
                    ("generations", "prompt_tokens", "completion_tokens", "train_seconds",
                     "seconds"), 1)}
            name = f"chain-iris-s{seed}-{chain}"
            path = tmp_path / f"{name}.json"
            path.write_text(__import__("json").dumps(
                {"task": "iris", "seed": seed, "chain": chain,
                 "flag_compilation_error_occurred": False,
                 "strategies": res}))
            inputs[name] = path
            names.append(name)
    out = tmp_path / "table"
    out.mkdir()
    ctx = Ctx(out, tmp_path / "work", tmp_path / "cache")
    metrics = table_stage(TableStage(["iris"], ["vanilla", "p", "w"], {"iris": names}, "fake", 0,
                                     {"iris": dict(sizes.__dict__)}), inputs, ctx)
    assert metrics["iris/vanilla"] == 0.0 and metrics["iris/w"] == 1.0
    assert metrics["iris/p"] == 0.5  # 6 of 12 per seed, pooled over 24 items
    expected = []
    for seed, (train, test) in truth.items():
        top = tasks.constant_answer(tasks.get("iris"), train)
        expected += [e.species == top for e in test]
    assert metrics["iris/constant"] == round(sum(expected) / 24, 4)
    verdicts = {(v["a"], v["b"]): v for v in read_json(out / "table.json")["verdicts"]}
    assert "n = 24" in verdicts[("w", "vanilla")]["verdict"]
