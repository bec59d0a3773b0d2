"""Weights load from safetensors only, and no model code runs unless asked."""
from __future__ import annotations

import ast
import json
import sys
import types
from pathlib import Path

import pytest

from adaptlab import cli
from adaptlab.errors import AdaptlabError
from adaptlab.models import resolve
from adaptlab.models.load import check_adapter_dir

SRC = Path(__file__).resolve().parents[2] / "src" / "adaptlab"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}
UNSAFE_KEYWORDS = {("trust_remote_code", True), ("allow_pickle", True), ("weights_only", False)}
# torch.load calls that stay, each with weights_only=True (torch's restricted unpickler) and why.
ALLOWED_TORCH_LOAD: dict[str, str] = {}


def _unsafe(path: Path) -> list[str]:
    rel = path.relative_to(SRC).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where}: from {node.module} import")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append(f"{where}: from torch import load")
        elif isinstance(node, ast.Call):
            kw = {k.arg: k.value.value for k in node.keywords
                  if k.arg and isinstance(k.value, ast.Constant)}
            found += [f"{where}: {k}={v}" for k, v in UNSAFE_KEYWORDS if k in kw and kw[k] is v]
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                    and f.value.id == "torch"):
                if not (rel in ALLOWED_TORCH_LOAD and kw.get("weights_only") is True):
                    found.append(f"{where}: torch.load")
    return found


def test_no_pickle_loading_or_remote_code_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = [hit for f in files for hit in _unsafe(f)]
    assert found == [], "unsafe loading in src/:\n" + "\n".join(found)


def test_the_guard_catches_what_it_should(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nfrom joblib import load\nimport torch\nx = torch.load('f')\n"
                   "m = f(p, trust_remote_code=True)\nnp.load('a', allow_pickle=True)\n"
                   "torch.load('g', weights_only=False)\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    hits = "\n".join(_unsafe(bad))
    for needle in ("import pickle", "from joblib", "bad.py:4: torch.load", "trust_remote_code=True",
                   "allow_pickle=True", "weights_only=False", "bad.py:7: torch.load"):
        assert needle in hits


# -- adapters ------------------------------------------------------------------------------

def adapter_dir(tmp_path, *files) -> Path:
    d = tmp_path / "adapter"
    d.mkdir()
    for name in files:
        (d / name).write_bytes(b"{}")
    return d


def test_adapter_with_only_pickle_weights_is_refused(tmp_path):
    d = adapter_dir(tmp_path, "adapter_config.json", "adapter_model.bin")
    with pytest.raises(AdaptlabError) as e:
        check_adapter_dir(d)
    msg = str(e.value)
    assert msg == (f"{d}: adapter weights only in pickle format (adapter_model.bin); "
                   "adaptlab loads adapter_model.safetensors only")
    assert "\n" not in msg


def test_adapter_checks(tmp_path):
    with pytest.raises(AdaptlabError, match="no adapter_config.json"):
        check_adapter_dir(tmp_path)
    d = adapter_dir(tmp_path, "adapter_config.json")
    with pytest.raises(AdaptlabError, match=r"no adapter weights \(adapter_model.safetensors\)"):
        check_adapter_dir(d)
    (d / "adapter_model.safetensors").write_bytes(b"x")
    (d / "adapter_model.bin").write_bytes(b"x")  # ignored beside the safetensors file
    assert check_adapter_dir(d) == d


def test_attach_adapter_refuses_pickle_before_peft_loads_it(tmp_path, monkeypatch):
    from adaptlab.models import load

    d = adapter_dir(tmp_path, "adapter_config.json", "adapter_model.bin")
    fake_peft = types.SimpleNamespace(PeftModel=type("PeftModel", (), {}))
    monkeypatch.setattr(load, "require", lambda module, extra: fake_peft)
    with pytest.raises(AdaptlabError, match="pickle format"):
        load.attach_adapter(object(), str(d))


# -- model directories ---------------------------------------------------------------------

def model_dir(tmp_path, config: dict | None = None, *files) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    for name in files:
        (d / name).write_bytes(b"x")
    return d


def test_model_dir_with_only_pickle_weights_is_refused(tmp_path):
    d = model_dir(tmp_path, None, "pytorch_model.bin", "tokenizer.json")
    with pytest.raises(AdaptlabError) as e:
        resolve(str(d))
    assert str(e.value) == (f"{d}: weights only in pickle format (pytorch_model.bin); "
                            "adaptlab loads safetensors only (model.safetensors)")


@pytest.mark.parametrize("files, ok", [
    (("model.safetensors",), True),
    (("model.safetensors.index.json", "model-00001-of-00002.safetensors"), True),
    (("model.safetensors", "pytorch_model.bin"), True),  # transformers takes the safetensors file
    (("pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin"), False),
    (("model.ckpt",), False),
    ((), False),
])
def test_model_dir_weights(tmp_path, files, ok):
    d = model_dir(tmp_path, None, *files)
    if ok:
        assert resolve(str(d)) == str(d)
    else:
        with pytest.raises(AdaptlabError, match="pickle format|no model weights"):
            resolve(str(d))


def test_config_naming_pickle_weights_is_refused(tmp_path):
    # transformers loads config["transformers_weights"] even with use_safetensors=True
    d = model_dir(tmp_path, {"model_type": "llama", "transformers_weights": "adapter_model.bin"},
                  "model.safetensors", "adapter_model.bin")
    with pytest.raises(AdaptlabError, match="config.json points at 'adapter_model.bin'"):
        resolve(str(d))


def test_cli_refuses_pickle_model_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = model_dir(tmp_path, None, "pytorch_model.bin")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "q"}) + "\n")
    rc = cli.main(["generate", "--model", str(d), "--input", "p.jsonl", "--out", "o.jsonl"])
    out, err = capsys.readouterr()
    assert rc != 0 and not (tmp_path / "o.jsonl").exists()
    assert err.strip() == (f"adaptlab: error: {d}: weights only in pickle format (pytorch_model.bin); "
                           "adaptlab loads safetensors only (model.safetensors)")


