"""The optional llama.cpp backend on the packaged student's GGUF (skipped without llama-cpp-python)."""
from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.lm.base import GenParams  # noqa: E402
from adaptlab.lm.llamacpp import LlamaCppLM, gguf_file  # noqa: E402
from adaptlab.models.registry import PACKAGED, source_files  # noqa: E402

MODEL = "smollm2-135m-instruct"
if source_files(PACKAGED[MODEL]) is None:
    pytest.skip(f"{MODEL} not installed", allow_module_level=True)

CHATS = [[{"role": "user", "content": q}] for q in
         ("What colour is the sky?", "Name a fruit.", "What do bees make?")]


@pytest.fixture(scope="module")
def lm():
    return LlamaCppLM(MODEL, n_ctx=1024)


def test_greedy_answers_are_stable_and_independent_of_batching(lm):
    greedy = GenParams(max_new_tokens=24)
    first = lm.chat(CHATS, greedy)
    assert all(isinstance(t, str) and t.strip() for t in first), first
    assert lm.chat(CHATS, greedy) == first
    assert lm.chat(CHATS[:1], greedy) + lm.chat(CHATS[1:], greedy) == first
    assert lm.completion_tokens > 0


def test_sampling_is_reproducible_by_seed(lm):
    a = lm.chat(CHATS, GenParams(max_new_tokens=24, temperature=1.0, seed=3))
    assert lm.chat(CHATS, GenParams(max_new_tokens=24, temperature=1.0, seed=3)) == a
    others = [lm.chat(CHATS, GenParams(max_new_tokens=24, temperature=1.0, seed=s)) for s in (4, 5)]
    assert any(o != a for o in others)


def test_stop_strings_cut_the_answer(lm):
    text = lm.chat(CHATS[:1], GenParams(max_new_tokens=24))[0]
    word = text.split()[1]
    cut = lm.chat(CHATS[:1], GenParams(max_new_tokens=24, stop=(word,)))[0]
    assert word not in cut and len(cut) < len(text)


def test_refuses_what_is_not_a_gguf(tmp_path):
    with pytest.raises(AdaptlabError, match="not a packaged GGUF model or a .gguf file"):
        gguf_file(str(tmp_path / "nope.gguf"))
    with pytest.raises(AdaptlabError, match="ships as safetensors"):
        gguf_file("minilm-l6")
    assert gguf_file(MODEL).suffix == ".gguf"
