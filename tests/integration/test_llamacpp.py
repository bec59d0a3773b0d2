"""The optional llama.cpp backend on the packaged student's GGUF (skipped without llama-cpp-python).

CI does not install llama-cpp-python (it builds llama.cpp from source: ~5 min on 2 idle cores,
far longer on busy ones), so these skip there; the backend's own logic runs in CI on a fake
module (tests/unit/test_llamacpp_fake.py). To run them:

    .venv/bin/pip install 'adaptlab[llamacpp]'     # or: pip install llama-cpp-python==0.3.36
    .venv/bin/python -m pytest -q tests/integration/test_llamacpp.py

Besides the backend, llama.cpp is an independent reference for the GGUF conversion: its logits
(its own dequantization, quantized kernels) must be close to the converted fp32 model's.
"""
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

# Measured on the 17-token text below (llama-cpp-python 0.3.36): min correlation 0.9989 per
# position, top-1 agreement 0.94, max |diff| 1.0. One Q4_1 tensor decoded with its nibble halves
# swapped gives min correlation -0.08 and top-1 0.00.
CORR_MIN, TOP1_MIN = 0.99, 0.8

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


def test_logits_are_close_to_the_converted_models():
    """llama.cpp and transformers decode the GGUF independently; on one text their logits must
    nearly agree (not exactly: llama.cpp multiplies with quantized activations)."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    import llama_cpp

    from adaptlab.models.load import load_model

    model, tok = load_model(MODEL)
    text = "The bees made honey in the old garden, and the children ate it with bread."
    ids = tok(text).input_ids
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].float().numpy()
    llm = llama_cpp.Llama(model_path=str(gguf_file(MODEL)), n_ctx=256, logits_all=True,
                          n_threads=2, verbose=False)
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)], dtype=np.float32)
    assert theirs.shape == ours.shape
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs)]
    top1 = np.mean(ours.argmax(-1) == theirs.argmax(-1))
    print(f"llama.cpp vs converted: min corr {min(corr):.5f}, top-1 agreement {top1:.2f}, "
          f"max |diff| {np.abs(ours - theirs).max():.3f}")
    assert min(corr) > CORR_MIN and top1 >= TOP1_MIN
