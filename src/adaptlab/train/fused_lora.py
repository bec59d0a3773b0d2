"""Fused LoRA linear layers for training: the base matmul, the adapter and its dropout in one
autograd function, instead of PEFT's module-by-module forward.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: for every adapted layer that is
a dropout mask drawn with `bernoulli_` on a float tensor the size of x, the dropped copy of x,
the product by the mask, two more full-size tensors for `* scaling` and `+`, and the backward of
each. On a 135M model on the CPU those element-wise passes cost as much as the LoRA matmuls
themselves (a 576-wide `bernoulli_` costs about a 576 x 576 matmul). Here, with the same math:

- the mask is a boolean tensor drawn from 16-bit random integers (`random_` on int64 over its
  full range, viewed as int16): a quarter of the generator calls of `bernoulli_`. Dropout's p
  is rounded to a multiple of 1/65536 (0.05 -> 3277/65536 = 0.050003); the kept inputs are
  scaled by the exact 1/(1 - p) of that rounded p;
- the dropout scale and LoRA's `scaling` are folded into the rank-r activations (N x r, not
  N x width), and the adapter's output is added into the base output in place (`addmm_`);
- the backward recomputes the dropped input from x and the mask (one `torch.where`) rather than
  keeping a second copy of x per layer.

Same value as PEFT's forward up to float summation order (tests/unit/test_fused_lora.py
compares outputs and gradients). It draws from the same global generator as `bernoulli_`, so
checkpoints (which save the RNG state) resume bit-identically and gradient checkpointing
recomputes the same masks. No library fits: PEFT has no fused path, and the fused LoRA kernels
that exist are Triton/CUDA only.

Used where the base weight and the adapters are fp32 (the input fp32 too, or in autocast's
dtype), in fp32 or under bf16/fp16 autocast (`precision=bf16`: every operand is cast to the
autocast dtype, as autocast would, and the adapters' gradients come back in fp32), for plain
`nn.Linear` base layers with one active, unmerged, vanilla adapter (no DoRA or other variant), a
frozen base weight, no extra forward arguments and gradients on. Anything else (an int8 base,
several adapters, merged weights, inference under `no_grad`) runs PEFT's own forward, unchanged.
`TuneConfig.fused_lora=false` switches it off.
"""
from __future__ import annotations

LEVELS = 65536  # dropout masks compare 16-bit random integers with a threshold


def dropout_threshold(p: float) -> tuple[int | None, float]:
    """(int16 threshold below which an input is dropped, or None for no dropout; the kept inputs'
    scale 1 / (1 - p') for p' = p rounded to a multiple of 1/65536)."""
    k = round(p * LEVELS)
    if k <= 0:
        return None, 1.0
    return -LEVELS // 2 + k, LEVELS / (LEVELS - k)


def drop_mask(shape, threshold: int, device):
    """True where an input is dropped: each entry independently with probability
    (threshold + 32768) / 65536, from the global generator of `device`."""
    import math

    import torch

    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None)
    return bits.view(torch.int16)[:n].view(shape) < threshold


