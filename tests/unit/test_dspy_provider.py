"""The DSPy provider, adapter and server wiring on a fake model: BetterTogether end to end over
HTTP (adaptlab's server answering, the fake trainer standing in for LoRA), and the pieces."""
from __future__ import annotations

import re

import pytest

dspy = pytest.importorskip("dspy")

import adaptlab.programs  # noqa: E402,F401  (sets LITELLM_LOCAL_MODEL_COST_MAP)
import adaptlab.train  # noqa: E402
from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.lm.fake import FakeLM  # noqa: E402
from adaptlab.programs.adapter import FieldAdapter  # noqa: E402
from adaptlab.programs.provider import AdaptlabProvider, tune_config  # noqa: E402
from dspy.utils.exceptions import AdapterParseError  # noqa: E402
from train_fakes import fake_tune  # noqa: E402

SPECIES = ("setosa", "versicolor", "virginica")


class Iris(dspy.Signature):
    """Classify the iris flower."""

    petal: str = dspy.InputField()
    species: str = dspy.OutputField(desc="setosa, versicolor or virginica")


def truth(petal: float) -> str:
    return SPECIES[0] if petal < 2.5 else SPECIES[1] if petal < 5 else SPECIES[2]


def examples(values):
    return [dspy.Example(petal=f"{v} cm", species=truth(v)).with_inputs("petal") for v in values]


class Fake(FakeLM):
    """Zero-shot it echoes the input (no `Species:` line: a parse error); with demos it always
    says setosa; with a fine-tuned adapter in it, it is right. Records what it was asked."""

    def __init__(self):
        super().__init__(self.reply, name="fake-base")
        self.seen: list[tuple[str | None, list[dict]]] = []

    def reply(self, chat, params):
        self.seen.append((self.adapter, chat))
        petal = float(chat[-1]["content"].split("Petal: ")[1].split(" cm")[0])
        if self.adapter:
            return f"Species: {truth(petal)}"
        return "Species: setosa" if len(chat) > 2 else chat[-1]["content"]


@pytest.fixture
def provider(tmp_path, monkeypatch):
    trained = []

    def tune(cfg, data, out, source="data", **kw):
        trained.append((cfg, data))
        return fake_tune(cfg, data, out, source)

    monkeypatch.setattr(adaptlab.train, "tune", tune)
    fakes = []

    def factory():
        fakes.append(Fake())
        return fakes[-1]

    p = AdaptlabProvider("fake-base", tmp_path / "adapters", lm_factory=factory,
                         tune={"epochs": 1})
    p.trained, p.fakes = trained, fakes
    yield p
    p.close()


def metric(example, pred, trace=None):
    return example.species == getattr(pred, "species", None)


def test_bettertogether_end_to_end_over_http(provider):
    lm = provider.lm(temperature=0, max_tokens=16, cache=False, num_retries=0)
    with dspy.context(lm=lm, adapter=FieldAdapter()):  # not configure: it would leak
        program = dspy.Predict(Iris)
        program.set_lm(lm)
        p = dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=2,
                                                  max_labeled_demos=2, num_candidate_programs=1,
                                                  num_threads=2)
        w = dspy.BootstrapFinetune(metric=metric, num_threads=2,
                                   train_kwargs={"num_train_epochs": 3, "learning_rate": 1e-4})
        train = examples([1.2, 1.4, 1.1, 1.6, 4.0, 5.5, 1.3, 1.5])
        val = examples([1.0, 4.2, 6.0, 1.7])
        out = dspy.BetterTogether(metric=metric, p=p, w=w).compile(
            program, trainset=train, valset=val, strategy="p -> w")

        assert out.flag_compilation_error_occurred is False
        scores = {c["strategy"]: c["score"] for c in out.candidate_programs}
        assert scores[""] == 0  # zero-shot: no parsable reply
        assert scores["p"] == 50  # demos: always setosa, right on the two setosa
        assert scores["p -> w"] == 100  # the adapter is right
        assert out.candidate_programs[0]["strategy"] == "p -> w"

        # one fine-tune, on the traces that passed, with DSPy's train_kwargs read as ours
        assert len(provider.trained) == 1 and len(provider.jobs) == 1
        cfg, data = provider.trained[0]
        assert (cfg.epochs, cfg.lr, cfg.model) == (3, 1e-4, "fake-base")
        assert len(data) == 6  # the six setosa of the trainset (setosa is all the teacher says)
        assert all(r["messages"][-1] == {"role": "assistant", "content": "Species: setosa"}
                   for r in data)
        assert data[0]["messages"][0]["role"] == "system"

        # the returned program answers through the new adapter, served by name
        name = provider.jobs[0].name
        assert out.predictors()[0].lm.model == f"openai/{name}"
        assert name in provider.server.adapters
        assert provider.server.lm is None  # BetterTogether killed its LMs at the end: unloaded
        out.predictors()[0].lm.launch()
        before = provider.usage()[name]["generations"]
        assert out(petal="6.1 cm").species == "virginica"
        assert provider.usage()[name]["generations"] == before + 1
        assert provider.fakes[-1].seen[-1][0] == provider.jobs[0].path


