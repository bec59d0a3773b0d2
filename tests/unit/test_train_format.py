"""Example formatters (train/formatters.py) and the TuneConfig fields that choose them, checked
through the real tokenize + assistant-label path with a tiny word-level ChatML tokenizer."""
from __future__ import annotations

import re
import typing

import pytest

from adaptlab.config import ConfigError, load
from adaptlab.errors import InputError
from adaptlab.train import FORMATTERS, FormatError, TuneConfig, formatter_for

pytest.importorskip("transformers")

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ("system user assistant What is 2 + 2? 4 4. Two and two make four. Because The answer is "
         "Say hi. hi Hello! because").split()


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", "<|im_start|>", "<|im_end|>", *WORDS]))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<unk>",
                                eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    t.chat_template = CHATML
    return t


def _ex(answer="4", explanation: str | None = "Two and two make four."):
    ex = {"messages": [{"role": "user", "content": "What is 2 + 2?"},
                       {"role": "assistant", "content": answer}]}
    if explanation is not None:
        ex["explanation"] = explanation
    return ex


def _split(tok, examples, target="chat", **kw):
    """(labelled words, unlabelled words) of each example after tokenize with cfg.target."""
    from adaptlab.train.batches import tokenize

    cfg = TuneConfig(target=target, **kw)
    rows = tokenize(tok, examples, cfg.max_length, cfg.truncate, "train.jsonl", formatter_for(cfg))
    out = []
    for ids, labels in rows:
        words = tok.convert_ids_to_tokens(ids)
        out.append(([w for w, y in zip(words, labels) if y != -100],
                    [w for w, y in zip(words, labels) if y == -100]))
    return out


# -- what the labelled tokens say ----------------------------------------------------------------
def test_explained_puts_explanation_and_answer_in_the_labels(tok):
    [(labelled, prompt)] = _split(tok, [_ex()], target="explained")
    assert labelled == "Two and two make four. The answer is 4. <|im_end|>".split()
    assert "four." not in prompt and "answer" not in prompt  # nothing leaks into the prompt


def test_explained_custom_template(tok):
    [(labelled, _)] = _split(tok, [_ex(explanation="Because")], target="explained",
                             explanation_template="{answer} because {explanation}")
    assert labelled == ["4", "because", "Because", "<|im_end|>"]


@pytest.mark.parametrize("target", ["chat", "answer"])
def test_chat_and_answer_train_on_the_reply_only(tok, target):
    [(labelled, prompt)] = _split(tok, [_ex()], target=target)
    assert labelled == ["4", "<|im_end|>"]
    assert "four." not in labelled + prompt  # the explanation is not trained on


def test_explained_rewrites_the_final_reply_only(tok):
    ex = {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"},
                       {"role": "user", "content": "What is 2 + 2?"},
                       {"role": "assistant", "content": "4"}], "explanation": "Because"}
    [(labelled, _)] = _split(tok, [ex], target="explained")
    assert labelled == "hi <|im_end|> Because The answer is 4. <|im_end|>".split()


def test_formatters_leave_the_record_alone():
    ex = _ex()
    before = repr(ex)
    for target in FORMATTERS:
        formatter_for(TuneConfig(target=target))(ex)
    assert repr(ex) == before


# -- refusals name file, line and field ----------------------------------------------------------
def test_explained_without_explanation_refused_with_line(tok):
    with pytest.raises(InputError) as e:
        _split(tok, [_ex(), _ex(explanation=None)], target="explained")
    assert (e.value.path, e.value.line, e.value.field) == ("train.jsonl", 2, "explanation")
    assert str(e.value) == "train.jsonl:2: explanation: missing field (target=explained)"


def test_chat_without_explanation_is_fine(tok):
    assert len(_split(tok, [_ex(explanation=None)], target="chat")) == 1


@pytest.mark.parametrize("target", ["chat", "answer", "explained"])
@pytest.mark.parametrize("reply", ["", "  \n\t"])
def test_empty_reply_refused(tok, target, reply):
    with pytest.raises(InputError) as e:
        _split(tok, [_ex(), _ex(), _ex(answer=reply)], target=target)
    assert str(e.value) == "train.jsonl:3: messages[1].content: empty assistant reply"


def test_custom_formatter_refusal_gets_file_and_line(tok):
    from adaptlab.train.batches import tokenize

    def picky(ex):
        raise FormatError("messages[0].content", "too polite")

    with pytest.raises(InputError, match=r"^train.jsonl:1: messages\[0\].content: too polite$"):
        tokenize(tok, [_ex()], 512, False, "train.jsonl", picky)


def test_check_lengths_applies_the_target_before_any_weights(tmp_path, tok):
    """check_lengths (run before the model loads) refuses what training would refuse."""
    from adaptlab.train.lengths import check_lengths

    d = tmp_path / "tiny-model"
    tok.save_pretrained(d)
    (d / "config.json").write_text('{"model_type": "llama"}\n')
    (d / "model.safetensors").write_bytes(b"")  # never loaded
    check_lengths(TuneConfig(model=str(d)), [_ex(explanation=None)], "train.jsonl")
    with pytest.raises(InputError, match="train.jsonl:1: explanation: missing field"):
        check_lengths(TuneConfig(model=str(d), target="explained"), [_ex(explanation=None)],
                       "train.jsonl")
    with pytest.raises(InputError, match="train.jsonl:1: .*max_length=3"):
        check_lengths(TuneConfig(model=str(d), target="explained", max_length=3), [_ex()],
                       "train.jsonl")


# -- the config fields -----------------------------------------------------------------------------
def test_registries_cover_the_config_literals():
    from adaptlab.train import FACTORIES

    hints = typing.get_type_hints(TuneConfig)
    assert set(FORMATTERS) == set(typing.get_args(hints["target"]))
    assert set(FACTORIES) == set(typing.get_args(hints["method"]))


def test_new_fields_defaults():
    cfg = TuneConfig()
    assert (cfg.method, cfg.target, cfg.num_virtual_tokens, cfg.prompt_init_text) == \
        ("lora", "chat", 20, "")
    assert cfg.explanation_template.format(explanation="E", answer="A") == "E\nThe answer is A."


@pytest.mark.parametrize("overrides, message", [
    (["num_virtual_tokens=0"], "num_virtual_tokens must be >= 1, got 0"),
    (["method=full", "precision=int8"], "precision=int8 is for method=lora only"),
    (["method=prompt", "precision=int8"], "precision=int8 is for method=lora only"),
    (["method=prompt", "merge=true"], "merge=true needs method=lora"),
    (["explanation_template='{reason}'"], "explanation_template: only the fields"),
    (["method=adapter"], "method: expected one of lora/full/prompt"),
    (["target=rationale"], "target: expected one of chat/answer/explained"),
])
def test_bad_new_fields_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(TuneConfig, None, overrides)


def test_lora_int8_still_allowed():
    assert load(TuneConfig, None, ["precision=int8"]).precision == "int8"