def _function():
    import torch
    import torch.nn.functional as F

    class FusedLoraLinear(torch.autograd.Function):
        """y = x W^T + b + ((x * keep) A^T * scale) B^T with a frozen W, b; gradients for x, A, B.
        `scale` holds LoRA's scaling times the dropout's 1/(1 - p)."""

        @staticmethod
        def forward(ctx, x, weight, bias, lora_a, lora_b, scale: float, threshold, dtype):
            x2 = x.reshape(-1, x.shape[-1])
            if dtype is not None:  # autocast: every operand in its dtype, the adapters' too
                x2, weight, lora_a, lora_b = (t.to(dtype) for t in (x2, weight, lora_a, lora_b))
                bias = None if bias is None else bias.to(dtype)
            with torch.autocast(x.device.type, enabled=False):
                out = F.linear(x2, weight, bias)
                mask = drop_mask(x2.shape, threshold, x.device) if threshold is not None else None
                xd = x2 if mask is None else torch.where(mask, 0.0, x2)  # one pass, not clone + fill
                h = (xd @ lora_a.t()).mul_(scale)
                out.addmm_(h, lora_b.t())
            ctx.save_for_backward(x2, weight, lora_a, lora_b, mask, h)
            ctx.scale, ctx.x_dtype = scale, x.dtype
            return out.view(*x.shape[:-1], weight.shape[0])

        @staticmethod
        def backward(ctx, grad):
            x2, weight, lora_a, lora_b, mask, h = ctx.saved_tensors
            with torch.autocast(grad.device.type, enabled=False):
                g = grad.reshape(-1, grad.shape[-1]).to(weight.dtype)
                grad_b = g.t() @ h
                gh = (g @ lora_b).mul_(ctx.scale)
                xd = x2 if mask is None else torch.where(mask, 0.0, x2)
                grad_a = gh.t() @ xd
                gx = g @ weight
                if mask is None:
                    gx.addmm_(gh, lora_a)
                else:
                    gx.add_((gh @ lora_a).masked_fill_(mask, 0))
            return (gx.view(*grad.shape[:-1], weight.shape[1]).to(ctx.x_dtype), None, None,
                    grad_a.to(torch.float32), grad_b.to(torch.float32), None, None, None)

    return FusedLoraLinear


_FN = None


def _fused_call(layer, x):
    """The fused forward of PEFT LoRA `layer` on x, or None where it does not apply."""
    import torch

    active = layer.active_adapters
    if (layer.disable_adapters or layer.merged or len(active) != 1
            or active[0] in layer.lora_variant or active[0] not in layer.lora_A
            or type(layer.base_layer) is not torch.nn.Linear
            or not torch.is_grad_enabled()):
        return None
    dtype = None
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        if dtype not in (torch.bfloat16, torch.float16):
            return None
    name = active[0]
    lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
    weight, bias = layer.base_layer.weight, layer.base_layer.bias
    if (type(lora_a) is not torch.nn.Linear or type(lora_b) is not torch.nn.Linear
            or lora_a.bias is not None or lora_b.bias is not None
            or type(weight) is not torch.nn.Parameter  # a quantized tensor subclass: PEFT's path
            or weight.requires_grad or (bias is not None and bias.requires_grad)
            or getattr(layer, "fan_in_fan_out", False)
            or any(t.dtype != torch.float32 for t in (weight, lora_a.weight, lora_b.weight))
            or x.dtype not in (torch.float32, dtype)):
        return None
    drop = layer.lora_dropout[name]
    if isinstance(drop, torch.nn.Dropout):
        threshold, keep_scale = dropout_threshold(drop.p if drop.training else 0.0)
    elif isinstance(drop, torch.nn.Identity):
        threshold, keep_scale = None, 1.0
    else:
        return None
    global _FN
    if _FN is None:
        _FN = _function()
    return _FN.apply(x, weight, bias, lora_a.weight, lora_b.weight,
                     layer.scaling[name] * keep_scale, threshold, dtype)


def fuse(model) -> int:
    """Switch every PEFT LoRA `Linear` in `model` to the fused forward (in place); returns how
    many. The layers stay PEFT layers (saving, merging, adapters work as before)."""
    from peft.tuners.lora.layer import Linear

    cls = _fused_class(Linear)
    n = 0
    for module in model.modules():
        if type(module) is Linear:
            module.__class__ = cls
            n += 1
    return n


def unfuse(model) -> int:
    """Undo `fuse`: PEFT's own forward again; returns how many layers."""
    from peft.tuners.lora.layer import Linear

    n = 0
    for module in model.modules():
        if type(module) is _fused_class(Linear):
            module.__class__ = Linear
            n += 1
    return n


_CLASSES: dict = {}


def _fused_class(base):
    if base not in _CLASSES:
        def forward(self, x, *args, **kwargs):
            if not args and not kwargs:
                y = _fused_call(self, x)
                if y is not None:
                    return y
            return base.forward(self, x, *args, **kwargs)

        _CLASSES[base] = type("FusedLoraLinear", (base,), {
            "forward": forward, "__module__": __name__,
            "__doc__": "A PEFT LoRA Linear whose training forward is fused (adaptlab.train."
                       "fused_lora); PEFT's forward wherever the fused one does not apply."})
    return _CLASSES[base]
