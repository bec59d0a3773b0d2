"""train/fused_norm.py: the frozen RMSNorm's forward and backward in one autograd function. Same
value and input gradient as transformers' LlamaRMSNorm; used only where it applies; the swap
leaves parameters and state dict alone and can be undone."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers.models.llama.modeling_llama import LlamaRMSNorm  # noqa: E402

from adaptlab.train import fused_norm  # noqa: E402


def _norm(d=48, eps=1e-5):
    n = LlamaRMSNorm(d, eps=eps)
    with torch.no_grad():
        n.weight.uniform_(0.5, 1.5)
    n.weight.requires_grad_(False)
    return n


def test_value_and_input_gradient_equal_transformers():
    n = _norm()
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 7, 48, generator=g) * 3).requires_grad_(True)
    up = torch.randn(2, 7, 48, generator=g)
    ref = n(x)
    (ref_g,) = torch.autograd.grad(ref, x, up)
    got = fused_norm.rms_norm(x, n.weight, n.variance_epsilon)
    (got_g,) = torch.autograd.grad(got, x, up)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_g, ref_g, rtol=1e-5, atol=1e-6)
    # and not a mere pass-through of the upstream gradient times the weight
    assert (got_g - up * n.weight).abs().max() > 1e-2


def test_swap_runs_fused_in_training_only_and_unfuse_restores():
    model = torch.nn.Sequential(_norm(), torch.nn.Linear(48, 3), _norm(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fused_norm.fuse(model) == 2 and fused_norm.fuse(model) == 0  # once
    assert isinstance(model[0], LlamaRMSNorm)
    calls = []
    real = fused_norm.rms_norm
    fused_norm.rms_norm = lambda *a: calls.append(1) or real(*a)
    try:
        x = torch.randn(4, 48, requires_grad=True)
        model[0](x)
        assert calls == [1]
        with torch.no_grad():
            model[0](x)                         # inference: the module's own forward
        model[0].weight.requires_grad_(True)    # a trained weight: its own forward
        model[0](x)
        model[0].weight.requires_grad_(False)
        model[0](x.detach().double())           # not fp32: its own forward
        assert calls == [1]
    finally:
        fused_norm.rms_norm = real
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert fused_norm.unfuse(model) == 2 and type(model[0]) is LlamaRMSNorm


def test_lora_factory_fuses_the_norms_unless_fused_lora_is_off():
    from transformers import LlamaConfig, LlamaForCausalLM

    from adaptlab.train.config import TuneConfig
    from adaptlab.train.methods import lora

    def tiny():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))

    for on, expect in ((True, 5), (False, 0)):
        cfg = TuneConfig(model="smollm2-135m-instruct", fused_lora=on)
        model, _ = lora.attach(cfg, tiny(), None)
        assert sum(getattr(type(m), "_adaptlab_fused", False) for m in model.modules()) == expect


@pytest.mark.parametrize("checkpointing", [False, True])
def test_small_llama_lora_loss_and_gradients_equal_the_unfused_model(checkpointing):
    """A 2-layer Llama under LoRA: with its norms fused, the same loss and adapter gradients
    (also under gradient checkpointing, which recomputes the fused forward)."""
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    ref = get_peft_model(LlamaForCausalLM(LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                   task_type="CAUSAL_LM"))
    for n, p in ref.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
        if "norm" in n:  # not all ones, so a dropped weight would show
            with torch.no_grad():
                p.uniform_(0.5, 1.5)
    fused = copy.deepcopy(ref)
    assert fused_norm.fuse(fused) == 5  # 2 layers x 2 + the final norm
    ids = torch.randint(0, 97, (2, 12))
    out = {}
    for name, m in (("ref", ref), ("fused", fused)):
        if checkpointing:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.train()
        loss = m(input_ids=ids, labels=ids).loss
        params = [p for p in m.parameters() if p.requires_grad]
        out[name] = (loss, torch.autograd.grad(loss, params))
    torch.testing.assert_close(out["fused"][0], out["ref"][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(out["fused"][1], out["ref"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
