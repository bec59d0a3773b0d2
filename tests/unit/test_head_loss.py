"""train/head_loss.py: the LM head and its cross-entropy in one autograd function. Its loss and
gradients equal `F.cross_entropy(F.linear(h, W, b).float(), y)`'s, with and without a trained
head and bias, in fp32 and under bf16 autocast; the training loss uses it and still equals the
full forward's loss and gradients."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from adaptlab.train.head_loss import applies, linear_cross_entropy  # noqa: E402


def _inputs(m=37, d=24, v=101, bias=True, train_head=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(m, d, generator=g, requires_grad=True)
    w = (torch.randn(v, d, generator=g) * 0.3).requires_grad_(train_head)
    b = (torch.randn(v, generator=g) * 0.1).requires_grad_(train_head) if bias else None
    y = torch.randint(0, v, (m,), generator=g)
    return h, w, b, y


def _grads(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None and t.requires_grad])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("train_head", [True, False])
def test_loss_and_gradients_equal_the_reference(bias, train_head):
    h, w, b, y = _inputs(bias=bias, train_head=train_head)
    ref = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w, b).float(), y)
    got = linear_cross_entropy(h, w, b, y)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    # a scaled loss, as the loop's weights and grad_accum make it
    for r, g in zip(_grads(ref * 0.37, (h, w, b)), _grads(got * 0.37, (h, w, b))):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


def test_gradients_are_not_those_of_a_wrong_label():
    h, w, b, y = _inputs()
    ref = _grads(torch.nn.functional.cross_entropy(h @ w.t() + b, (y + 1) % w.shape[0]), (h,))
    got = _grads(linear_cross_entropy(h, w, b, y), (h,))
    assert (got[0] - ref[0]).abs().max() > 1e-3


def test_under_bf16_autocast_matches_the_reference_under_autocast():
    h, w, b, y = _inputs(m=64, d=32, v=211)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w, b).float(), y)
        got = linear_cross_entropy(h, w, b, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for r, g in zip(_grads(ref, (h, w, b)), _grads(got, (h, w, b))):
        assert g.dtype == r.dtype == torch.float32
        torch.testing.assert_close(g, r, rtol=2e-2, atol=2e-3)


def test_applies_to_a_plain_linear_head_only():
    assert applies(torch.nn.Linear(4, 8, bias=False))
    assert not applies(torch.nn.Sequential(torch.nn.Linear(4, 8)))
    int_head = torch.nn.Linear(4, 8, bias=False)
    int_head.weight = torch.nn.Parameter(torch.zeros(8, 4, dtype=torch.int8), requires_grad=False)
    assert not applies(int_head)
    with pytest.raises(ValueError, match="no labelled positions"):
        linear_cross_entropy(torch.zeros(0, 4), torch.zeros(8, 4), None, torch.zeros(0).long())


def test_workspace_is_reused_and_never_shared_by_two_pending_backwards():
    from adaptlab.train import head_loss

    head_loss.release()
    h1, w, b, y1 = _inputs(m=20, bias=False, train_head=False, seed=1)
    h2, _, _, y2 = _inputs(m=12, bias=False, train_head=False, seed=2)
    ref1 = _grads(torch.nn.functional.cross_entropy(h1 @ w.t(), y1), (h1,))[0]
    ref2 = _grads(torch.nn.functional.cross_entropy(h2 @ w.t(), y2), (h2,))[0]
    # two forwards before either backward: the second must not write into the first's logits
    l1, l2 = linear_cross_entropy(h1, w, None, y1), linear_cross_entropy(h2, w, None, y2)
    g2, g1 = _grads(l2, (h2,))[0], _grads(l1, (h1,))[0]
    torch.testing.assert_close(g1, ref1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g2, ref2, rtol=1e-5, atol=1e-7)
    # one after the other: the second reuses the first's workspace
    buf = head_loss._work["buf"]
    again = _grads(linear_cross_entropy(h2, w, None, y2), (h2,))[0]
    assert head_loss._work["buf"] is buf and not head_loss._work["busy"]
    torch.testing.assert_close(again, ref2, rtol=1e-5, atol=1e-7)
    head_loss.release()
    assert head_loss._work["buf"] is None


def test_a_second_backward_through_the_same_graph_is_refused():
    h, w, b, y = _inputs()
    loss = linear_cross_entropy(h, w, b, y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


@pytest.mark.parametrize("lora", [False, True])
def test_training_loss_and_gradients_equal_the_full_forward(lora, monkeypatch):
    """`loop._loss` with head_only (the decoder, then the fused head at labelled positions) against
    the model's own forward with labels, on a tiny Llama; and the fused path really ran."""
    pytest.importorskip("transformers")
    from accelerate import Accelerator
    from transformers import LlamaConfig, LlamaForCausalLM

    from adaptlab.train import batches as B, head_loss, loop

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
        for n, p in model.named_parameters():  # nonzero B, so the adapters' gradients are too
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
    rows = [([5, 9, 11, 3, 7, 2], [-100, -100, -100, 3, 7, 2]),
            ([4, 8, 15, 16, 23, 42, 6, 1], [-100, -100, 15, 16, 23, 42, 6, 1])]
    ids, mask, labels = B.collate(rows, [0, 1], 0, "cpu")
    acc = Accelerator(cpu=True)
    params = [p for p in model.parameters() if p.requires_grad]
    calls = []
    real = head_loss._function()
    monkeypatch.setattr(loop, "linear_cross_entropy",
                        lambda *a: calls.append(1) or real.apply(*a))
    fused = loop._loss(acc, model, ids, mask, labels, True)
    g_fused = torch.autograd.grad(fused, params)
    full = loop._loss(acc, model, ids, mask, labels, False)
    g_full = torch.autograd.grad(full, params)
    assert calls == [1]
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_fused, g_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_frozen_heads_cast_is_kept_and_renewed_when_the_weight_changes():
    from adaptlab.train import head_loss

    head_loss.release()
    h, w, _, y = _inputs(m=16, d=32, v=64, bias=False, train_head=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear_cross_entropy(h, w, None, y).backward()
        first = head_loss._work["cast"]
        assert first is not None and first.dtype == torch.bfloat16
        linear_cross_entropy(h, w, None, y).backward()
        assert head_loss._work["cast"] is first            # reused
        with torch.no_grad():
            w.mul_(2.0)                                     # changed in place: a new version
        h.grad = None
        loss = linear_cross_entropy(h, w, None, y)
        loss.backward()
        ref = torch.nn.functional.cross_entropy(
            torch.nn.functional.linear(h.detach(), w).float(), y)
    assert head_loss._work["cast"] is not first
    torch.testing.assert_close(loss, ref, rtol=1e-3, atol=1e-3)
    head_loss.release()