# -- what load_model asks transformers for -------------------------------------------------

@pytest.fixture
def fake_transformers(monkeypatch):
    """torch and transformers stand-ins that record how they were called."""
    calls = {}

    class Model:
        def to(self, device):
            return self

        def eval(self):
            return self

    class Auto:
        @staticmethod
        def from_pretrained(path, **kw):
            calls.setdefault("model", kw)
            if calls.get("raise"):
                raise calls["raise"]
            return Model()

    class Tok:
        chat_template, pad_token, eos_token = "{{ x }}", "<pad>", "</s>"

        @staticmethod
        def from_pretrained(path, **kw):
            calls["tokenizer"] = kw
            return Tok()

    fake_t = types.SimpleNamespace(float32="fp32", bfloat16="bf16")
    fake_tf = types.ModuleType("transformers")
    fake_tf.AutoModelForCausalLM, fake_tf.AutoTokenizer = Auto, Tok
    fake_tf.utils = types.SimpleNamespace(logging=types.SimpleNamespace(disable_progress_bar=lambda: None))
    monkeypatch.setitem(sys.modules, "transformers", fake_tf)
    from adaptlab.models import load

    real_require = load.require
    monkeypatch.setattr(load, "require", lambda m, e: fake_t if m == "torch" else real_require(m, e))
    return calls


def test_load_model_asks_for_safetensors_and_no_remote_code(tmp_path, fake_transformers):
    from adaptlab.models.load import load_model

    d = model_dir(tmp_path, None, "model.safetensors")
    load_model(str(d))
    assert fake_transformers["model"]["use_safetensors"] is True
    assert fake_transformers["model"]["trust_remote_code"] is False
    assert fake_transformers["tokenizer"]["trust_remote_code"] is False


def test_model_needing_its_own_code_is_a_clear_error(tmp_path, fake_transformers):
    from adaptlab.models.load import load_model

    d = model_dir(tmp_path, None, "model.safetensors")
    fake_transformers["raise"] = ValueError(
        "The repository x contains custom code which must be executed to correctly load the model.\n"
        "Please pass the argument `trust_remote_code=True` to allow custom code to be run.")
    with pytest.raises(AdaptlabError, match=r"needs code of its own \(trust_remote_code\)"):
        load_model(str(d))


def test_local_lm_passes_remote_code_choice_through(monkeypatch):
    from adaptlab.lm import local

    seen = {}

    def fake_load(ref, precision, adapter=None, device="cpu", trust_remote_code=None):
        seen["trust_remote_code"] = trust_remote_code
        raise RuntimeError("stop here")

    import adaptlab.models.load as load

    monkeypatch.setattr(load, "load_model", fake_load)
    with pytest.raises(RuntimeError, match="stop here"):
        local.LocalLM("x")
    assert seen["trust_remote_code"] is False
