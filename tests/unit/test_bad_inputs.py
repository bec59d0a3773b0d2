"""Bad inputs: every malformed file, recipe or argument gives one line naming file, line and field.

The corpus is tests/badinputs/ and its manifest cases.yaml. Each case runs `adaptlab.cli.main`
in a copy of that directory and must: exit non-zero, print exactly one `adaptlab: error: ` line
on stderr (nothing on stdout, no traceback), match the case's regex, and leave the directory
exactly as it was (no output file, adapter dir, run dir or temp file). No model is ever loaded.
The parsers under them are fuzzed with Hypothesis: a value or an AdaptlabError, nothing else.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from adaptlab import cli
from adaptlab.api import GenerateConfig
from adaptlab.config import ConfigError, from_dict, load, load_yaml, parse_overrides
from adaptlab.data import formats
from adaptlab.data.formats import load_examples
from adaptlab.errors import AdaptlabError, InputError
from adaptlab.train import TuneConfig

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="adaptlab-hypothesis-"))

CORPUS = Path(__file__).resolve().parents[1] / "badinputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
PREFIX = "adaptlab: error: "
RESULTS: dict[str, bool] = {}  # case id -> errored cleanly (filled as the cases run)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _never(*args, **kwargs):
    raise AssertionError("a model was loaded, trained or run before the input was validated")


@pytest.fixture(autouse=True)
def no_models(monkeypatch):
    """Any model load, conversion, training or generation fails the test."""
    import adaptlab.lm.local
    import adaptlab.models.convert
    import adaptlab.models.load
    import adaptlab.train.lora

    monkeypatch.setattr(adaptlab.train.lora, "tune", _never)
    monkeypatch.setattr(adaptlab.models.load, "load_model", _never)
    monkeypatch.setattr(adaptlab.models.convert, "convert_packaged", _never)
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", _never)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A model dir holding only a word-level ChatML tokenizer: enough for the max_length check."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<|im_start|>", "<|im_end|>", "system", "user",
                                         "assistant"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<unk>",
                                  eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    d = tmp_path_factory.mktemp("tiny") / "tiny-model"
    tok.save_pretrained(d)
    (d / "config.json").write_text('{"model_type": "llama"}\n')
    (d / "model.safetensors").write_bytes(b"")  # never loaded; a model dir must name its weights
    return d


def _make(name: str, root: Path, request) -> None:
    """Inputs built at test time: too big to store, or not storable in git."""
    if name.startswith("dir:"):
        (root / name[4:]).mkdir()
    elif name == "huge.jsonl":
        good = json.dumps({"prompt": "a", "completion": "b"}) + "\n"
        huge = json.dumps({"prompt": "x" * formats.MAX_LINE_BYTES, "completion": "y"}) + "\n"
        (root / name).write_text(good + huge + good)
    elif name == "tiny-model":
        shutil.copytree(request.getfixturevalue("tiny_model"), root / name)
    elif name == "bad_row.parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def chat(role):
            return [{"role": "user", "content": "q"}, {"role": role, "content": "a"}]
        pq.write_table(pa.table({"messages": [chat("assistant"), chat("bot")]}), root / name)
    else:
        raise ValueError(f"unknown make target {name!r}")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A copy of the corpus as the working directory; runs and the model cache go inside it."""
    root = tmp_path / "work"
    shutil.copytree(CORPUS, root, ignore=shutil.ignore_patterns("cases.yaml"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("ADAPTLAB_RUNS", str(root / "runs"))
    monkeypatch.setenv("ADAPTLAB_CACHE", str(root / "cache"))
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def check_clean(rc: int, out: str, err: str, pattern: str) -> str:
    """The contract for every bad input; returns the message after the prefix."""
    assert "Traceback" not in out + err, err
    assert rc == 2, (rc, err)
    assert out == "", out
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line, got:\n{err}"
    assert lines[0].startswith(PREFIX), lines[0]
    msg = lines[0][len(PREFIX):]
    assert re.search(pattern, msg), f"{msg!r} does not match {pattern!r}"
    return msg


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, workdir, capsys, request):
    for module in case.get("requires", []):
        pytest.importorskip(module)
    RESULTS[case["id"]] = False
    for name in case.get("make", []):
        _make(name, workdir, request)
    before = snapshot(workdir)
    rc = cli.main([str(a) for a in case["argv"]])
    out, err = capsys.readouterr()
    check_clean(rc, out, err, case["error"])
    assert snapshot(workdir) == before, "something was written"
    RESULTS[case["id"]] = True


def test_corpus_ids_are_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))


