"""The llama.cpp backend's own logic, on a fake `llama_cpp` module (CI lacks llama-cpp-python).

What the fake records is what LlamaCppLM asked llama.cpp for: the model file, a seed per chat,
greedy vs sampling settings, stop strings; what it returns tests the answer's clean-up and token
counting. The real backend is tested in tests/integration/test_llamacpp.py.
"""
from __future__ import annotations

import hashlib
import sys
import types

import pytest

from adaptlab.errors import AdaptlabError
from adaptlab.lm.base import GenParams
from adaptlab.models import registry
from adaptlab.models.packaged import PackagedModel

CHATS = [[{"role": "user", "content": q}] for q in ("One?", "Two?", "Three?")]


class FakeLlama:
    """Answers `<question> seed=<seed> STOP tail`; ignores stop strings unless `honour_stop`."""

    made: list = []
    honour_stop = False

    def __init__(self, model_path, n_ctx, n_threads, verbose):
        self.kwargs = dict(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, verbose=verbose)
        self.calls = []
        FakeLlama.made.append(self)

    def create_chat_completion(self, messages, max_tokens, temperature, top_p, top_k, seed, stop):
        self.calls.append(dict(messages=messages, max_tokens=max_tokens, temperature=temperature,
                               top_p=top_p, top_k=top_k, seed=seed, stop=stop))
        text = f"  {messages[-1]['content']} seed={seed} STOP tail  "
        if self.honour_stop and stop:  # as llama.cpp does: the text ends before a stop string
            text = text[:min((text.find(s) for s in stop if s in text), default=len(text))]
        if messages[-1]["content"] == "empty":
            return {"choices": [{"message": {"content": None}}]}  # no usage block either
        return {"choices": [{"message": {"content": text}}],
                "usage": {"completion_tokens": len(text.split())}}


@pytest.fixture
def fake_llama(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=FakeLlama))
    monkeypatch.setattr(FakeLlama, "made", [])
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF fake")
    return gguf


def test_loads_the_file_with_the_given_context_and_threads(fake_llama):
    from adaptlab.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(str(fake_llama), n_ctx=512, threads=3)
    assert FakeLlama.made[-1].kwargs == dict(model_path=str(fake_llama), n_ctx=512, n_threads=3,
                                             verbose=False)
    assert lm.name == f"llamacpp:{fake_llama}" and lm.path == fake_llama
    assert LlamaCppLM(str(fake_llama), name="teacher").name == "teacher"
    assert FakeLlama.made[-1].kwargs["n_threads"] >= 1  # default: the machine's cores


def test_each_chat_gets_seed_plus_its_index_and_answers_keep_order(fake_llama):
    from adaptlab.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(str(fake_llama))
    out = lm.chat(CHATS, GenParams(max_new_tokens=7, temperature=0.8, top_p=0.9, seed=5))
    calls = FakeLlama.made[-1].calls
    assert [c["seed"] for c in calls] == [5, 6, 7]
    assert [c["messages"] for c in calls] == CHATS
    assert all(c["max_tokens"] == 7 and c["temperature"] == 0.8 and c["top_p"] == 0.9
               and c["top_k"] == 0 for c in calls)  # sampling: no top-k cut
    assert out == [f"{q} seed={s} STOP tail" for q, s in zip(("One?", "Two?", "Three?"), (5, 6, 7))]


def test_greedy_is_top_k_one_whatever_top_p(fake_llama):
    from adaptlab.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(str(fake_llama))
    lm.chat(CHATS[:1], GenParams(temperature=0.0, top_p=0.5))
    (c,) = FakeLlama.made[-1].calls
    assert (c["temperature"], c["top_k"], c["top_p"]) == (0.0, 1, 1.0)


def test_stop_strings_go_to_llama_cpp_and_are_cut_here_too(fake_llama, monkeypatch):
    from adaptlab.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(str(fake_llama))
    out = lm.chat(CHATS[:2], GenParams(stop=("STOP", "never")))
    assert [c["stop"] for c in FakeLlama.made[-1].calls] == [["STOP", "never"]] * 2
    assert out == ["One? seed=0", "Two? seed=1"]  # cut although the fake ignored them
    monkeypatch.setattr(FakeLlama, "honour_stop", True)
    assert lm.chat(CHATS[:2], GenParams(stop=("STOP",))) == out
    lm.chat(CHATS[:1], GenParams())
    assert FakeLlama.made[-1].calls[-1]["stop"] is None  # no stop strings: None, not []


