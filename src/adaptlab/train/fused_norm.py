"""Fused RMSNorm for training a frozen base: the norm's forward and backward in one autograd
function, instead of the element-wise ops of transformers' `LlamaRMSNorm`.

transformers computes `weight * (x * rsqrt(mean(x^2) + eps))`: a power, a mean, an add, an
rsqrt and two products forward, each a pass over the hidden states and a tensor autograd keeps,
and the backward of each. With the weight frozen (LoRA, soft prompts), the gradient with respect
to x is r * (gw - xh * mean(gw * xh)), with r = rsqrt(mean(x^2) + eps), xh = x * r, gw = g * w,
which takes five passes, and the forward three (a dot product per row for the mean of squares).
On the 2-core benchmark CPU a 451 x 576 norm took 2.5 ms forward and backward in transformers'
ops, 2.0 ms in `F.rms_norm`; the whole step runs 61 of them.

Applies to fp32 hidden states in `LlamaRMSNorm` and the norms of the same formula (Qwen2, Qwen3,
Mistral: `_CLASSES`), with a frozen fp32 weight, gradients on; anything else (a trained weight,
bf16 hidden states, inference) runs the module's own forward. The same value and gradients up to
float summation order (tests/unit/test_fused_norm.py). `TuneConfig.fused_lora=false` switches it
off with the fused LoRA layers.
"""
from __future__ import annotations

_CLASSES = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm")
_fn = None
_swapped: dict = {}


def _function():
    global _fn
    if _fn is not None:
        return _fn
    import torch

    class FusedRMSNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, eps: float):
            d = x.shape[-1]
            r = torch.linalg.vecdot(x, x).div_(d).add_(eps).rsqrt_().unsqueeze(-1)
            ctx.save_for_backward(x, weight, r)
            return (x * r).mul_(weight)

        @staticmethod
        def backward(ctx, g):
            x, weight, r = ctx.saved_tensors
            gw = g * weight
            xh = x * r
            s = torch.linalg.vecdot(gw, xh).div_(x.shape[-1]).unsqueeze(-1)
            return torch.addcmul(gw, xh, s, value=-1).mul_(r), None, None

    _fn = FusedRMSNorm
    return _fn


def rms_norm(x, weight, eps: float):
    """weight * x / sqrt(mean(x^2) + eps) over the last dimension; gradient for x only."""
    return _function().apply(x, weight, eps)


def _eps(module):
    return getattr(module, "variance_epsilon", getattr(module, "eps", None))


def _fused_class(base):
    if base not in _swapped:
        def forward(self, hidden_states):
            import torch

            w = self.weight
            if (torch.is_grad_enabled() and hidden_states.dtype == torch.float32
                    and w.dtype == torch.float32 and not w.requires_grad
                    and hidden_states.requires_grad and w.shape == hidden_states.shape[-1:]):
                return rms_norm(hidden_states, w, _eps(self))
            return base.forward(self, hidden_states)

        _swapped[base] = type(base.__name__, (base,), {
            "forward": forward, "__module__": __name__, "_adaptlab_fused": True,
            "__doc__": f"{base.__name__} whose training forward with a frozen weight is fused "
                       "(adaptlab.train.fused_norm); its own forward otherwise."})
    return _swapped[base]


def fuse(model) -> int:
    """Switch every RMSNorm of a known formula in `model` to the fused training forward (in
    place); returns how many. Parameters and state dict are unchanged."""
    n = 0
    for module in model.modules():
        cls = type(module)
        if (cls.__name__ in _CLASSES and not getattr(cls, "_adaptlab_fused", False)
                and isinstance(_eps(module), float) and hasattr(module, "weight")):
            module.__class__ = _fused_class(cls)
            n += 1
    return n


def unfuse(model) -> int:
    """Undo `fuse`; returns how many modules."""
    n = 0
    for module in model.modules():
        cls = type(module)
        if getattr(cls, "_adaptlab_fused", False):
            module.__class__ = cls.__mro__[1]
            n += 1
    return n
