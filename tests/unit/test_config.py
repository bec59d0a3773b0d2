"""Config: dataclasses from YAML dicts and dotted overrides; unknown keys and bad types refused."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from adaptlab.config import ConfigError, from_dict, load, load_yaml, merge, parse_overrides, to_dict
from adaptlab.train.config import TuneConfig


@dataclass
class Optim:
    lr: float = 1e-3
    steps: int = 10
    kind: Literal["adam", "sgd"] = "adam"


@dataclass
class Job:
    name: str = "job"
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)
    limit: int | None = None
    verbose: bool = False


# -- from_dict ------------------------------------------------------------------------------

def test_from_dict_builds_nested_dataclasses():
    job = from_dict(Job, {"name": "a", "optim": {"lr": 0.5, "steps": 3, "kind": "sgd"},
                          "tags": ["x", "y"], "limit": 7, "verbose": True})
    assert isinstance(job.optim, Optim)
    assert job == Job("a", Optim(0.5, 3, "sgd"), ["x", "y"], 7, True)


def test_from_dict_defaults_and_partial_nested():
    job = from_dict(Job, {"optim": {"steps": 99}})
    assert job.optim == Optim(lr=1e-3, steps=99, kind="adam")
    assert job.name == "job" and job.limit is None


def test_int_is_accepted_for_float():
    job = from_dict(Job, {"optim": {"lr": 1}})
    assert job.optim.lr == 1.0 and type(job.optim.lr) is float


def test_to_dict_round_trip():
    job = Job("n", Optim(0.1, 2, "sgd"), ["t"], 3, True)
    assert from_dict(Job, to_dict(job)) == job


def test_unknown_top_level_key_names_it():
    with pytest.raises(ConfigError) as e:
        from_dict(Job, {"nmae": "x"})
    assert "unknown key 'nmae'" in str(e.value)
    assert str(e.value).startswith("Job: ")


def test_unknown_nested_key_names_section_and_key():
    with pytest.raises(ConfigError) as e:
        from_dict(Job, {"optim": {"learning_rate": 1.0}})
    assert str(e.value).startswith("optim: unknown key 'learning_rate'")


def test_unknown_non_string_key_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Job, {1: "x", "zzz": 2})


@pytest.mark.parametrize("data, where", [
    ({"optim": {"steps": "10"}}, "optim.steps: expected int, got '10'"),
    ({"optim": {"steps": True}}, "optim.steps: expected int, got True"),
    ({"optim": {"steps": 1.5}}, "optim.steps: expected int, got 1.5"),
    ({"optim": {"lr": "fast"}}, "optim.lr: expected float, got 'fast'"),
    ({"optim": {"lr": False}}, "optim.lr: expected float"),
    ({"name": 3}, "name: expected str, got 3"),
    ({"verbose": "yes"}, "verbose: expected bool, got 'yes'"),
    ({"tags": "x"}, "tags: expected a list, got 'x'"),
    ({"tags": ["ok", 2]}, "tags[1]: expected str, got 2"),
    ({"optim": 5}, "optim: expected a mapping, got 5"),
    ({"limit": "3"}, "limit: expected int, got '3'"),
])
def test_wrong_types_are_refused(data, where):
    with pytest.raises(ConfigError) as e:
        from_dict(Job, data)
    assert str(e.value).startswith(where)


def test_optional_accepts_none():
    assert from_dict(Job, {"limit": None}).limit is None


def test_literal_values_checked():
    assert from_dict(Job, {"optim": {"kind": "sgd"}}).optim.kind == "sgd"
    with pytest.raises(ConfigError) as e:
        from_dict(Job, {"optim": {"kind": "rmsprop"}})
    assert str(e.value) == "optim.kind: expected one of adam/sgd, got 'rmsprop'"


# -- TuneConfig (importing it must not need torch) ------------------------------------------

def test_tune_config_defaults_and_override():
    cfg = load(TuneConfig, None, ["lora_r=16", "lr=1e-4", "truncate=true"])
    assert (cfg.lora_r, cfg.lr, cfg.truncate) == (16, 1e-4, True)
    assert cfg.precision == "fp32"


def test_tune_config_lora_r_zero_refused():
    with pytest.raises(ConfigError) as e:
        load(TuneConfig, None, ["lora_r=0"])
    assert "lora_r must be >= 1, got 0" in str(e.value)


def test_tune_config_precision_literal():
    with pytest.raises(ConfigError) as e:
        load(TuneConfig, None, ["precision=fp16"])
    assert str(e.value) == "precision: expected one of fp32/bf16/int8, got 'fp16'"


def test_tune_config_unknown_key():
    with pytest.raises(ConfigError) as e:
        load(TuneConfig, None, ["lora_rank=4"])
    assert "unknown key 'lora_rank'" in str(e.value)
    assert "lora_r" in str(e.value)  # the known keys are listed


def test_tune_config_bool_for_int_refused():
    with pytest.raises(ConfigError, match=r"^batch_size: expected int, got True$"):
        load(TuneConfig, None, ["batch_size=true"])


# -- parse_overrides ------------------------------------------------------------------------

def test_parse_overrides_nested_and_scalars():
    out = parse_overrides(["optim.lr=1e-4", "optim.steps=5", "verbose=true", "tags=[a,b]",
                           "name=hello", "a.b.c=x", "limit=null", "ratio=0.5", "empty="])
    assert out == {"optim": {"lr": 1e-4, "steps": 5}, "verbose": True, "tags": ["a", "b"],
                   "name": "hello", "a": {"b": {"c": "x"}}, "limit": None, "ratio": 0.5,
                   "empty": ""}
    assert type(out["optim"]["lr"]) is float
    assert type(out["optim"]["steps"]) is int


@pytest.mark.parametrize("raw, value", [
    ("1e-4", 1e-4), ("1E5", 1e5), ("-2.5e+3", -2500.0), ("3", 3), ("false", False),
    ("x1e5", "x1e5"), ("1e", "1e"), ("'7'", "7"),
])
def test_parse_overrides_scalar_types(raw, value):
    got = parse_overrides([f"k={raw}"])["k"]
    assert got == value and type(got) is type(value)


def test_parse_overrides_value_may_contain_equals():
    assert parse_overrides(["name=a=b"]) == {"name": "a=b"}


def test_parse_overrides_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError, match="'a' is not a section"):
        parse_overrides(["a=1", "a.b=2"])


def test_merge_is_deep_and_does_not_mutate():
    base = {"a": {"x": 1, "y": 2}, "b": 1}
    out = merge(base, {"a": {"y": 3}, "c": 4})
    assert out == {"a": {"x": 1, "y": 3}, "b": 1, "c": 4}
    assert base == {"a": {"x": 1, "y": 2}, "b": 1}


# -- load / load_yaml -----------------------------------------------------------------------

def test_load_yaml_file_plus_overrides(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("name: from-file\noptim:\n  lr: 1e-3\n  steps: 4\ntags: [a]\n")
    job = load(Job, p, ["optim.steps=8", "verbose=true"])
    assert job == Job("from-file", Optim(1e-3, 8, "adam"), ["a"], None, True)


def test_load_error_names_file(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("optim:\n  kind: nope\n")
    with pytest.raises(ConfigError) as e:
        load(Job, p)
    assert str(e.value) == f"{p}: optim.kind: expected one of adam/sgd, got 'nope'"


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: ok\noptim:\n  lr: [1, 2\n  steps: 3\nverbose: true\n")
    with pytest.raises(ConfigError) as e:
        load(Job, p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:")
    line = int(msg[len(str(p)) + 1:].split(":")[0])
    assert 3 <= line <= 5
    assert "invalid YAML" in msg


def test_invalid_yaml_tab_indent_line(tmp_path):
    p = tmp_path / "tab.yaml"
    p.write_text("name: ok\n\tverbose: true\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(p)
    assert str(e.value).startswith(f"{p}:2: invalid YAML")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_yaml_file(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(Job, p)
    assert str(e.value) == f"{p}: empty file"


def test_yaml_top_level_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_yaml(p)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_yaml(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_yaml_path_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_yaml(tmp_path)
    assert str(e.value).startswith(f"{tmp_path}: ")


def test_yaml_not_utf8(tmp_path):
    p = tmp_path / "latin.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_yaml(p)
