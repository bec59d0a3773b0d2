"""Data formats: three record shapes normalized to chat messages; errors name PATH:LINE: FIELD."""
from __future__ import annotations

import json
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from adaptlab.data import formats
from adaptlab.data.formats import load_examples, save_examples, to_messages
from adaptlab.errors import InputError

# Keep Hypothesis' cache files out of the checkout.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="adaptlab-hypothesis-"))

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def load_error(path, **kw) -> str:
    with pytest.raises(InputError) as e:
        load_examples(path, **kw)
    return str(e.value)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path so messages carry the plain relative name `data.jsonl`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- the three formats ----------------------------------------------------------------------

@pytest.mark.parametrize("rec, msgs", [
    ({"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a"}]},
     [("system", "be terse"), ("user", "q"), ("assistant", "a")]),
    ({"prompt": "q", "completion": "a"}, [("user", "q"), ("assistant", "a")]),
    ({"instruction": "Translate", "input": "chat", "output": "cat"},
     [("user", "Translate\n\nchat"), ("assistant", "cat")]),
    ({"instruction": "Say hi", "output": "hi"}, [("user", "Say hi"), ("assistant", "hi")]),
    ({"instruction": "Say hi", "input": "", "output": "hi"}, [("user", "Say hi"), ("assistant", "hi")]),
])
@pytest.mark.parametrize("explanation", [None, "because"])
def test_formats_normalize_to_messages(tmp_path, rec, msgs, explanation):
    if explanation is not None:
        rec = {**rec, "explanation": explanation}
    expected = {"messages": [{"role": r, "content": c} for r, c in msgs]}
    if explanation is not None:
        expected["explanation"] = explanation
    assert to_messages(rec) == expected
    p = write_lines(tmp_path / "d.jsonl", [rec, rec])
    assert load_examples(p) == [expected, expected]


def test_message_extra_keys_are_dropped():
    rec = {"messages": [{"role": "user", "content": "q", "name": "x"},
                        {"role": "assistant", "content": "a", "weight": 1}], "id": 3}
    assert to_messages(rec) == {"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}


def test_prompts_only_allows_missing_reply(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [
        {"prompt": "q1"},
        {"instruction": "do", "input": "x"},
        {"messages": [{"role": "user", "content": "q3"}]},
    ])
    got = load_examples(p, require_reply=False)
    assert got == [
        {"messages": [{"role": "user", "content": "q1"}]},
        {"messages": [{"role": "user", "content": "do\n\nx"}]},
        {"messages": [{"role": "user", "content": "q3"}]},
    ]
    # The same file is refused when replies are required: line 1 has no completion.
    assert str(load_error(p)) == f"{p}:1: completion: missing field"


def test_blank_lines_are_skipped_but_counted(in_tmp):
    (in_tmp / "data.jsonl").write_text(json.dumps(GOOD) + "\n\n   \n" + '{"prompt": 1}\n')
    assert load_error("data.jsonl") == "data.jsonl:4: prompt: expected a string, got int"


# -- round trips through Parquet and saved datasets -----------------------------------------

EXAMPLES = [
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "c"},
                  {"role": "assistant", "content": "d"}], "explanation": "why"},
    {"messages": [{"role": "user", "content": "é ✓ 中"}, {"role": "assistant", "content": "x"}]},
]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_save_load_round_trip(tmp_path, suffix):
    p = save_examples(tmp_path / f"out{suffix}", EXAMPLES)
    assert p.exists()
    assert load_examples(p) == EXAMPLES
    assert [q.name for q in tmp_path.iterdir()] == [f"out{suffix}"]  # no temp files left


def test_parquet_keeps_fields_missing_from_first_row(tmp_path):
    # The first example has no explanation; later ones must not lose theirs.
    rows = [EXAMPLES[0], EXAMPLES[1]]
    p = save_examples(tmp_path / "x.parquet", rows)
    assert load_examples(p)[1]["explanation"] == "why"


def test_parquet_null_optional_fields(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "alpaca.parquet"
    pq.write_table(pa.table({"instruction": ["i1", "i2"], "input": [None, "ctx"],
                             "output": ["o1", "o2"], "explanation": ["e", None]}), p)
    assert load_examples(p) == [
        {"messages": [{"role": "user", "content": "i1"}, {"role": "assistant", "content": "o1"}],
         "explanation": "e"},
        {"messages": [{"role": "user", "content": "i2\n\nctx"},
                      {"role": "assistant", "content": "o2"}]},
    ]


def test_parquet_row_errors_name_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "pc.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["x", None]}), p)
    assert load_error(p) == f"{p}:2: completion: expected a string, got NoneType"


def test_corrupt_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet at all")
    assert load_error(p).startswith(f"{p}: unreadable parquet (")


def test_unsupported_output_suffix(tmp_path):
    from adaptlab.errors import AdaptlabError

    with pytest.raises(AdaptlabError, match="unsupported output format"):
        save_examples(tmp_path / "x.csv", EXAMPLES)
    assert not (tmp_path / "x.csv").exists()


def test_saved_dataset_dir_loads(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    d = tmp_path / "ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(d))
    assert load_examples(d) == [
        {"messages": [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "c1"}]},
        {"messages": [{"role": "user", "content": "p2"}, {"role": "assistant", "content": "c2"}]},
    ]
    dd = tmp_path / "dsdict"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows[:1]),
                          "train": datasets.Dataset.from_list(rows[1:])}).save_to_disk(str(dd))
    assert [e["messages"][0]["content"] for e in load_examples(dd)] == ["p2"]


