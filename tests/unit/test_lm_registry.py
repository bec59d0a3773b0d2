"""The backend registry, BackendConfig and make_lm: backends by name, behind the call cache."""
from __future__ import annotations

import subprocess
import sys

import pytest

import adaptlab.lm.registry as registry
from adaptlab.config import ConfigError, from_dict
from adaptlab.errors import AdaptlabError
from adaptlab.evaluate.judges import LLMJudge
from adaptlab.lm.base import AdapterHost, ChoiceScorer, GenParams, Scorer, supports
from adaptlab.lm.cache import CachedLM
from adaptlab.lm.config import BackendConfig
from adaptlab.lm.fake import FakeLM
from adaptlab.lm.registry import make_lm, register_backend

HI = [[{"role": "user", "content": "hi"}]]


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test's registrations are undone after it: nothing it adds leaks into other tests."""
    saved = dict(registry.BACKENDS)
    yield
    registry.BACKENDS.clear()
    registry.BACKENDS.update(saved)


def test_builtin_backends():
    assert list(registry.BACKENDS) == ["local", "llamacpp", "openai", "vllm"]


def test_unknown_backend_is_a_one_line_error():
    with pytest.raises(ValueError) as e:
        BackendConfig(backend="x")
    assert str(e.value) == "backend: expected one of local/llamacpp/openai/vllm, got 'x'"
    with pytest.raises(ConfigError) as e:
        from_dict(BackendConfig, {"backend": "nope"})
    assert str(e.value) == "BackendConfig: backend: expected one of local/llamacpp/openai/vllm, got 'nope'"
    cfg = BackendConfig()
    cfg.backend = "gone"  # changed after validation
    with pytest.raises(AdaptlabError, match="^backend: expected one of local/llamacpp/openai/vllm, got 'gone'$"):
        make_lm(cfg)


def test_config_fields_and_key_check_unchanged():
    cfg = BackendConfig()
    assert (cfg.model, cfg.backend, cfg.base_url, cfg.api_key_env, cfg.batch_size, cfg.precision) == (
        "qwen2.5-coder-0.5b-instruct", "local", None, "OPENAI_API_KEY", 8, "auto")  # auto: bf16 where native, else fp32
    with pytest.raises(ValueError, match="not the key"):
        BackendConfig(api_key_env="sk-secret-123")
    with pytest.raises(ConfigError):
        from_dict(BackendConfig, {"precision": "fp8"})
    from adaptlab.studies.tone_config import BackendConfig as FromTone

    assert FromTone is BackendConfig


def test_registered_backend_is_built_by_make_lm_behind_the_cache(tmp_path):
    built = []

    def fake_factory(cfg, **kwargs):
        built.append((cfg, kwargs))
        return FakeLM(name=f"fake:{cfg.model}", **kwargs)

    with pytest.raises(ValueError):
        BackendConfig(backend="fake")
    register_backend("fake", fake_factory)
    cfg = from_dict(BackendConfig, {"model": "m", "backend": "fake"})
    lm = make_lm(cfg, tmp_path / "cache.sqlite", reply=lambda chat, p: "ok")
    assert built == [(cfg, {"reply": built[0][1]["reply"]})]
    assert isinstance(lm, CachedLM) and isinstance(lm.inner, FakeLM)
    assert lm.name == "fake:m" and lm.path == tmp_path / "cache.sqlite"
    assert lm.chat(HI, GenParams()) == lm.chat(HI, GenParams()) == ["ok"]
    assert lm.inner.calls == 1
    assert all(supports(lm, p) for p in (Scorer, ChoiceScorer, AdapterHost))
    bare = make_lm(cfg)  # no cache path: the backend itself
    assert isinstance(bare, FakeLM) and bare.name == "fake:m"


def test_register_backend_rejects_bad_entries():
    with pytest.raises(AdaptlabError):
        register_backend("", lambda cfg: FakeLM())
    with pytest.raises(AdaptlabError):
        register_backend("x", "not a factory")


