"""SoftSRV generator (synth/softsrv.py) on the real packaged SmolLM2-135M, at tiny settings: the
loss falls, only the prompt trains, save -> load keeps the prompt, generation is seeded.

Fake sentence embeddings (seeded random unit vectors) stand in for MiniLM: what the prompt
module does with a context does not depend on where the vector came from. The mixture test is
the fast one; the other kinds, resume and the real MiniLM path are `slow`."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.synth import softsrv  # noqa: E402
from adaptlab.synth.softsrv import SoftPromptConfig, draw_contexts  # noqa: E402

TEXTS = ["Q: What is 3 plus 4? A: 7", "Q: What is 2 plus 2? A: 4", "Q: What is 5 plus 1? A: 6",
         "Q: What is 8 plus 1? A: 9", "Q: What is 6 plus 3? A: 9", "Q: What is 1 plus 1? A: 2"]


def fake_embed(texts):
    """Unit vectors, a fixed function of each text."""
    seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
    e = np.stack([np.random.default_rng(s).normal(size=384) for s in seeds]).astype("float32")
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def lm():
    try:
        from adaptlab.models.load import load_model

        return load_model("smollm2-135m-instruct")
    except AdaptlabError as e:  # the packaged model is not installed
        pytest.skip(str(e))


def _cfg(kind: str, **kw) -> SoftPromptConfig:
    return SoftPromptConfig(kind=kind, **{**dict(length=4, bases=3, hidden=32, lr=1e-2, steps=6,
                                                 batch_size=3, max_length=32, seed=0), **kw})


def _lm_hashes(model) -> dict[str, str]:
    return {n: hashlib.sha256(p.detach().contiguous().numpy()).hexdigest()
            for n, p in model.named_parameters()}


def _initial_prompt(cfg, model, tok, ctx_dim):
    """The prompt module as training starts it (the same seed draws the same init)."""
    torch.manual_seed(cfg.seed)
    dim = model.get_input_embeddings().weight.shape[1]
    return softsrv.build_prompt(cfg, dim, ctx_dim, softsrv.init_embeddings(cfg, model, tok))


def _full_loss(cfg, model, tok, prompt, ctx) -> float:
    """The mean loss over all targets at once (one batch, no grad)."""
    from adaptlab.train.batches import collate

    rows = softsrv._rows(tok, TEXTS, cfg)
    ids, mask, labels = collate(rows, list(range(len(rows))), tok.pad_token_id, "cpu")
    with torch.no_grad():
        p = softsrv.soft_prompt(prompt, cfg.kind, cfg.length, ctx, len(rows))
        return float(softsrv.prompt_loss(model, p, ids, mask, labels))


def _check_kind(kind: str, lm, tmp_path):
    model, tok = lm
    cfg = _cfg(kind)
    ctx = torch.as_tensor(fake_embed(TEXTS)) if cfg.contextual else None
    init = _initial_prompt(cfg, model, tok, 384 if cfg.contextual else 0)
    before_lm = _lm_hashes(model)
    g = softsrv.fit(cfg, TEXTS, tmp_path / kind, embed_fn=fake_embed, lm=lm)
    s = g.summary

    # the loss falls: per step (first vs last steps) and on the whole target set before/after
    losses = s["losses"]
    assert len(losses) == cfg.steps and s["final_loss"] == losses[-1]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
    l0, l1 = _full_loss(cfg, model, tok, init, ctx), _full_loss(cfg, model, tok, g.prompt, ctx)
    assert l1 < l0 - 0.2, (l0, l1)
    print(f"{kind}: steps {losses[0]:.3f} -> {losses[-1]:.3f}; targets {l0:.3f} -> {l1:.3f}; "
          f"{s['trainable_params']} params, {s['seconds']} s")

    # only the prompt trained: every LM weight as it was, every prompt tensor moved
    assert _lm_hashes(model) == before_lm
    assert not any(p.requires_grad for p in model.parameters())
    assert s["trainable_params"] == sum(p.numel() for p in g.prompt.parameters())
    for name, p in g.prompt.state_dict().items():
        assert not torch.equal(p, init.state_dict()[name]), f"{name} did not train"

    # save -> load: the same prompt for the same context
    back = softsrv.load_generator(tmp_path / kind, lm=lm, embed_fn=fake_embed)
    probe = torch.as_tensor(fake_embed(["an unseen context", "another"]))
    assert torch.equal(back.soft_prompt(probe), g.soft_prompt(probe))
    if cfg.contextual:
        assert torch.equal(back.contexts, g.contexts)
        assert not torch.allclose(g.soft_prompt(probe[:1]), g.soft_prompt(probe[1:]))

    # generation: n non-empty texts, the same for the same seed
    kw = dict(max_new_tokens=6, temperature=1.0, top_p=0.95)
    a = back.generate(3, seed=1, **kw)
    assert len(a) == 3 and all(isinstance(t, str) and t.strip() for t in a), a
    assert g.generate(3, seed=1, **kw) == a  # the in-memory generator samples the same
    assert back.generate(3, seed=2, **kw) != a
    return back


def test_mixture(lm, tmp_path):
    g = _check_kind("mixture", lm, tmp_path)
    # contexts given as texts go through the generator's embedding function
    out = g.generate(2, contexts=["Q: What is 9 plus 9? A: 18", "Q: What is 7 plus 0? A: 7"],
                     variation="interpolate", max_new_tokens=3)
    assert len(out) == 2 and all(t.strip() for t in out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["noncontextual", "contextual"])
def test_kind(kind, lm, tmp_path):
    _check_kind(kind, lm, tmp_path)


@pytest.mark.slow
def test_resume_replays_the_same_steps(lm, tmp_path, monkeypatch):
    """Killed after a checkpoint, a rerun picks up there and ends where an unbroken run does."""
    cfg = _cfg("contextual", steps=5, save_every=2)
    whole = softsrv.train_generator(cfg, TEXTS, tmp_path / "whole", embed_fn=fake_embed, lm=lm)
    step = softsrv._step
    calls = []

    def dies_at_4(*a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return step(*a, **kw)

    monkeypatch.setattr(softsrv, "_step", dies_at_4)
    with pytest.raises(KeyboardInterrupt):
        softsrv.train_generator(cfg, TEXTS, tmp_path / "broken", embed_fn=fake_embed, lm=lm)
    assert (tmp_path / "broken" / "checkpoints" / "step-2").is_dir()
    monkeypatch.setattr(softsrv, "_step", step)
    resumed = softsrv.train_generator(cfg, TEXTS, tmp_path / "broken", embed_fn=fake_embed, lm=lm)
    assert resumed["steps"] == 5 and resumed["tokens_this_session"] < whole["tokens_this_session"]
    np.testing.assert_allclose(resumed["losses"], whole["losses"], rtol=1e-5)
    a = softsrv.load_generator(tmp_path / "whole", lm=lm).prompt.state_dict()
    b = softsrv.load_generator(tmp_path / "broken", lm=lm).prompt.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    assert not (tmp_path / "broken" / "checkpoints").exists()


@pytest.mark.slow
def test_real_minilm_contexts(lm, tmp_path):
    """Without embeddings or embed_fn the targets are embedded with MiniLM, once: a rerun into
    the same directory reads them back."""
    pytest.importorskip("sentence_transformers")
    cfg = _cfg("contextual", steps=1)
    g = softsrv.fit(cfg, TEXTS, tmp_path / "g", lm=lm)
    assert g.contexts.shape == (len(TEXTS), 384)
    torch.testing.assert_close(g.contexts.norm(dim=1), torch.ones(len(TEXTS)))
    again = softsrv.fit(cfg, TEXTS, tmp_path / "g", embed_fn=lambda t: 1 / 0, lm=lm)
    assert torch.equal(again.contexts, g.contexts)


def test_draw_contexts():
    pool = torch.nn.functional.normalize(torch.randn(5, 384), dim=-1)
    same = draw_contexts(pool, 7, "none", 0.5, seed=0)
    assert all(any(torch.allclose(c, p) for p in pool) for c in same)
    for variation in ("noise", "interpolate"):
        c = draw_contexts(pool, 7, variation, 0.5, seed=0)
        torch.testing.assert_close(c.norm(dim=1), torch.ones(7))
        assert torch.equal(c, draw_contexts(pool, 7, variation, 0.5, seed=0))
        assert not torch.equal(c, draw_contexts(pool, 7, variation, 0.5, seed=1))
        assert not any(torch.allclose(x, p) for x in c for p in pool)
    noisy = draw_contexts(pool, 200, "noise", 0.5, seed=0)
    assert 0.75 < float((noisy * pool[0]).sum(1).max()) < 0.95  # ~ 1/sqrt(1 + 0.5^2) = 0.89


def test_config_and_inputs_checked(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        SoftPromptConfig(kind="mlp")
    with pytest.raises(ValueError, match="hidden"):
        SoftPromptConfig(kind="contextual", hidden=0)
    with pytest.raises(AdaptlabError, match="no target texts"):
        softsrv.train_generator(SoftPromptConfig(), [], tmp_path, lm=(None, None))
    with pytest.raises(AdaptlabError, match="target 2"):
        softsrv.train_generator(SoftPromptConfig(), ["a", " "], tmp_path, lm=(None, None))
    with pytest.raises(AdaptlabError, match="not a softsrv generator"):
        softsrv.load_generator(tmp_path)