def test_plain_directory_is_not_a_dataset(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "d").mkdir()
    assert load_error(tmp_path / "d").startswith(f"{tmp_path / 'd'}: not a saved dataset")


def test_missing_file(tmp_path):
    assert load_error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: no such file or directory"


# -- exact error messages: PATH:LINE: FIELD: problem ----------------------------------------

def test_unknown_role_on_line_17(in_tmp):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                        {"role": "bot", "content": "x"}]}
    write_lines(in_tmp / "data.jsonl", [GOOD] * 16 + [bad, GOOD])
    assert load_error("data.jsonl") == (
        "data.jsonl:17: messages[2].role: expected one of system/user/assistant, got 'bot'")


def test_truncated_json_line(in_tmp):
    (in_tmp / "data.jsonl").write_text(json.dumps(GOOD) + "\n" + '{"messages": [{"role": "user"\n')
    assert load_error("data.jsonl") == "data.jsonl:2: invalid JSON (Expecting ',' delimiter, column 30)"


def test_truncated_last_line_without_newline(in_tmp):
    (in_tmp / "data.jsonl").write_text(json.dumps(GOOD) + "\n" + '{"prompt": "a", "comp')
    assert load_error("data.jsonl") == (
        "data.jsonl:2: invalid JSON (Unterminated string starting at, column 17)")


def test_invalid_utf8(in_tmp):
    (in_tmp / "data.jsonl").write_bytes(
        json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "caf\xe9", "completion": "x"}\n')
    assert load_error("data.jsonl") == "data.jsonl:2: invalid UTF-8 at byte 15"


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(in_tmp, content):
    (in_tmp / "data.jsonl").write_bytes(content)
    assert load_error("data.jsonl") == "data.jsonl: no examples (empty file)"


@pytest.mark.parametrize("rec, msg", [
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
     "messages[0].content: expected a string, got int"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]},
     "messages[1].content: expected a string, got NoneType"),
    ({"messages": [{"role": 1, "content": "q"}]}, "messages[0].role: expected a string, got int"),
    ({"messages": "hi"}, "messages: expected a non-empty list of {role, content}"),
    ({"messages": []}, "messages: expected a non-empty list of {role, content}"),
    ({"messages": ["hi"]}, "messages[0]: expected an object, got str"),
    ({"messages": [{"content": "q"}]}, "messages[0].role: missing field"),
    ({"messages": [{"role": "user"}]}, "messages[0].content: missing field"),
    ({"prompt": ["q"], "completion": "a"}, "prompt: expected a string, got list"),
    ({"prompt": "q"}, "completion: missing field"),
    ({"prompt": "q", "completion": 3}, "completion: expected a string, got int"),
    ({"instruction": "do"}, "output: missing field"),
    ({"instruction": "do", "input": 1, "output": "x"}, "input: expected a string, got int"),
    ({"prompt": "q", "completion": "a", "explanation": 2}, "explanation: expected a string, got int"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "more?"}]},
     "messages[2].role: conversation must end on an assistant turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]},
     "messages[1].role: a system message may only come first"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
     "messages: no user turn"),
])
def test_field_errors_exact(in_tmp, rec, msg):
    write_lines(in_tmp / "data.jsonl", [GOOD, GOOD, rec])
    assert load_error("data.jsonl") == f"data.jsonl:3: {msg}"


@pytest.mark.parametrize("line, kind", [("[1, 2]", "list"), ('"text"', "str"), ("42", "int"),
                                        ("null", "NoneType"), ("true", "bool")])
def test_non_object_json_line(in_tmp, line, kind):
    (in_tmp / "data.jsonl").write_text(line + "\n")
    assert load_error("data.jsonl") == f"data.jsonl:1: expected a JSON object, got {kind}"


def test_unknown_record_shape(in_tmp):
    write_lines(in_tmp / "data.jsonl", [{"question": "q", "answer": "a"}])
    assert load_error("data.jsonl") == (
        "data.jsonl:1: unknown format: expected 'messages', 'prompt'/'completion' "
        "or 'instruction'/'output'")


