"""Teacher-written explanations: kept only where the teacher's reasoning reaches the gold answer."""
from __future__ import annotations

import json

import pytest

from adaptlab import cli
from adaptlab.errors import AdaptlabError
from adaptlab.io import read_journal, read_jsonl
from adaptlab.lm.backends import BACKENDS
from adaptlab.lm.config import BackendConfig
from adaptlab.lm.fake import FakeLM
from adaptlab.synth.rationales import (RationaleConfig, check_reply, explain, final_answer,
                                       rationale_config, same_answer)


def rec(q, a, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            **extra}


RECORDS = [
    rec("What is 6+7?", "13"),            # right: kept
    rec("What is 2+2?", "4"),             # wrong answer
    rec("Capital of France?", "Paris"),   # no "The answer is"
    rec("What is 10/4?", "2.5"),          # right, but no reasoning before it
    rec("Why?", "Because.", explanation="given"),  # already explained: passed through
    rec("Half of 26?", "13.0"),           # right, numerically, in bold
]
REPLIES = {
    "What is 6+7?": "6 plus 7 makes 13.\nThe answer is 13.",
    "What is 2+2?": "2 plus 2 makes 5.\nThe answer is 5.",
    "Capital of France?": "It is a lovely city on the Seine.",
    "What is 10/4?": "The answer is 2.50.",
    "Half of 26?": "Half of 26 is 13, since 2 x 13 = 26.\n**The answer is 13.**\nHope that helps!",
}


def question(chat):
    return chat[-1]["content"].split("\n\n")[0]


def reply(chat, p):
    """The canned reply, tagged with the sampling seed so that a wrong seed shows in the output."""
    text = REPLIES[question(chat)]
    return text.replace("makes", f"makes (seed {p.seed})")


def cfg(**kw):
    return RationaleConfig(teacher=BackendConfig(batch_size=kw.pop("batch_size", 2)), **kw)


def test_final_answer():
    assert final_answer("so 13.\nThe answer is 13.") == "13"
    assert final_answer("the answer is 3. No wait.\nTHE ANSWER IS: Paris .  ") == "Paris"
    assert final_answer("**The answer is 42.**") == "42"
    assert final_answer("I think it's 13.") is None
    assert final_answer("The answer is .") is None


def test_same_answer():
    assert same_answer("13", "13.0") and same_answer(" Paris. ", "paris")
    assert same_answer("1e3", "1000") and same_answer("-0.5", "-.5")
    assert not same_answer("13", "14") and not same_answer("Paris", "Lyon")
    assert not same_answer(None, "13") and not same_answer("nan", "nan")


def test_keeps_only_replies_that_reach_the_gold_answer():
    lm = FakeLM(reply)
    kept, stats = explain(RECORDS, lm, cfg())
    assert [r["messages"] for r in kept] == [RECORDS[i]["messages"] for i in (0, 4, 5)]
    assert kept[0]["explanation"] == "6 plus 7 makes (seed 0) 13."  # final line removed
    assert kept[1] == RECORDS[4]  # unchanged
    assert kept[2]["explanation"] == "Half of 26 is 13, since 2 x 13 = 26."
    assert stats == {"items": 6, "already_explained": 1, "asked": 5, "kept": 2, "keep_rate": 0.4,
                     "keep_rate_ci": pytest.approx([0.1176, 0.7693], abs=1e-4),
                     "wrong_answer": 1, "no_answer": 1, "empty_reasoning": 1}
    assert lm.chats_seen == 5  # the explained record is not asked
    asked = lm.log[0][1][0]
    last = asked[-1]["content"]
    assert last.startswith("What is 6+7?\n\n") and "The answer is" in last
    assert all(m["role"] != "assistant" for m in asked)  # the gold answer is not shown


def test_check_reply_reasons():
    assert check_reply("x is 4.\nThe answer is 4.", "4") == (None, "x is 4.")
    assert check_reply("The answer is 4.", "4") == ("empty_reasoning", "")
    assert check_reply("x is 5. The answer is 5.", "4") == ("wrong_answer", "")
    assert check_reply("4", "4") == ("no_answer", "")


def test_samples_retry_until_a_correct_reply():
    seen: dict[str, int] = {}
    seeds = []

    def second_try_right(chat, p):
        q = question(chat)
        seen[q] = seen.get(q, 0) + 1
        seeds.append(p.seed)
        return f"Reasoning {seen[q]}.\nThe answer is {13 if seen[q] >= 2 else 12}."

    records = [rec("a?", "13"), rec("b?", "13")]
    kept, stats = explain(records, FakeLM(second_try_right), cfg(samples=3, temperature=0.7))
    assert [r["explanation"] for r in kept] == ["Reasoning 2.", "Reasoning 2."]
    assert seen == {"a?": 2, "b?": 2}  # not asked a third time once right
    assert seeds[0] == seeds[1] != seeds[2] == seeds[3]  # one chunk a try, each try its own seed
    assert stats["kept"] == 2 and stats["wrong_answer"] == 0
    seen.clear()
    _, stats = explain(records, FakeLM(second_try_right), cfg(samples=1))
    assert stats["kept"] == 0 and stats["wrong_answer"] == 2


