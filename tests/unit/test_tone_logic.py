"""Tone-study logic with fakes: splits, corpus errors, resumable simulation, filters, judge maths."""
from __future__ import annotations

import json

import numpy as np
import pytest

from adaptlab.errors import InputError
from adaptlab.evaluate.judges import agreement, best_bias, LLMJudge
from adaptlab.lm.base import GenParams
from adaptlab.lm.fake import FakeLM
from adaptlab.data.corpus import load_labeled, load_passages as load_corpus, split_by_group
from adaptlab.studies.tone_config import Config
from adaptlab.synth.filters import ngram_copy_share
from adaptlab.synth.simulate import Demo, ToneSpec, simulate, teacher_chat

CORPUS = "corpora/tone/passages.jsonl"


def test_shipped_corpus_is_large_and_valid():
    rows = load_corpus(CORPUS)
    assert len(rows) >= 200
    assert all(2 <= len(r["qa"]) <= 3 for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_shipped_calibration_has_both_classes():
    rows = [json.loads(l) for l in open("corpora/tone/calibration.jsonl")]
    labels = [r["label"] for r in rows]
    assert len(rows) >= 150 and 0.4 < sum(labels) / len(labels) < 0.6


def test_splits_are_disjoint_by_passage_and_sized():
    cfg = Config()
    sizes = {"eval": cfg.split.eval_questions, "val": cfg.split.val_questions,
             "train": cfg.split.train_questions}
    s = split_by_group(load_corpus(CORPUS), sizes, cfg.seed)
    assert len(s["eval"]) == cfg.split.eval_questions
    assert len(s["train"]) == cfg.split.train_questions
    pids = [{it["passage_id"] for it in s[k]} for k in ("eval", "val", "train")]
    assert not (pids[0] & pids[1]) and not (pids[0] & pids[2]) and not (pids[1] & pids[2])
    assert split_by_group(load_corpus(CORPUS), sizes, cfg.seed) == s  # deterministic


@pytest.mark.parametrize("line,field", [
    ('{"id": "a", "qa": []}', "passage"),
    ('{"id": "a", "passage": "p", "qa": []}', "qa"),
    ('{"id": "a", "passage": "p", "qa": [{"question": 3, "answer": "x"}]}', "qa[0].question"),
])
def test_corpus_errors_name_file_line_field(tmp_path, line, field):
    p = tmp_path / "c.jsonl"
    good = '{"id": "g", "passage": "p", "qa": [{"question": "q", "answer": "a"}]}'
    p.write_text(good + "\n" + line + "\n")
    with pytest.raises(InputError) as e:
        load_corpus(str(p))
    assert str(e.value).startswith(f"{p}:2: {field}:")


def _items(n):
    return [{"id": f"i{k}", "passage": f"Passage {k}.", "question": f"Question {k}?", "answer": "A.",
             "facts": f"Fact {k}."}
            for k in range(n)]


def test_simulation_resumes_after_a_crash_without_loss_or_duplicates(tmp_path):
    spec, params = ToneSpec(), GenParams(max_new_tokens=8, temperature=0.7, seed=5)
    reply = lambda chat, p: f"{chat[-1]['content'][:30]} seed={p.seed}"  # noqa: E731
    full = simulate(_items(50), FakeLM(reply), spec, params, tmp_path / "a.jsonl", chunk=8)
    crashing = FakeLM(reply, fail_after=3)
    with pytest.raises(RuntimeError):
        simulate(_items(50), crashing, spec, params, tmp_path / "b.jsonl", chunk=8)
    resumed_lm = FakeLM(reply)
    resumed = simulate(_items(50), resumed_lm, spec, params, tmp_path / "b.jsonl", chunk=8)
    assert resumed == full
    assert resumed_lm.chats_seen == 50 - 3 * 8  # only the unfinished chunks were asked again
    ids = [json.loads(l)["id"] for l in open(tmp_path / "b.jsonl")]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 50


def test_teacher_prompt_carries_tone_examples_and_passage():
    spec = ToneSpec(description="like a pirate", examples=["Arr, matey!"], counter_examples=["Dear Sir."],
                    demos=[Demo("Why is grass green?", "Chlorophyll.", "Arr, 'tis the chlorophyll!")])
    chat = teacher_chat(spec, "The sea is salty.", "Why is the sea salty?")
    assert "like a pirate" in chat[0]["content"] and "Arr, matey!" in chat[0]["content"]
    assert "Dear Sir." in chat[0]["content"]
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[2]["content"] == "Arr, 'tis the chlorophyll!" and "Chlorophyll." in chat[1]["content"]
    assert "The sea is salty." in chat[-1]["content"] and "Why is the sea salty?" in chat[-1]["content"]


def test_copy_share_detects_verbatim_copies():
    src = "The quick brown fox jumps over the lazy dog near the river bank every single morning."
    assert ngram_copy_share(src, src) == 1.0
    assert ngram_copy_share("You know, foxes are fast and dogs are lazy, so that's how it goes.", src) == 0.0


def test_best_bias_fixes_a_shifted_judge():
    m = np.array([3.0, 2.5, 2.0, 1.5, 1.0, 0.5])
    y = np.array([1, 1, 1, 0, 0, 0])
    assert ((m > 0) == (y == 1)).mean() == 0.5
    b = best_bias(m, y)
    assert (((m + b) > 0) == (y == 1)).mean() == 1.0


def test_agreement_kappa():
    assert agreement([0.9, 0.1, 0.8, 0.2], [0.9, 0.1, 0.8, 0.2])["kappa"] == 1.0
    assert agreement([0.9, 0.9, 0.1, 0.1], [0.9, 0.1, 0.9, 0.1])["kappa"] == 0.0


def test_llm_judge_yes_no_path_on_generation_only_backend():
    class GenOnly:
        name = "gen"

        def chat(self, chats, params):
            return ["Yes" if "you" in c[-1]["content"].split('"""')[1] else "No" for c in chats]

    j = LLMJudge(GenOnly(), "talks to you")
    s = j.score(["Here's what you do.", "The procedure is as follows."])
    assert s[0] > 0.5 > s[1]


def test_trim_incomplete_keeps_whole_sentences_only():
    from adaptlab.synth.filters import trim_incomplete

    assert trim_incomplete("It's neat. You'll love it. And then the") == "It's neat. You'll love it."
    assert trim_incomplete("All done here!") == "All done here!"
    assert trim_incomplete("no end at all") == "no end at all"


@pytest.mark.parametrize("line,field", [
    ('{"text": "hi"}', "label"),
    ('{"text": "hi", "label": 2}', "label"),
    ('{"label": 1}', "text"),
    ('{"text": "hi", "label": true}', "label"),
])
def test_labeled_set_errors_name_file_line_field(tmp_path, line, field):
    p = tmp_path / "cal.jsonl"
    p.write_text('{"text": "ok", "label": 1}\n' + line + "\n")
    with pytest.raises(InputError) as e:
        load_labeled(str(p))
    assert str(e.value).startswith(f"{p}:2: {field}:")


def test_labeled_set_bad_json_line_is_one_line_error_not_a_traceback(tmp_path):
    p = tmp_path / "cal.jsonl"
    p.write_text('{"text": "ok", "label": 1}\n{"text": "x", "label": 1\n')
    with pytest.raises(InputError) as e:
        load_labeled(str(p))
    assert str(e.value).startswith(f"{p}:2: invalid JSON")
