"""batching=packed: random batches, each micro-batch's chats end to end in one row. The row's loss
equals the padded batch's; the check at setup notices a model that mixes packed chats; the
data order is random, not length-sorted."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from adaptlab.train import batches as B  # noqa: E402
from adaptlab.train import loop  # noqa: E402


def _rows(n=8, seed=0):
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(5, 20)
        ids = [rng.randrange(1, 97) for _ in range(length)]
        cut = rng.randint(2, length - 1)
        rows.append((ids, [-100] * cut + ids[cut:]))
    return rows


def _tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()


def _acc():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def test_random_order_is_a_shuffle_not_a_sort():
    lengths = list(range(10, 74))
    a = B.batch_order(lengths, 4, seed=0, epoch=0, grouped=False)
    assert sorted(i for b in a for i in b) == list(range(64)) and all(len(b) == 4 for b in a)
    assert a == B.batch_order(lengths, 4, seed=0, epoch=0, grouped=False)
    assert a != B.batch_order(lengths, 4, seed=0, epoch=1, grouped=False)
    spread = lambda bs: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bs)  # noqa: E731
    grouped = B.batch_order(lengths, 4, seed=0, epoch=0)
    assert spread(grouped) < spread(a) / 3  # grouped batches hold similar lengths; random ones not


def test_run_batches_follows_cfg_batching():
    from adaptlab.train import TuneConfig

    lengths = list(range(10, 50))
    packed, grouped = TuneConfig(batching="packed"), TuneConfig(batching="grouped")
    assert B.run_batches(packed, lengths, 10) == \
        [b for e in range(3) for b in B.batch_order(lengths, 4, 0, e, grouped=False)][:10]
    assert B.run_batches(grouped, lengths, 10) == \
        [b for e in range(3) for b in B.batch_order(lengths, 4, 0, e)][:10]
    assert B.run_batches(packed, lengths, 10, grouped=True) == B.run_batches(grouped, lengths, 10)


def test_collate_packed_positions_and_labels():
    rows = [([5, 6, 7], [-100, 6, 7]), ([8, 9], [8, 9])]
    ids, pos, labels = B.collate_packed(rows, [1, 0], "cpu")
    assert ids.tolist() == [[8, 9, 5, 6, 7]]
    assert pos.tolist() == [[0, 1, 0, 1, 2]]
    assert labels.tolist() == [[-100, 9, -100, 6, 7]]  # no chat learns from the one before it


@pytest.mark.parametrize("head_only", [True, False])
def test_packed_loss_equals_padded_loss(head_only):
    model, rows, acc = _tiny(), _rows(), _acc()
    idx = [0, 3, 5, 6]
    ids, mask, labels = B.collate(rows, idx, 0, "cpu")
    pids, pos, plabels = B.collate_packed(rows, idx, "cpu")
    with torch.no_grad():
        padded = loop._loss(acc, model, ids, mask, labels, head_only)
        packed = loop._loss(acc, model, pids, None, plabels, head_only, pos)
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-6)


def test_setup_check_passes_and_notices_a_model_that_mixes_packed_chats(monkeypatch):
    model, rows, acc = _tiny(), _rows(), _acc()
    assert loop._packing_ok(acc, model, rows)
    import transformers.masking_utils as mu

    monkeypatch.setattr(mu, "find_packed_sequence_indices", lambda position_ids: None)
    logged = []
    monkeypatch.setattr(loop.progress, "log", logged.append)
    assert not loop._packing_ok(acc, model, rows)  # one causal mask over the whole row
    assert logged and "grouped" in logged[0]
    assert model.training is False  # left as it was


# -- per-example attention (train/segments.py) ---------------------------------------------------
@pytest.mark.parametrize("head_only", [True, False])
def test_segmented_attention_loss_equals_padded_loss(head_only):
    from adaptlab.train import segments

    model, rows, acc = _tiny(), _rows(), _acc()
    idx = [1, 2, 4, 7]
    ids, mask, labels = B.collate(rows, idx, 0, "cpu")
    with torch.no_grad():
        padded = loop._loss(acc, model, ids, mask, labels, head_only)
    before = segments.enable(model)
    assert before == "sdpa" and model.config._attn_implementation == segments.NAME
    pids, pos, plabels = B.collate_packed(rows, idx, "cpu")
    with torch.no_grad():
        seg = loop._loss(acc, model, pids, None, plabels, head_only, pos,
                         [len(rows[i][0]) for i in idx])
        again = loop._loss(acc, model, ids, mask, labels, head_only)  # no lengths: plain sdpa
    segments.restore(model, before)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(seg, padded, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, padded, rtol=0, atol=0)


def test_segmented_attention_gradients_equal_padded_gradients():
    """The backward through the split segments (one cat of their gradients) is the padded
    batch's backward."""
    from adaptlab.train import segments

    model, rows, acc = _tiny(), _rows(), _acc()
    idx = [1, 2, 4, 7]
    params = [p for p in model.parameters()]
    ids, mask, labels = B.collate(rows, idx, 0, "cpu")
    padded = torch.autograd.grad(loop._loss(acc, model, ids, mask, labels, True), params)
    before = segments.enable(model)
    pids, pos, plabels = B.collate_packed(rows, idx, "cpu")
    seg = torch.autograd.grad(loop._loss(acc, model, pids, None, plabels, True, pos,
                                         [len(rows[i][0]) for i in idx]), params)
    segments.restore(model, before)
    for a, b in zip(seg, padded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_segmented_attention_really_splits_the_row(monkeypatch):
    from adaptlab.train import segments

    model, rows = _tiny(), _rows()
    segments.enable(model)
    calls = []
    import transformers.integrations.sdpa_attention as sa

    real = sa.sdpa_attention_forward
    monkeypatch.setattr(sa, "sdpa_attention_forward",
                        lambda m, q, *a, **k: calls.append(q.shape[2]) or real(m, q, *a, **k))
    pids, pos, _ = B.collate_packed(rows, [0, 1, 2], "cpu")
    lengths = [len(rows[i][0]) for i in (0, 1, 2)]
    with torch.no_grad():
        model(input_ids=pids, position_ids=pos, use_cache=False, **{segments.KEY: lengths})
        with pytest.raises(ValueError, match="do not cover"):
            model(input_ids=pids, position_ids=pos, use_cache=False, **{segments.KEY: lengths[:2]})
    assert calls[: 2 * 3] == lengths * 2  # 2 layers, one sdpa call per chat each
    segments.restore(model, "sdpa")


def test_enable_leaves_other_attention_implementations_alone():
    from adaptlab.train import segments

    model = _tiny()
    model.set_attn_implementation("eager")
    assert segments.enable(model) is None and model.config._attn_implementation == "eager"


def test_tune_trains_packed_through_segments_and_saves_the_model_as_it_came(tmp_path, monkeypatch):
    from adaptlab.train import TuneConfig, segments
    from adaptlab.train.methods import lora

    tiny = _tiny()
    seen = {}

    def build(cfg):
        return lora.attach(cfg, tiny, _Tok())

    real_step = loop._micro_step

    def spy(state, batch):
        seen.setdefault("impl", _base_impl(state))
        seen["packed"] = state.packed
        return real_step(state, batch)

    monkeypatch.setattr(loop, "_micro_step", spy)
    monkeypatch.setattr(loop, "tokenize", lambda tok, ex, *a, **k: _rows(12))
    from dataclasses import replace

    cfg = TuneConfig(max_steps=2, batch_size=4, save_every=0, warmup_steps=0)
    loop.tune(cfg, [{}] * 12, tmp_path / "out", factory=replace(lora.LORA, build=build,
                                                                 save=lambda *a: None))
    assert seen == {"impl": segments.NAME, "packed": True}
    assert tiny.config._attn_implementation == "sdpa"


class _Tok:
    pad_token_id = 0


def _base_impl(state):
    return loop._base(state.acc, state.model).config._attn_implementation
