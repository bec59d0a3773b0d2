"""The continuous-batching engine (lm.engine) on the real packaged student, against the plain paths.

At temperature 0 in fp32 the engine's tokens must equal a naive one-prompt-at-a-time
`model.generate`; scores must equal the unbatched ones to 1e-4. Prompts are the tone study's
teacher prompts (system prompt + demos: a long shared prefix), fewer than the slots refilled.
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = "smollm2-135m-instruct"

SPEC_DEMOS = [
    ("Why do cats purr?", "Cats purr by twitching the muscles of the larynx.",
     "Cats purr by quickly twitching the muscles in their voice box. You'll hear it when they're happy."),
    ("What is the tallest mountain in Africa?", "Mount Kilimanjaro, in Tanzania, about 5,895 metres.",
     "That'd be Mount Kilimanjaro, over in Tanzania. It's nearly six thousand meters high."),
]
ITEMS = [
    ("What is photosynthesis?", "Plants convert light energy into chemical energy, making glucose."),
    ("Why is the sky blue?", "Air molecules scatter short blue wavelengths of sunlight more than red ones."),
    ("What do bees make?", "Bees make honey from nectar and wax for their combs."),
    ("How far is the Moon?", "The Moon is about 384,400 kilometres from Earth on average."),
    ("What is a volcano?", "A volcano is an opening in the crust where molten rock, ash and gases escape."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet around 1600."),
]


def _teacher_chats():
    from adaptlab.synth.simulate import Demo, ToneSpec, teacher_chat

    spec = ToneSpec(demos=[Demo(q, f, a) for q, f, a in SPEC_DEMOS])
    return [teacher_chat(spec, facts, q) for q, facts in ITEMS]


@pytest.fixture(scope="module")
def lm():
    from adaptlab.lm.local import LocalLM
    from adaptlab.models.registry import PACKAGED, source_files

    if source_files(PACKAGED[MODEL]) is None:
        pytest.skip(f"{MODEL} not installed")
    return LocalLM(MODEL, precision="fp32", batch_size=4)


def _naive(lm, prompt: list[int], max_new: int, stops) -> list[int]:
    """One `model.generate` on one unpadded prompt: the reference."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        g = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=max_new, eos_token_id=list(stops),
                              pad_token_id=lm.tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    new = g[0, len(prompt):].tolist()
    cut = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
    return new[:cut]


def _prompts(lm):
    from adaptlab.models.chat import render_ids

    return [render_ids(lm.tok, c, add_generation_prompt=True) for c in _teacher_chats()]


def test_greedy_equals_naive_generate_with_shared_prefix_and_refills(lm):
    """6 prompts, 4 slots: the shared prefix is computed once, two slots are refilled (~25 s)."""
    from adaptlab.lm import engine
    from adaptlab.lm.base import GenParams

    prompts = _prompts(lm)
    P = engine.shared_prefix(prompts)
    assert P > 100, "the teacher prompts should share the system prompt and demos"
    texts = lm.chat(_teacher_chats(), GenParams(max_new_tokens=20))
    st = lm.last_stats
    assert st.prefix_tokens == P and st.prefill_tokens == P + sum(len(p) - P for p in prompts)
    want = [lm.tok.decode(_naive(lm, p, 20, set(lm._stops)), skip_special_tokens=True).strip()
            for p in prompts]
    assert texts == want


def test_rows_stop_on_their_own_stop_token_and_slots_refill(lm, monkeypatch):
    """Stop tokens that real text hits early ('.' and ','): every row ends at its own first stop,
    exactly where the naive loop ends it; finished rows leave the batch (fewer computed rows
    than a static batch); a tiny cache growth step exercises the in-place cache growth."""
    from adaptlab.lm import engine

    monkeypatch.setattr(engine, "ROOM", 3)
    prompts = _prompts(lm)
    stops = {lm.tok.convert_tokens_to_ids("."), lm.tok.convert_tokens_to_ids(",")} | set(lm._stops)
    done = []
    out, st = engine.generate(lm.model, prompts, max_new_tokens=24, stops=sorted(stops), slots=3,
                              pad_id=lm.tok.pad_token_id, on_done=lambda i, t: done.append(i))
    want = [_naive(lm, p, 24, stops) for p in prompts]
    assert out == want
    lengths = [len(t) for t in out]
    assert len(set(lengths)) > 1, "rows should finish at different lengths"
    assert any(t[-1] in stops for t in out)
    assert sorted(done) == list(range(len(prompts)))
    assert st.tokens == sum(lengths)
    # A static batch of 3 computes 3 rows for as many steps as its longest row, per batch.
    static = sum(3 * (max(lengths[i : i + 3]) - 1) for i in range(0, len(out), 3))
    assert st.row_steps < static


def test_no_shared_prefix(lm):
    """Prompts that differ at their first token: prefix of length 0, still exact."""
    from adaptlab.lm import engine

    base = lm.tok("Tell me one fact about the sea.", add_special_tokens=False).input_ids
    prompts = [[lm.tok.convert_tokens_to_ids(w)] + base for w in ("Hi", "Now", "Please")]
    assert engine.shared_prefix(prompts) == 0
    out, st = engine.generate(lm.model, prompts, max_new_tokens=12, stops=lm._stops, slots=2,
                              pad_id=lm.tok.pad_token_id)
    assert st.prefix_tokens == 0
    assert out == [_naive(lm, p, 12, set(lm._stops)) for p in prompts]