def test_config_is_checked():
    with pytest.raises(ValueError, match="temperature > 0"):
        RationaleConfig(samples=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        RationaleConfig(max_new_tokens=0)
    c = rationale_config(["batch_size=3", "seed=5", "teacher.precision=fp32"], model="m",
                         samples=None, temperature=0.5)
    assert (c.teacher.model, c.teacher.batch_size, c.teacher.precision) == ("m", 3, "fp32")
    assert (c.seed, c.samples, c.temperature) == (5, 1, 0.5)
    with pytest.raises(AdaptlabError, match="unknown key 'nope'"):
        rationale_config(["nope=1"])


def test_resume_gives_the_uninterrupted_output_without_asking_again(tmp_path):
    c = cfg(samples=2, temperature=0.5)
    whole = explain(RECORDS, FakeLM(reply), c, tmp_path / "whole.journal")
    journal = tmp_path / "killed.journal"
    with pytest.raises(RuntimeError, match="simulated crash"):
        explain(RECORDS, FakeLM(reply, fail_after=2), c, journal)  # 2 of 3 first-try chunks
    lines = journal.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + 4
    journal.write_text("".join(lines[:-1]) + lines[-1][:9])  # killed while journaling chunk 2
    lm = FakeLM(reply)
    assert explain(RECORDS, lm, c, journal) == whole
    # try 1: chunk 2 again (a local teacher's replies depend on its batch) and chunk 3;
    # try 2: the three rejected items, in two chunks
    assert lm.chats_seen == 2 + 1 + 3 and lm.calls == 4
    rows = read_journal(journal)[1:]  # chunk 2's journaled reply is not written twice
    assert len(rows) == len({(r["item"], r["try"]) for r in rows}) == 5 + 3
    lm = FakeLM(reply)
    assert explain(RECORDS, lm, c, journal) == whole and lm.calls == 0  # all journaled


class EachLM(FakeLM):
    """Answers each chat on its own (like HTTP); can drop dead after `die_after` answers."""

    answers_each = True

    def __init__(self, die_after=None):
        super().__init__(reply)
        self.die_after, self.answered = die_after, 0

    def chat(self, chats, params, on_result=None):
        texts = []
        for i, text in enumerate(super().chat(chats, params)):
            if self.die_after is not None and self.answered >= self.die_after:
                raise ConnectionError("endpoint went down")
            self.answered += 1
            on_result(i, text)
            texts.append(text)
        return texts


def test_resume_asks_an_independent_teacher_only_the_missing_items(tmp_path):
    c = cfg(batch_size=4)
    whole = explain(RECORDS, EachLM(), c)
    journal = tmp_path / "j.journal"
    with pytest.raises(ConnectionError):
        explain(RECORDS, EachLM(die_after=3), c, journal)
    lm = EachLM()
    assert explain(RECORDS, lm, c, journal) == whole
    assert lm.chats_seen == 2  # of the 5 asked, 3 were journaled before the endpoint died


def test_journal_of_another_config_is_refused(tmp_path):
    journal = tmp_path / "j.journal"
    with pytest.raises(RuntimeError):
        explain(RECORDS, FakeLM(reply, fail_after=0), cfg(), journal)
    with pytest.raises(AdaptlabError, match="journal of another input"):
        explain(RECORDS, FakeLM(reply), cfg(seed=1), journal)


@pytest.fixture
def fake_backend(monkeypatch):
    """backend=fake builds FakeLMs with `reply`; `made` lists them, `fail_after` is passed on."""
    made, opts = [], {}

    def factory(cfg, **kwargs):
        made.append(FakeLM(reply, name=f"fake:{cfg.model}", **opts))
        return made[-1]

    monkeypatch.setitem(BACKENDS, "fake", factory)
    return made, opts


def write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_end_to_end(tmp_path, capsys, fake_backend):
    from adaptlab.data import load_examples
    from adaptlab.train.formatters import explained

    made, opts = fake_backend
    data, out = write_lines(tmp_path / "in.jsonl", RECORDS), tmp_path / "out.jsonl"
    argv = ["explain", "--data", str(data), "--out", str(out), "--teacher", "t", "backend=fake",
            "batch_size=2"]
    opts["fail_after"] = 1  # killed part-way
    with pytest.raises(RuntimeError):
        cli.main(argv)
    assert not out.exists() and (tmp_path / "out.jsonl.journal").exists()
    opts.clear()
    capsys.readouterr()
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "kept 2 of 5" in printed and "keep rate 0.40 [0.12, 0.77]" in printed
    assert json.loads(printed[: printed.rindex("}") + 1])["kept"] == 2
    assert made[-1].name == "fake:t" and made[-1].chats_seen == 3  # the first chunk was journaled
    assert not (tmp_path / "out.jsonl.journal").exists()
    rows = load_examples(out)  # what tune reads
    assert rows == read_jsonl(out) and len(rows) == 3
    trained = explained("{explanation}\nThe answer is {answer}.")(rows[0])
    assert trained[-1]["content"] == "6 plus 7 makes (seed 0) 13.\nThe answer is 13."


def test_cli_bad_input_fails_in_one_line_and_writes_nothing(tmp_path, capsys, fake_backend):
    made, _ = fake_backend
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(RECORDS[0]) + "\n" + '{"messages": [{"role": "bot"}]}\n')
    out = tmp_path / "out.jsonl"
    rc = cli.main(["explain", "--data", str(data), "--out", str(out), "backend=fake"])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.splitlines()) == 1
    assert err.startswith(f"adaptlab: error: {data}:2: messages[0].")
    assert not out.exists() and not (tmp_path / "out.jsonl.journal").exists() and made == []


@pytest.mark.parametrize("args, expected", [(["--samples", "2"], "temperature > 0"),
                                            (["backend=nope"], "backend: expected one of"),
                                            (["--teacher", "no-such-model"], "unknown model")])
def test_cli_bad_config_fails_in_one_line(tmp_path, capsys, args, expected):
    data, out = write_lines(tmp_path / "in.jsonl", RECORDS), tmp_path / "out.jsonl"
    assert cli.main(["explain", "--data", str(data), "--out", str(out), *args]) != 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err and not out.exists()
