"""The knowledge-intervention study's logic on fakes: the split, the probe, how the instruction
sets are built (harmonious = probed right and sure, incompatible = probed wrong with the gold
answer, self-aligning = the same questions with the probe's own answer, all the same size,
mixtures nested), the evaluation's accuracies, paired tests and consistency, and the summary's
partial correlation, checked against values computed here. Training writes a placeholder
adapter; the fake student answers according to the adapter it wears, so each set's accuracy is
known in advance."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptlab.data.mc import LETTERS, load_questions
from adaptlab.errors import AdaptlabError, InputError
from adaptlab.evaluate.mc import kl, partial_spearman, rank_correlation
from adaptlab.evaluate.stats import mcnemar
from adaptlab.io import read_json, read_jsonl
from adaptlab.lm.fake import FakeLM, _unit
from train_fakes import fake_tune

DOMAINS = ["geo", "bio", "hist", "phys", "lit", "math"]


def _write_questions(path: Path, per_domain: int = 24) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for d in DOMAINS:
        with open(path / f"{d}.jsonl", "w") as f:
            for i in range(per_domain):
                opts = [f"{d} option {i}-{k}" for k in range(4)]
                f.write(json.dumps({"question": f"{d} question number {i}?", "options": opts,
                                    "answer": LETTERS[i % 4], "domain": d}) + "\n")
    return path


QUESTIONS: dict[str, dict] = {}


def _question(chat) -> dict:
    """The last question in the chat's text (the probe's prompt holds demos before it)."""
    text = chat[-1]["content"]
    key = max((q for q in QUESTIONS if q in text), key=text.rfind)
    return QUESTIONS[key]


def knows(q: dict) -> bool:
    return _unit(q["question"]) < 0.45


class FakeStudent(FakeLM):
    """Base: sure (0.7) of the gold option when it `knows` the question, else sure of the next
    option. Tuned on harmonious: always right; on incompatible: always the option two after the
    gold; on self_aligning or a mixture: as the base. Explanations: two sentences, the second cut."""

    def __init__(self, ref, precision="fp32", batch_size=8, model=None, tokenizer=None, name=None, **kw):
        super().__init__(lambda chat, p: "It follows from the facts. And then some", name=name or f"local:{ref}")
        self.ref = str(ref)

    def _pick(self, q: dict) -> int:
        g = LETTERS.index(q["answer"])
        a = self.adapter or (self.ref if "tune-" in self.ref else "")  # a full fine-tune is its dir
        if "-harmonious" in a:
            return g
        if "-incompatible" in a:
            return (g + 2) % 4
        return g if knows(q) else (g + 1) % 4

    def score(self, chats, continuations):
        """Texts form: a high log-probability for the picked option's text, low for the others."""
        out = []
        for c, t in zip(chats, continuations):
            q = _question(c)
            out.append(-1.0 * len(t) if q["options"].index(t) == self._pick(q) else -9.0 * len(t))
        return out

    def choice_logprobs(self, chats, options):
        import math

        out = []
        for c in chats:
            k = self._pick(_question(c))
            out.append([math.log(0.7 if i == k else 0.1) for i in range(4)])
        return out


RECIPE = {"name": "knowledge-fake", "train_domains": ["geo", "bio"], "id_domains": ["hist", "phys"],
          "homo_n": 6, "shots": 2, "test_per_domain": 10, "threshold": 0.5,
          "models": ["smollm2-135m-instruct"], "ratios": [0, 0.5, 1], "debias": "none",
          "score_by": "letters"}


@pytest.fixture
def run(tmp_path, monkeypatch):
    import adaptlab.lm.local
    import adaptlab.train.lora
    from adaptlab.config import from_dict
    from adaptlab.runs.study import run_study
    from adaptlab.studies import knowledge

    qdir = _write_questions(tmp_path / "questions")
    QUESTIONS.clear()
    QUESTIONS.update({q["question"]: q for q in load_questions([str(qdir)])})
    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", FakeStudent)
    monkeypatch.setattr(adaptlab.train.lora, "tune", fake_tune)

    def go(**over):
        cfg = from_dict(knowledge.Config, {**RECIPE, "questions": [str(qdir)], **over})
        res = run_study("knowledge", knowledge, cfg)
        return res, Path(res["run"])
    return go


