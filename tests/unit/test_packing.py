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