def test_kill_unloads_and_launch_reloads(provider):
    lm = provider.lm(cache=False, num_retries=0)
    provider.launch(lm)
    assert isinstance(provider.server.lm, Fake)
    provider.kill(lm)
    assert provider.server.lm is None
    with pytest.raises(Exception, match="503|no model is loaded"):
        lm("hello")
    provider.launch(lm)
    assert lm(messages=[{"role": "user", "content": "Petal: 1.0 cm"}]) == ["Petal: 1.0 cm"]
    assert len(provider.fakes) == 2


def test_same_data_reuses_the_adapter(provider):
    data = [{"messages": [{"role": "user", "content": "Petal: 1 cm"},
                          {"role": "assistant", "content": "Species: setosa"}]}]
    a = provider.finetune(None, "openai/fake-base", data, "chat", {})
    b = provider.finetune(None, "openai/fake-base", data, "chat", {})
    c = provider.finetune(None, "openai/fake-base", data, "chat", {"epochs": 2})
    assert a == b != c and a.startswith("openai/fake-base-ft-")
    assert [j.reused for j in provider.jobs] == [False, True, False]
    assert len(provider.trained) == 2


def test_finetune_refuses_bad_input(provider):
    with pytest.raises(AdaptlabError, match="no training data"):
        provider.finetune(None, "openai/fake-base", [], "chat", {})
    with pytest.raises(AdaptlabError, match=r"train_data\[0\]"):
        provider.finetune(None, "openai/fake-base", [{"prompt": "x"}], "chat", {})
    with pytest.raises(AdaptlabError, match="chat records"):
        provider.finetune(None, "openai/fake-base", [{"messages": []}], "completion", {})
    with pytest.raises(AdaptlabError, match="unknown setting `warmup_ratio`"):
        provider.finetune(None, "openai/fake-base", [{"messages": []}], "chat",
                          {"warmup_ratio": 0.1})
    assert provider.trained == []


def test_tune_config_names():
    cfg = tune_config("m", {"lora_r": 32, "epochs": 5}, {"per_device_train_batch_size": 8,
                                                        "max_seq_length": 256})
    assert (cfg.model, cfg.lora_r, cfg.epochs, cfg.batch_size, cfg.max_length) == ("m", 32, 5, 8, 256)
    with pytest.raises(AdaptlabError, match="unknown setting `model`"):
        tune_config("m", {}, {"model": "other"})


class QA(dspy.Signature):
    """Answer."""

    question: str = dspy.InputField()
    search_query: str = dspy.OutputField()
    answer: int = dspy.OutputField()