def test_sets_follow_the_probe(run):
    res, d = run()
    pool = {q["id"]: q for q in read_jsonl(d / "data" / "pool.jsonl")}
    probe = {p["id"]: p for p in read_jsonl(d / "probe-smollm2-135m-instruct" / "probe.jsonl")}
    assert set(probe) == set(pool) and len(pool) == 2 * (24 - 6 - 2)
    for p in probe.values():  # the probe read the fake's probabilities
        assert p["correct"] == knows(pool[p["id"]]) and abs(p["confidence"] - 0.7) < 1e-6
    sets = {n: read_jsonl(d / "sets-smollm2-135m-instruct" / f"{n}.jsonl")
            for n in ("harmonious", "incompatible", "mix-0.5", "self_aligning")}
    sizes = {len(v) for v in sets.values()}
    n_known = sum(p["correct"] for p in probe.values())
    assert sizes == {min(n_known, len(probe) - n_known)}
    assert all(probe[r["id"]]["correct"] and r["letter"] == pool[r["id"]]["answer"] for r in sets["harmonious"])
    assert all(not probe[r["id"]]["correct"] and r["letter"] == pool[r["id"]]["answer"]
               for r in sets["incompatible"])
    assert all(r["letter"] == probe[r["id"]]["pred"] != pool[r["id"]]["answer"] for r in sets["self_aligning"])
    ids = [r["id"] for r in sets["incompatible"]]
    assert [r["id"] for r in sets["self_aligning"]] == ids == [r["id"] for r in sets["mix-0.5"]]
    own = sum(r["source"] == "own" for r in sets["mix-0.5"])
    assert own == round(0.5 * len(ids))
    for r in sets["mix-0.5"]:
        assert r["letter"] == (probe[r["id"]]["pred"] if r["source"] == "own" else pool[r["id"]]["answer"])
    t = sets["self_aligning"][0]["messages"]
    q = pool[sets["self_aligning"][0]["id"]]
    assert t[0]["content"].endswith("Answer:") and q["question"] in t[0]["content"]
    letter = sets["self_aligning"][0]["letter"]
    assert t[1]["content"] == f"{letter}. {q['options'][LETTERS.index(letter)]}\nIt follows from the facts."
    held = {q["id"] for s in ("homo", "demos") for q in read_jsonl(d / "data" / f"{s}.jsonl")}
    assert not held & set(pool)


def test_evaluation_and_summary(run):
    res, d = run()
    m = read_json(d / "evaluate-smollm2-135m-instruct" / "metrics.json")
    homo = read_jsonl(d / "data" / "homo.jsonl")
    base_ok = [knows(q) for q in homo]
    s = m["systems"]
    assert s["harmonious"]["homo"]["accuracy"] == 1.0 and s["incompatible"]["homo"]["accuracy"] == 0.0
    assert s["base"]["homo"]["accuracy"] == round(sum(base_ok) / len(base_ok), 4)
    assert s["self_aligning"]["homo"]["rank_corr"] == 1.0 and s["self_aligning"]["homo"]["kl"] == 0.0
    assert s["incompatible"]["homo"]["rank_corr"] < 1.0 and s["incompatible"]["homo"]["kl"] > 0
    assert len(read_jsonl(d / "data" / "ood.jsonl")) == 20  # lit and math, 10 each
    t = next(t for t in m["tests"] if t["a"] == "self_aligning" and t["split"] == "homo")
    assert t["p"] == round(mcnemar(base_ok, [False] * len(homo))["p"], 4)
    assert "self-aligning beat incompatible" in t["verdict"] or "No significant" in t["verdict"]
    summ = read_json(d / "summary" / "manifest.json")["metrics"]
    assert "consistency_accuracy_partial_r" in summ
    report = (d / "report" / "report.md").read_text()
    assert "Learning or self-aligning" in report and "The paper's numbers" in report


def test_unbalanceable_sets_are_refused(run):
    with pytest.raises(AdaptlabError, match="cannot be balanced"):
        run(set_size=40)


def test_missing_domain_is_named(run):
    with pytest.raises(AdaptlabError, match="domains chem: not in the questions"):
        run(id_domains=["chem"])


def test_bad_question_lines_name_file_line_field(tmp_path):
    p = tmp_path / "q.jsonl"
    good = {"question": "Q?", "options": ["a", "b", "c", "d"], "answer": "B", "domain": "x"}
    for bad, field in [({**good, "answer": "E"}, "answer"), ({**good, "options": ["a", "b"]}, "options"),
                       ({k: v for k, v in good.items() if k != "domain"}, "domain"),
                       ({**good, "options": ["a", "a", "c", "d"]}, "options")]:
        p.write_text(json.dumps(good) + "\n" + json.dumps({**bad, "question": "Other?"}) + "\n")
        with pytest.raises(InputError) as e:
            load_questions([str(p)])
        assert f"{p}:2" in str(e.value) and field in str(e.value)
    p.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InputError, match="repeats"):
        load_questions([str(p)])


