"""Which 8-bit backend `precision=int8` uses, and the errors when it cannot (no model loads)."""
from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("transformers")

from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.models import load  # noqa: E402


def _only(monkeypatch, *installed):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        real(name, *a) if name not in load.INT8_BACKENDS or name in installed else None))


NEEDS_BOTH = pytest.mark.skipif(
    not all(importlib.util.find_spec(b) for b in load.INT8_BACKENDS), reason="needs both backends")


@NEEDS_BOTH
def test_bitsandbytes_first_torchao_as_fallback(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_INT8_BACKEND", raising=False)
    _only(monkeypatch, "bitsandbytes", "torchao")
    assert type(load.int8_config("cpu")).__name__ == "BitsAndBytesConfig"
    _only(monkeypatch, "torchao")
    assert type(load.int8_config("cpu")).__name__ == "TorchAoConfig"


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="needs torchao")
def test_the_env_var_or_argument_forces_torchao(monkeypatch):
    monkeypatch.setenv("ADAPTLAB_INT8_BACKEND", "torchao")
    cfg = load.int8_config("cpu")
    assert type(cfg).__name__ == "TorchAoConfig"
    assert type(cfg.quant_type).__name__ == "Int8WeightOnlyConfig"
    monkeypatch.delenv("ADAPTLAB_INT8_BACKEND")
    assert type(load.int8_config("cpu", backend="torchao")).__name__ == "TorchAoConfig"


def test_unknown_or_missing_backend_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("ADAPTLAB_INT8_BACKEND", "gptq")
    with pytest.raises(AdaptlabError, match="expected one of bitsandbytes, torchao"):
        load.int8_config("cpu")
    monkeypatch.setenv("ADAPTLAB_INT8_BACKEND", "torchao")
    _only(monkeypatch, "bitsandbytes")
    with pytest.raises(AdaptlabError, match="'torchao' is not installed: pip install torchao"):
        load.int8_config("cpu")
    monkeypatch.delenv("ADAPTLAB_INT8_BACKEND")
    _only(monkeypatch)
    with pytest.raises(AdaptlabError, match="needs bitsandbytes or torchao"):
        load.int8_config("cpu")