def test_seeded_sampling_is_reproducible(lm):
    from adaptlab.lm.base import GenParams

    chats = _teacher_chats()[:3]
    p = GenParams(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=7)
    first = lm.chat(chats, p)
    assert lm.chat(chats, p) == first
    assert all(t.strip() for t in first)
    other = lm.chat(chats, GenParams(max_new_tokens=16, temperature=0.9, top_p=0.9, seed=8))
    assert other != first


def test_stop_strings_match_previous_path(lm):
    from adaptlab.lm.base import GenParams
    from adaptlab.lm.local import LocalLM

    old = LocalLM(MODEL, model=lm.model, tokenizer=lm.tok, batch_size=3, engine="generate")
    chats = _teacher_chats()[:3]
    p = GenParams(max_new_tokens=24, stop=("'", " the "))
    new_texts = lm.chat(chats, p)
    assert new_texts == old.chat(chats, p)
    assert not any("'" in t or " the " in t for t in new_texts)


def test_scores_equal_unbatched(lm):
    """score and choice_logprobs with the shared prefix computed once and batches of 4 equal
    one-chat-at-a-time calls (no prefix sharing) to 1e-4."""
    from adaptlab.lm import engine
    from adaptlab.lm.local import LocalLM

    chats = _teacher_chats()
    conts = ["Sure, plants turn light into food.", "Yes", "", "It's far!", "Hot rock.", "Shakespeare."]
    one = LocalLM(MODEL, model=lm.model, tokenizer=lm.tok, batch_size=1)
    batched = lm.score(chats, conts)
    single = [one.score([c], [t])[0] for c, t in zip(chats, conts)]
    assert batched[2] == 0.0
    assert batched == pytest.approx(single, abs=1e-4)
    assert engine.shared_prefix(_prompts(lm)) > 100
    opts = ["Yes", "No"]
    cb = lm.choice_logprobs(chats, opts)
    cs = [one.choice_logprobs([c], opts)[0] for c in chats]
    for a, b in zip(cb, cs):
        assert a == pytest.approx(b, abs=1e-4)


def test_grouped_scores_equal_one_at_a_time(lm, monkeypatch):
    """Candidate answers of the same prompts (a multiple-choice question's options): each prompt
    computed once and its continuations scored from its cache equal separate calls to 1e-4,
    whatever the continuations' lengths (padding between prompt and continuation masked)."""
    from adaptlab.lm.local import LocalLM

    chats = _teacher_chats()[:4]
    options = ["Yes", "No, never at all.", "", "Paris is the capital of France, they say."]
    pairs = [(c, o) for c in chats for o in options]
    one = LocalLM(MODEL, model=lm.model, tokenizer=lm.tok, batch_size=1)
    calls = []
    real = LocalLM._grouped_batch
    monkeypatch.setattr(LocalLM, "_grouped_batch", lambda self, suf, *a: calls.append(len(suf)) or real(self, suf, *a))
    grouped = LocalLM(MODEL, model=lm.model, tokenizer=lm.tok, batch_size=6).score(*zip(*pairs))
    assert sum(calls) == len(chats)  # each prompt computed once, in the grouped path
    monkeypatch.undo()
    single = [one.score([c], [o])[0] for c, o in pairs]
    assert grouped == pytest.approx(single, abs=1e-4)
    assert grouped[2] == 0.0 and len(set(round(v, 3) for v in grouped)) > 8


def test_bad_engine_name():
    from adaptlab.lm.local import LocalLM

    with pytest.raises(ValueError, match="engine"):
        LocalLM(MODEL, model=object(), tokenizer=None, engine="vllm")


def test_int8_dynamic_scores_close_to_fp32_and_answers(lm):
    """int8-dynamic quantizes every Linear (not the embeddings); its log-probabilities of the fp32
    model's own greedy answers stay near fp32's, and it still answers. Measured here: 0.2-1.0
    nats per token on this 135M model (0.06-0.3 on the 0.5B teacher); weights off by a wrong
    scale or a broken kernel land several nats per token away."""
    from adaptlab.lm.base import GenParams
    from adaptlab.lm.local import LocalLM

    q8 = LocalLM(MODEL, precision="int8-dynamic", batch_size=4)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    assert not [n for n, m in q8.model.named_modules() if type(m) is torch.nn.Linear]
    assert sum(isinstance(m, DynamicLinear) for m in q8.model.modules()) >= 30 * 7  # 30 layers x 7
    assert q8.name.endswith(":int8-dynamic")
    chats = _teacher_chats()
    params = GenParams(max_new_tokens=16)
    ref = lm.chat(chats, params)
    n_tok = [len(lm.tok(r, add_special_tokens=False).input_ids) for r in ref]
    fp32, int8 = lm.score(chats, ref), q8.score(chats, ref)
    per_token = [abs(a - b) / n for a, b, n in zip(fp32, int8, n_tok)]
    assert sum(per_token) / len(per_token) < 1.0, per_token
    assert fp32 != int8  # really quantized, not the fp32 weights
    out = q8.chat(chats, params)
    assert all(o.strip() for o in out)


def test_int8_dynamic_refuses_adapter_swaps_and_gpus(lm):
    from adaptlab.errors import AdaptlabError
    from adaptlab.lm.local import LocalLM
    from adaptlab.models.load import quantize_dynamic

    q8 = LocalLM(MODEL, precision="int8-dynamic", model=lm.model, tokenizer=lm.tok)
    q8.set_adapter(None)  # already the bare base: a no-op, so systems without adapters still run
    assert q8.name == q8.base_name
    with pytest.raises(AdaptlabError, match="int8-dynamic"):
        q8.set_adapter("some/adapter")
    with pytest.raises(AdaptlabError, match="CPU only"):
        quantize_dynamic(torch.nn.Linear(2, 2), device="cuda")