# -- the good twins: validation must not refuse what is fine --------------------------------

@pytest.mark.parametrize("argv", [
    ["validate", "good.jsonl"],
    ["validate", "--prompts-only", "prompts.jsonl"],
    ["validate", "--prompts-only", "ends_on_user.jsonl"],  # generate answers the last user turn
])
def test_good_inputs_validate(workdir, capsys, argv):
    assert cli.main(argv) == 0
    assert capsys.readouterr().err == ""


def test_generate_accepts_a_chat_ending_on_a_user_turn(workdir, tiny_model):
    shutil.copytree(tiny_model, workdir / "tiny-model")
    with pytest.raises(AssertionError, match="a model was loaded"):  # got past validation
        cli.main(["generate", "--model", "tiny-model", "--input", "ends_on_user.jsonl",
                  "--out", "a.jsonl"])


def test_tune_within_max_length_reaches_training(workdir, tiny_model):
    shutil.copytree(tiny_model, workdir / "tiny-model")
    with pytest.raises(AssertionError, match="a model was loaded"):  # got past the length check
        cli.main(["tune", "--data", "too_long.jsonl", "--model", "tiny-model", "--out", "OUT",
                  "max_length=1024"])
    assert not (workdir / "OUT").exists()


# -- through a real process: nothing reaches the terminal but the one line ------------------

@pytest.mark.parametrize("case_id", ["truncated-last-line", "run-malformed-yaml", "tune-nan-lr"])
def test_bad_input_in_a_subprocess(case_id, workdir):
    case = next(c for c in CASES if c["id"] == case_id)
    before = snapshot(workdir)
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    p = subprocess.run([sys.executable, "-m", "adaptlab.cli", *map(str, case["argv"])],
                       capture_output=True, text=True, env=env, timeout=120)
    check_clean(p.returncode, p.stdout, p.stderr, case["error"])
    assert snapshot(workdir) == before


# -- property tests: a value or an AdaptlabError, never another exception -------------------

PROPERTY = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
RECORD_KEYS = ["messages", "prompt", "completion", "instruction", "input", "output",
               "explanation", "role", "content"]
ROLES = st.sampled_from(["system", "user", "assistant", "bot", "", "User"])
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
           | ROLES)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.sampled_from(RECORD_KEYS) | st.text(max_size=4), kids, max_size=4),
    max_leaves=12,
)
message = st.fixed_dictionaries({}, optional={"role": ROLES | json_values, "content": json_values})
records = (json_values
           | st.dictionaries(st.sampled_from(RECORD_KEYS), json_values, max_size=5)
           | st.fixed_dictionaries({"messages": st.lists(message, max_size=4)},
                                   optional={"explanation": json_values}))


def _valid(out: list[dict], require_reply: bool) -> bool:
    for ex in out:
        msgs = ex["messages"]
        assert msgs and all(m["role"] in formats.ROLES and isinstance(m["content"], str)
                            for m in msgs)
        assert any(m["role"] == "user" for m in msgs)
        assert not require_reply or msgs[-1]["role"] == "assistant"
    return True


@PROPERTY
@given(rec=records, require_reply=st.booleans())
def test_any_json_value_is_a_record_or_input_error(rec, require_reply):
    try:
        out = formats.validate_record(rec, "d.jsonl", 7, require_reply)
    except InputError as e:
        assert str(e).startswith("d.jsonl:7:") and "\n" not in str(e)
    else:
        _valid([out], require_reply)


@PROPERTY
@given(recs=st.lists(records, min_size=1, max_size=4), require_reply=st.booleans())
def test_any_json_lines_load_or_input_error(tmp_path, recs, require_reply):
    p = tmp_path / "fuzz.jsonl"
    with p.open("w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, allow_nan=True) + "\n")
    try:
        out = load_examples(p, require_reply=require_reply)
    except InputError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)
    else:
        assert len(out) == len(recs) and _valid(out, require_reply)