def test_mmlu_csv_is_read(tmp_path):
    p = tmp_path / "high_school_geography_test.csv"
    p.write_text('"Which is largest?",Pacific,Atlantic,Indian,Arctic,A\n')
    (q,) = load_questions([str(p)])
    assert q["domain"] == "high_school_geography" and q["options"][0] == "Pacific" and q["answer"] == "A"


def test_consistency_measures():
    from scipy.stats import spearmanr

    a, b = [0.1, 0.5, 0.3, 0.1], [0.4, 0.3, 0.2, 0.1]
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert rank_correlation(a, a) == pytest.approx(1.0) and kl(a, a) == pytest.approx(0.0)
    assert kl([0.5, 0.5, 0, 0], [0.25, 0.25, 0.25, 0.25]) == pytest.approx(0.6931, abs=1e-3)


def test_partial_spearman_matches_the_formula():
    import numpy as np
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    z = rng.normal(size=30)
    x, y = z + rng.normal(size=30), z + 0.5 * rng.normal(size=30)
    r = np.corrcoef([rankdata(x), rankdata(y), rankdata(z)])
    want = (r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    got = partial_spearman(x, y, z)
    assert got["r"] == pytest.approx(want, abs=1e-9) and 0 <= got["p"] <= 1 and got["n"] == 30
    with pytest.raises(ValueError):
        partial_spearman([1, 2, 3], [1, 2, 3], [1, 2, 3])


def test_option_probs_by_letters_and_by_texts():
    from adaptlab.data.mc import zero_shot
    from adaptlab.evaluate.mc import option_probs

    qs = [{"id": f"x:{i}", "question": f"Q{i}?", "options": [f"o{i}{k}" for k in range(4)],
           "answer": "A", "domain": "x"} for i in range(3)]
    lm = FakeLM()
    chats = [zero_shot(q) for q in qs]
    for by in ("letters", "texts"):
        p = option_probs(lm, chats, qs, by)
        assert len(p) == 3 and all(len(v) == 4 and sum(v) == pytest.approx(1.0) for v in p)
    kind, pairs = lm.log[-1]
    assert kind == "score" and [t for _, t in pairs] == [o for q in qs for o in q["options"]]
    assert [c for c, _ in pairs][:4] == [chats[0]] * 4
    with pytest.raises(ValueError, match="score_by"):
        option_probs(lm, chats, qs, "words")


def test_a_split_without_questions_is_refused(run):
    with pytest.raises(AdaptlabError, match="split OOD: no questions"):
        run(id_domains=["hist", "phys", "lit", "math"])


def test_debias_removes_a_position_prior():
    from adaptlab.evaluate.mc import debias

    # a model that knows every answer but multiplies option A by 20: raw argmax is always A
    keys = [0, 1, 2, 3] * 5
    raw = []
    for k in keys:
        v = [20.0 if i == 0 else 1.0 for i in range(4)]
        v[k] *= 3
        raw.append([x / sum(v) for x in v])
    assert all(max(range(4), key=p.__getitem__) == 0 for p in raw)
    fixed = debias(raw)
    assert [max(range(4), key=p.__getitem__) for p in fixed] == keys
    assert all(sum(p) == pytest.approx(1.0) for p in fixed)
    assert debias(raw, "none") == raw
    with pytest.raises(ValueError):
        debias(raw, "calibrate")


def test_the_texts_form_runs_the_study_in_cloze_form(run):
    res, d = run(score_by="texts")
    pool = {q["id"]: q for q in read_jsonl(d / "data" / "pool.jsonl")}
    probe = {p["id"]: p for p in read_jsonl(d / "probe-smollm2-135m-instruct" / "probe.jsonl")}
    assert all(p["correct"] == knows(pool[p["id"]]) for p in probe.values())
    r = read_jsonl(d / "sets-smollm2-135m-instruct" / "self_aligning.jsonl")[0]
    q = pool[r["id"]]
    user, target = r["messages"][0]["content"], r["messages"][1]["content"]
    assert "A. " not in user and user.endswith(f"Question: {q['question']}\nAnswer:")
    assert target.startswith(q["options"][LETTERS.index(r["letter"])] + "\n")
    m = read_json(d / "evaluate-smollm2-135m-instruct" / "metrics.json")
    assert m["systems"]["harmonious"]["ood"]["accuracy"] == 1.0


def test_full_fine_tunes_are_evaluated_as_their_own_models(run):
    res, d = run(tune={"method": "full"})
    m = read_json(d / "evaluate-smollm2-135m-instruct" / "metrics.json")
    assert m["systems"]["harmonious"]["id"]["accuracy"] == 1.0
    assert m["systems"]["incompatible"]["id"]["accuracy"] == 0.0
    assert (d / "tune-smollm2-135m-instruct-harmonious" / "model.safetensors").exists()