def test_completion_tokens_add_up_across_calls(fake_llama):
    from adaptlab.lm.llamacpp import LlamaCppLM

    lm = LlamaCppLM(str(fake_llama))
    assert lm.completion_tokens == 0
    lm.chat(CHATS, GenParams())
    assert lm.completion_tokens == 3 * 4  # '<q> seed=<s> STOP tail': 4 words each
    assert lm.chat([[{"role": "user", "content": "empty"}]], GenParams()) == [""]
    assert lm.completion_tokens == 12  # a reply without usage counts nothing
    lm.chat(CHATS[:1], GenParams())
    assert lm.completion_tokens == 16


def test_without_llama_cpp_the_error_names_the_extra(monkeypatch, tmp_path):
    from adaptlab.errors import MissingExtra
    from adaptlab.lm.llamacpp import LlamaCppLM

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    with pytest.raises(MissingExtra, match="llamacpp"):
        LlamaCppLM(str(tmp_path / "x.gguf"))


# -- which file: gguf_file -----------------------------------------------------------------------
def test_gguf_file_takes_a_gguf_path_and_refuses_others(fake_llama, tmp_path):
    from adaptlab.lm.llamacpp import gguf_file

    assert gguf_file(str(fake_llama)) == fake_llama
    for bad in (tmp_path / "missing.gguf", tmp_path):
        with pytest.raises(AdaptlabError, match="not a packaged GGUF model or a .gguf file"):
            gguf_file(str(bad))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(AdaptlabError, match="not a packaged GGUF model"):
        gguf_file(str(other))
    with pytest.raises(AdaptlabError, match="ships as safetensors"):
        gguf_file("minilm-l6")


def _packaged(monkeypatch, m: PackagedModel, files):
    monkeypatch.setitem(registry.PACKAGED, m.name, m)
    real = registry.source_files
    monkeypatch.setattr(registry, "source_files", lambda x: files if x.name == m.name else real(x))


def test_a_packaged_single_file_model_is_used_in_place(fake_llama, monkeypatch):
    from adaptlab.lm.llamacpp import LlamaCppLM, gguf_file

    m = PackagedModel("fake-one", "test", "none", ("fake_mod",), ("m.gguf",),
                      install="pip install fake-one")
    _packaged(monkeypatch, m, [fake_llama])
    assert gguf_file("fake-one") == fake_llama
    lm = LlamaCppLM("fake-one")
    assert FakeLlama.made[-1].kwargs["model_path"] == str(fake_llama) and lm.name == "llamacpp:fake-one"
    _packaged(monkeypatch, m, None)
    with pytest.raises(AdaptlabError, match="not installed; run: pip install fake-one"):
        gguf_file("fake-one")


def test_a_packaged_split_model_is_assembled_once_and_checked(fake_llama, monkeypatch, tmp_path):
    from adaptlab.lm.llamacpp import LlamaCppLM

    data = b"GGUF" + bytes(range(256)) * 8
    parts = []
    for i, chunk in enumerate((data[:700], data[700:1500], data[1500:])):
        parts.append(tmp_path / f"part{i}")
        parts[-1].write_bytes(chunk)
    m = PackagedModel("fake-split", "test", "none", ("a", "b", "c"), ("p0", "p1", "p2"), len(data),
                      hashlib.sha256(data).hexdigest(), install="pip install fake-split")
    _packaged(monkeypatch, m, parts)
    LlamaCppLM("fake-split")
    path = FakeLlama.made[-1].kwargs["model_path"]
    assert path == str(tmp_path / "cache" / "gguf" / "fake-split.gguf")
    assert open(path, "rb").read() == data
    parts[2].write_bytes(b"\0" * len(data[1500:]))  # the cached file stays good: reused
    LlamaCppLM("fake-split")
    assert FakeLlama.made[-1].kwargs["model_path"] == path
    (tmp_path / "cache" / "gguf" / "fake-split.gguf").write_bytes(b"\0" * len(data))
    with pytest.raises(AdaptlabError, match="sha256 mismatch"):  # corrupt cache, corrupt parts
        LlamaCppLM("fake-split")
    _packaged(monkeypatch, m, None)
    with pytest.raises(AdaptlabError, match="not installed; run: pip install fake-split"):
        LlamaCppLM("fake-split")