override = (st.text(max_size=20)
            | st.tuples(st.sampled_from(["lr", "lora_r", "precision", "tune.lr", "a.b", ".", ""]),
                        st.sampled_from(["=", "=="]),
                        st.sampled_from(["1e-4", "-1", "0", "[", "{a: 1}", "2024-13-45", ".nan",
                                         "yes", "'x", "!!python/none", "&a [*a]", "1" * 400])
                        ).map("".join))


@PROPERTY
@given(pairs=st.lists(override, max_size=4))
def test_parse_overrides_value_or_config_error(pairs):
    try:
        out = parse_overrides(pairs)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(out, dict)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
    | st.sampled_from(["fp32", "bf16", "int8", "q_proj"]),
    lambda kids: (st.lists(kids, max_size=3)
                  | st.dictionaries(st.text(max_size=6), kids, max_size=3)),
    max_leaves=8,
)
def _config_or_one_line_error(cls, data):
    """The config built from `data`, or None when it was refused with a one-line AdaptlabError."""
    try:
        return from_dict(cls, data)
    except AdaptlabError as e:
        assert "\n" not in str(e)
        return None


TUNE_FIELDS = list(TuneConfig.__dataclass_fields__)
GEN_FIELDS = list(GenerateConfig.__dataclass_fields__)


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(TUNE_FIELDS) | st.text(max_size=6) | st.integers(),
                            yaml_values | st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
                            max_size=4))
def test_tune_config_from_any_dict(data):
    cfg = _config_or_one_line_error(TuneConfig, data)
    if cfg is not None:
        assert cfg.lr > 0 and math.isfinite(cfg.lr) and cfg.lora_r >= 1 and cfg.max_length >= 1


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(GEN_FIELDS) | st.text(max_size=6), yaml_values,
                            max_size=4))
def test_generate_config_from_any_dict(data):
    cfg = _config_or_one_line_error(GenerateConfig, data)
    if cfg is not None:
        assert cfg.max_new_tokens >= 1 and cfg.batch_size >= 1 and 0 < cfg.top_p <= 1


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(["name", "study", "tune", "train_sizes", "precisions",
                                             "teacher", "split", "seed"]),
                            yaml_values, max_size=4))
def test_study_config_from_any_dict(data):
    from adaptlab.studies.tone_config import Config

    _config_or_one_line_error(Config, data)


yaml_text = st.lists(
    st.text(max_size=12)
    | st.sampled_from(["study: tune", "tune:", "  lr: 1e-4", "  lr: 2", "\tlr: 1", "- a", "[", "{",
                       "}", "]", ": x", "&a", "*a", "!!float x", "!!python/object:os.system",
                       "name: 2024-13-45", "? [a]\n: 1", "<<: *a", "x: &a {b: 1}", "%YAML 1.1",
                       "---", "...", "'", '"', "\x00", "\ufeff", "key: " + "[" * 50]),
    max_size=6).map("\n".join)


@PROPERTY
@given(text=yaml_text)
def test_load_yaml_any_text(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        data = load_yaml(p)
        cfg = load(TuneConfig, p)
    except ConfigError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)
    else:
        assert isinstance(data, dict) and isinstance(cfg, TuneConfig)


@PROPERTY
@given(data=st.binary(max_size=200))
def test_load_yaml_any_bytes(tmp_path, data):
    p = tmp_path / "r.yaml"
    p.write_bytes(data)
    try:
        assert isinstance(load_yaml(p), dict)
    except ConfigError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)


# -- the count: how many bad inputs were tried, how many errored cleanly ---------------------

def test_zz_summary(capsys):
    """Last in the module: every bad input that ran errored cleanly."""
    tried, clean = len(RESULTS), sum(RESULTS.values())
    with capsys.disabled():
        print(f"\nbad inputs: {tried} tried, {clean} errored cleanly")
    assert clean == tried, sorted(k for k, ok in RESULTS.items() if not ok)