def test_huge_line_refused(in_tmp, monkeypatch):
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 64)
    big = {"prompt": "x" * 200, "completion": "y"}
    write_lines(in_tmp / "data.jsonl", [{"prompt": "a", "completion": "b"}, big])
    assert load_error("data.jsonl") == "data.jsonl:2: line longer than 64 bytes"


def test_line_at_limit_is_accepted(in_tmp, monkeypatch):
    line = json.dumps({"prompt": "a", "completion": "b"}) + "\n"
    monkeypatch.setattr(formats, "MAX_LINE_BYTES", len(line))
    (in_tmp / "data.jsonl").write_text(line * 3)
    assert len(load_examples("data.jsonl")) == 3


def test_deeply_nested_json_is_an_input_error(in_tmp):
    (in_tmp / "data.jsonl").write_text("[" * 200_000 + "\n")
    assert load_error("data.jsonl").startswith("data.jsonl:1: invalid JSON (")


def test_huge_integer_is_an_input_error(in_tmp):
    (in_tmp / "data.jsonl").write_text('{"prompt": ' + "9" * 6000 + "}\n")
    assert load_error("data.jsonl").startswith("data.jsonl:1: invalid JSON (")


def test_input_error_fields(in_tmp):
    write_lines(in_tmp / "data.jsonl", [GOOD, {"prompt": 1, "completion": "a"}])
    with pytest.raises(InputError) as e:
        load_examples("data.jsonl")
    assert (e.value.path, e.value.line, e.value.field) == ("data.jsonl", 2, "prompt")
    assert e.value.exit_code != 0


# -- property tests -------------------------------------------------------------------------

text = st.text(max_size=20)
reply = st.text(max_size=20).filter(str.strip)  # an empty assistant reply is refused
PROPERTY = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def record(draw):
    """A valid record in one of the 3 formats, and the normalized form we expect back."""
    kind = draw(st.sampled_from(["messages", "prompt", "instruction"]))
    if kind == "messages":
        msgs = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
        for _ in range(draw(st.integers(1, 3))):
            msgs += [{"role": "user", "content": draw(text)},
                     {"role": "assistant", "content": draw(reply)}]
        rec, norm = {"messages": msgs}, [dict(m) for m in msgs]
    elif kind == "prompt":
        p, c = draw(text), draw(reply)
        rec = {"prompt": p, "completion": c}
        norm = [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
    else:
        i, x, o = draw(text), draw(st.none() | text), draw(reply)
        rec = {"instruction": i, "output": o} | ({} if x is None else {"input": x})
        norm = [{"role": "user", "content": f"{i}\n\n{x}" if x else i},
                {"role": "assistant", "content": o}]
    expected = {"messages": norm}
    if draw(st.booleans()):
        rec["explanation"] = expected["explanation"] = draw(text)
    return rec, expected


@PROPERTY
@given(pairs=st.lists(record(), min_size=1, max_size=8), ascii_only=st.booleans())
def test_valid_records_round_trip(tmp_path, pairs, ascii_only):
    p = tmp_path / "prop.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r, _ in pairs),
                 encoding="utf-8")
    assert load_examples(p) == [e for _, e in pairs]


@st.composite
def messy_bytes(draw):
    """Arbitrary bytes, or a valid file with bytes inserted, deleted or replaced."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    pairs = draw(st.lists(record(), min_size=1, max_size=3))
    data = bytearray("".join(json.dumps(r, ensure_ascii=False) + "\n" for r, _ in pairs).encode())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        b = draw(st.binary(min_size=1, max_size=4))
        if op == "insert":
            data[i:i] = b
        elif op == "delete":
            del data[i:i + len(b)]
        else:
            data[i:i + len(b)] = b
    return bytes(data)


@PROPERTY
@given(data=messy_bytes(), require_reply=st.booleans())
def test_arbitrary_bytes_load_or_input_error(tmp_path, data, require_reply):
    p = tmp_path / "fuzz.jsonl"
    p.write_bytes(data)
    try:
        out = load_examples(p, require_reply=require_reply)
    except InputError as e:
        assert str(e).startswith(str(p))
    else:
        assert out and all(isinstance(ex["messages"], list) and ex["messages"] for ex in out)


@pytest.mark.parametrize("rec,field", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
     "messages[1].content"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " \n\t"}]},
     "messages[1].content"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""},
                   {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}]},
     "messages[1].content"),
    ({"prompt": "q", "completion": "  "}, "completion"),
    ({"instruction": "q", "output": ""}, "output"),
])
def test_empty_assistant_reply_is_refused(in_tmp, rec, field):
    write_lines(in_tmp / "data.jsonl", [rec])
    with pytest.raises(InputError) as e:
        load_examples("data.jsonl")
    assert str(e.value) == f"data.jsonl:1: {field}: empty assistant reply"