def test_field_adapter_format():
    a = FieldAdapter()
    msgs = a.format(Iris, [{"petal": "1 cm", "species": "setosa"}], {"petal": "5 cm"})
    assert msgs[0]["content"] == ("Given `petal`, produce `species`.\nClassify the iris flower.\n"
                                  "Reply as:\nSpecies: <setosa, versicolor or virginica>")
    assert msgs[1:] == [{"role": "user", "content": "Petal: 1 cm"},
                        {"role": "assistant", "content": "Species: setosa"},
                        {"role": "user", "content": "Petal: 5 cm\n\nReply with `Species:`."}]
    multi = a.format(QA, [], {"question": "line one\nline two"})
    assert multi[-1]["content"].startswith("Question:\nline one\nline two")
    assert "Search query: <search_query>\nAnswer: <answer>" in multi[0]["content"]


@pytest.mark.parametrize("reply, expected", [
    ("Search query: x y\nAnswer: 12", {"search_query": "x y", "answer": 12}),
    ("**Search query:** x\n\n**Answer:** 7", {"search_query": "x", "answer": 7}),
    ("search QUERY: a\nmore of it\nanswer:3", {"search_query": "a\nmore of it", "answer": 3}),
    ("Answer: 1\nSearch query: q\nAnswer: 2", {"search_query": "q", "answer": 1}),
])
def test_field_adapter_parse(reply, expected):
    assert FieldAdapter().parse(QA, reply) == expected


class CoT(dspy.Signature):
    """Solve."""

    question: str = dspy.InputField()
    reasoning: str = dspy.OutputField()
    answer: str = dspy.OutputField()


def test_field_adapter_parse_errors_and_leniency():
    a, strict = FieldAdapter(), FieldAdapter(strict=True)
    with pytest.raises(AdapterParseError, match="no Answer: line"):
        a.parse(QA, "Search query: only this")  # a typed field is never made up
    with pytest.raises(AdapterParseError, match="Answer: cannot read"):
        a.parse(QA, "Search query: q\nAnswer: many")
    assert a.parse(Iris, "  virginica \n") == {"species": "virginica"}  # no label: the last field
    assert a.parse(CoT, "The answer is 3.") == {"reasoning": "", "answer": "The answer is 3."}
    assert a.parse(CoT, "Reasoning: 2 + 1\nso 3") == {"reasoning": "2 + 1\nso 3", "answer": ""}
    assert a.parse(Iris, "   ") == {"species": ""}
    with pytest.raises(AdapterParseError, match="no Answer: line"):
        strict.parse(CoT, "Reasoning: 2 + 1")
    with pytest.raises(AdapterParseError):
        strict.parse(Iris, "   ")


class Generic(FakeLM):
    """Answers any FieldAdapter prompt: each `Reply as:` label with a short value (`setosa` for
    the species)."""

    def __init__(self):
        super().__init__(self.reply, name="fake-base")

    @staticmethod
    def reply(chat, params):
        block = chat[0]["content"].rsplit("Reply as:\n", 1)[-1]
        labels = re.findall(r"^([A-Z][\w ]*): <", block, re.M)
        return "\n".join(f"{lab}: {'setosa' if lab == 'Species' else 'Name the species.'}"
                         for lab in labels)


def test_miprov2_runs_against_the_server(tmp_path):
    pytest.importorskip("optuna")
    provider = AdaptlabProvider("fake-base", tmp_path / "adapters", lm_factory=Generic)
    try:
        lm = provider.lm(temperature=0, max_tokens=64, cache=False, num_retries=0)
        with dspy.context(lm=lm, adapter=FieldAdapter()):
            provider.launch(lm)
            program = dspy.Predict(Iris)
            program.set_lm(lm)
            opt = dspy.MIPROv2(metric=metric, auto=None, num_candidates=2, num_threads=2,
                               max_bootstrapped_demos=1, max_labeled_demos=1, verbose=False)
            out = opt.compile(program, trainset=examples([1.0, 1.2, 4.0, 1.4, 6.0, 1.1]),
                              valset=examples([1.3, 5.0, 1.6, 4.4]), num_trials=2, minibatch=False)
            assert out(petal="1.0 cm").species == "setosa"
        assert provider.usage()["fake-base"]["generations"] > 10  # proposals and trials, over HTTP
    finally:
        provider.close()
