"""adaptlab.train.fused_lora against PEFT's own LoRA forward: same outputs and gradients (on one
layer with a known dropout mask, and on a small random Llama), the mask's drop rate, where it
falls back to PEFT, and that gradient checkpointing recomputes the same masks."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")

from adaptlab.train import fused_lora  # noqa: E402

P = 0.05


class Proj(torch.nn.Module):
    def __init__(self, d_in=48, d_out=40):
        super().__init__()
        self.proj = torch.nn.Linear(d_in, d_out, bias=True)

    def forward(self, x):
        return self.proj(x)


def _peft(module, dropout=P, r=4):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(module, LoraConfig(r=r, lora_alpha=8, lora_dropout=dropout,
                                              target_modules=["proj"]))
    for n, p in model.named_parameters():
        if "lora_B" in n:  # PEFT starts B at zero; a random B makes every gradient non-trivial
            torch.nn.init.normal_(p, std=0.1)
    return model


def _layer(model):
    return model.base_model.model.proj


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def _llama_lora(dropout):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_llama(), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=dropout, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    return model


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _count_fused(monkeypatch) -> list:
    """Count calls of the fused autograd function."""
    calls = []
    real = fused_lora._function()

    class Counting:
        @staticmethod
        def apply(*args):
            calls.append(1)
            return real.apply(*args)

    monkeypatch.setattr(fused_lora, "_FN", Counting)
    return calls


# -- the math -----------------------------------------------------------------------------------
def test_one_layer_matches_the_lora_formula_with_the_mask_it_drew(monkeypatch):
    model = _peft(Proj())
    layer = _layer(model)
    masks = []
    real = fused_lora.drop_mask
    monkeypatch.setattr(fused_lora, "drop_mask", lambda *a: masks.append(real(*a)) or masks[-1])
    assert fused_lora.fuse(model) == 1
    model.train()
    x = torch.randn(3, 5, 48, requires_grad=True)
    y = model(x)
    g = torch.randn_like(y)
    y.backward(g)
    fused = (y.detach(), x.grad.clone(), layer.lora_A["default"].weight.grad.clone(),
             layer.lora_B["default"].weight.grad.clone())

    (mask,) = masks
    assert mask.shape == (15, 48) and mask.dtype == torch.bool and 0 < int(mask.sum()) < 15 * 48
    _, keep_scale = fused_lora.dropout_threshold(P)
    x2 = x.detach().clone().requires_grad_(True)
    A, B = (layer.lora_A["default"].weight.detach().clone().requires_grad_(True),
            layer.lora_B["default"].weight.detach().clone().requires_grad_(True))
    W, b = layer.base_layer.weight.detach(), layer.base_layer.bias.detach()
    xd = x2 * (~mask).view(3, 5, 48) * keep_scale
    ref = x2 @ W.t() + b + (xd @ A.t() @ B.t()) * layer.scaling["default"]
    ref.backward(g)
    for got, want, what in zip(fused, (ref.detach(), x2.grad, A.grad, B.grad), ("y", "dx", "dA", "dB")):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=what)


def test_small_llama_loss_and_gradients_equal_pefts_without_dropout(monkeypatch):
    ref = _llama_lora(dropout=0.0)
    fused = copy.deepcopy(ref)
    assert fused_lora.fuse(fused) == 8  # 2 layers x q/k/v/o
    calls = _count_fused(monkeypatch)
    ids = torch.randint(0, 97, (2, 12))
    fused.train(), ref.train()
    l_ref, g_ref = _loss_and_grads(ref, ids)
    l_fused, g_fused = _loss_and_grads(fused, ids)
    assert len(calls) == 8
    torch.testing.assert_close(l_fused, l_ref, rtol=1e-6, atol=1e-6)
    assert g_fused.keys() == g_ref.keys() and len(g_ref) == 16
    for n in g_ref:
        torch.testing.assert_close(g_fused[n], g_ref[n], rtol=1e-4, atol=1e-6, msg=n)


def test_bf16_autocast_matches_pefts_within_bf16_rounding(monkeypatch):
    ref = _llama_lora(dropout=0.0)
    fused = copy.deepcopy(ref)
    fused_lora.fuse(fused)
    calls = _count_fused(monkeypatch)
    ids = torch.randint(0, 97, (2, 12))
    fused.train(), ref.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l_ref, g_ref = _loss_and_grads(ref, ids)
        l_fused, g_fused = _loss_and_grads(fused, ids)
    assert len(calls) == 8  # o_proj too, whose input comes out of attention in bf16
    assert all(g.dtype == torch.float32 for g in g_fused.values())
    torch.testing.assert_close(l_fused, l_ref, rtol=1e-2, atol=1e-2)
    for n in g_ref:  # bf16 keeps 8 bits of mantissa: compare each gradient as a whole
        rel = float((g_fused[n] - g_ref[n]).norm() / g_ref[n].norm())
        assert rel < 0.03, (n, rel)


def test_state_dict_and_adapter_keys_are_unchanged_and_unfuse_restores_peft():
    model = _llama_lora(dropout=P)
    keys = list(model.state_dict())
    n = fused_lora.fuse(model)
    assert n == 8 and list(model.state_dict()) == keys
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, peft.tuners.lora.layer.Linear) and type(layer).__name__ == "FusedLoraLinear"
    assert fused_lora.unfuse(model) == 8
    assert type(layer) is peft.tuners.lora.layer.Linear


# -- the mask -----------------------------------------------------------------------------------
def test_drop_mask_rate_and_independence():
    th, scale = fused_lora.dropout_threshold(P)
    k = round(P * 65536)
    assert th == -32768 + k and scale == pytest.approx(1 / (1 - k / 65536))
    assert fused_lora.dropout_threshold(0.0) == (None, 1.0)
    torch.manual_seed(1)
    a = fused_lora.drop_mask((1000, 1001), th, "cpu")  # odd size: not a multiple of 4
    b = fused_lora.drop_mask((1000, 1001), th, "cpu")
    n, p = a.numel(), k / 65536
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(float(a.float().mean()) - p) < 5 * sd
    both = float((a & b).float().mean())  # independent draws: P(both) = p^2
    assert abs(both - p * p) < 5 * (p * p / n) ** 0.5
    torch.manual_seed(1)
    assert torch.equal(fused_lora.drop_mask((1000, 1001), th, "cpu"), a)  # the global generator


def test_gradient_checkpointing_recomputes_the_same_masks():
    plain = _llama_lora(dropout=0.3)
    fused_lora.fuse(plain)
    ckpt = copy.deepcopy(plain)
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, 97, (2, 12))
    plain.train(), ckpt.train()
    torch.manual_seed(5)
    l1, g1 = _loss_and_grads(plain, ids)
    torch.manual_seed(5)
    l2, g2 = _loss_and_grads(ckpt, ids)
    torch.testing.assert_close(l1, l2, rtol=0, atol=0)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-5, atol=1e-7, msg=n)


# -- where PEFT's forward runs instead ----------------------------------------------------------
@pytest.mark.parametrize("case", ["no_grad", "eval_no_grad", "merged", "disabled", "kwargs"])
def test_falls_back_to_pefts_forward(case, monkeypatch):
    ref = _peft(Proj(), dropout=0.0)
    fused = copy.deepcopy(ref)
    fused_lora.fuse(fused)
    calls = _count_fused(monkeypatch)
    x = torch.randn(2, 3, 48)
    kwargs = {}
    ctx = torch.no_grad() if case in ("no_grad", "eval_no_grad") else torch.enable_grad()
    if case == "eval_no_grad":
        ref.eval(), fused.eval()
    if case == "merged":
        ref.merge_adapter(), fused.merge_adapter()
    if case == "disabled":
        with ref.disable_adapter(), fused.disable_adapter(), ctx:
            want, got = ref(x), fused(x)
    else:
        if case == "kwargs":  # PEFT's per-row adapter selection: its own path
            x, kwargs = torch.randn(2, 48), {"adapter_names": ["default", "default"]}
        with ctx:
            want = _layer(ref)(x, **kwargs)
            got = _layer(fused)(x, **kwargs)
    assert calls == []
    assert torch.equal(got, want)


def test_fp32_training_forward_takes_the_fused_path(monkeypatch):
    fused = _peft(Proj(), dropout=P)
    fused_lora.fuse(fused)
    calls = _count_fused(monkeypatch)
    fused.train()
    fused(torch.randn(2, 3, 48))
    assert calls == [1]


def test_tune_config_switch():
    from adaptlab.train import TuneConfig
    from adaptlab.train.methods.lora import attach

    types = {}
    for on in (True, False):
        model, _ = attach(TuneConfig(fused_lora=on), _tiny_llama(), None)
        types[on] = {type(m).__name__ for m in model.modules()} & {"FusedLoraLinear", "Linear"}
    assert "FusedLoraLinear" in types[True]
    assert "FusedLoraLinear" not in types[False]