def test_llamacpp_factory_builds_a_llamacpp_lm_behind_the_cache(tmp_path, monkeypatch):
    import adaptlab.lm.llamacpp as llamacpp

    built = []

    class Stub:  # like LlamaCppLM: generation only, no scorer
        def __init__(self, ref):
            built.append(ref)
            self.name = f"llamacpp:{ref}"

        def chat(self, chats, params):
            return ["Yes" for _ in chats]

    monkeypatch.setattr(llamacpp, "LlamaCppLM", Stub)
    lm = make_lm(BackendConfig(model="qwen2.5-coder-0.5b-instruct", backend="llamacpp"),
                 tmp_path / "cache.sqlite")
    assert built == ["qwen2.5-coder-0.5b-instruct"]
    assert isinstance(lm.inner, Stub) and lm.name == "llamacpp:qwen2.5-coder-0.5b-instruct"
    assert not any(supports(lm, p) for p in (Scorer, ChoiceScorer, AdapterHost))
    assert lm.chat(HI, GenParams()) == ["Yes"]
    assert LLMJudge(lm, "friendly").margins(["some text"]) == [5.0]  # the Yes/No rubric path


def test_local_factory_passes_config_and_wrapping_kwargs(monkeypatch):
    import adaptlab.lm.local as local

    calls = []

    class Stub:
        def __init__(self, ref, **kwargs):
            calls.append((ref, kwargs))
            self.name = kwargs.get("name") or f"local:{ref}"

        def chat(self, chats, params):
            return ["" for _ in chats]

    monkeypatch.setattr(local, "LocalLM", Stub)
    model, tok = object(), object()
    lm = make_lm(BackendConfig(model="smollm2-135m-instruct", batch_size=3, precision="bf16"),
                 model=model, tokenizer=tok, name="student")
    assert isinstance(lm, Stub) and lm.name == "student"
    assert calls == [("smollm2-135m-instruct", {"precision": "bf16", "batch_size": 3, "model": model,
                                                "tokenizer": tok, "name": "student"})]


def test_openai_factory_maps_batch_size_to_concurrency(monkeypatch):
    import adaptlab.lm.openai_http as openai_http

    calls = []
    monkeypatch.setattr(openai_http, "OpenAILM", lambda model, **kw: calls.append((model, kw)) or FakeLM())
    make_lm(BackendConfig(model="gpt-x", backend="openai", base_url="http://h/v1", api_key_env="MY_KEY",
                          batch_size=5))
    assert calls == [("gpt-x", {"base_url": "http://h/v1", "api_key_env": "MY_KEY", "concurrency": 5})]


def test_importing_the_registry_does_not_import_torch():
    code = ("import sys, adaptlab, adaptlab.lm, adaptlab.lm.registry, adaptlab.lm.config; "
            "from adaptlab.lm import make_lm, CachedLM, supports; "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_local_set_adapter_names_the_weights(tmp_path):
    """Real model: the name follows the adapter's weights, and goes back with None (~15 s)."""
    pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from adaptlab.io import sha256_file
    from adaptlab.lm.local import LocalLM
    from adaptlab.models.registry import PACKAGED, source_files

    if source_files(PACKAGED["smollm2-135m-instruct"]) is None:
        pytest.skip("smollm2-135m-instruct not installed")
    lm = LocalLM("smollm2-135m-instruct", batch_size=1)
    base = lm.name
    dirs = []
    for r in (2, 4):  # two adapters with different weights
        tuned = peft.get_peft_model(lm.model, peft.LoraConfig(r=r, target_modules=["q_proj"],
                                                              init_lora_weights=False))
        tuned.save_pretrained(tmp_path / f"r{r}")
        lm.model = tuned.unload()
        dirs.append(tmp_path / f"r{r}")
    names = []
    for d in dirs:
        lm.set_adapter(str(d))
        assert isinstance(lm.model, peft.PeftModel)
        names.append(lm.name)
        assert lm.name == f"{base}+{sha256_file(d / 'adapter_model.safetensors')[:16]}"
    assert names[0] != names[1]
    lm.set_adapter(None)
    assert lm.name == base and not isinstance(lm.model, peft.PeftModel)
