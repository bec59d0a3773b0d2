"""The LM head and the cross-entropy over its logits, in one autograd function.

`F.cross_entropy(F.linear(h, W, b).float(), y)` on M labelled positions and a vocabulary of V
keeps the M x V logits and their log-softmax for the backward, and the backward then makes an
M x V tensor of zeros for the NLL's gradient, the log-softmax's backward (an exp and a product
over M x V) and the sum of both. On a 135M model (V = 49152) on the CPU those passes cost about
a sixth of a training step. The gradient of the mean cross-entropy with respect to the logits
is (softmax - onehot(y)) / M, so here:

- the forward turns the logits into the softmax in place (one M x V tensor, kept for the
  backward: the same memory as autograd keeps for its log-softmax);
- the backward subtracts 1 at the labels and scales, in place, then takes dh = g @ W (and
  dW = g^T h, db = sum(g) where the head is trained); a second backward through the same graph
  (`retain_graph=True`) is refused, not answered wrong;
- the logits go into a workspace kept from one step to the next (`_logits_buffer`), not a
  fresh tensor each step, and under autocast a frozen head's cast copy is kept too (`_cast`);
  `release()` drops both.

Same value and gradients as the reference up to float summation order
(tests/unit/test_head_loss.py compares them). Under autocast the head's matmuls run in the
autocast dtype, as `F.linear` does there, and the softmax in fp32, as the reference's `.float()`
does. No library fits: the fused linear cross-entropy kernels that exist (Liger, Apple's
cut-cross-entropy) are Triton/CUDA only.
"""
from __future__ import annotations

_fn = None
_work = {"buf": None, "busy": False}  # the logits workspace, reused from one step to the next


def _logits_buffer(m: int, v: int, device):
    """An m x v fp32 tensor for the logits: a slice of a workspace kept from one call to the
    next, or a fresh tensor while the workspace holds logits an unfinished backward needs.

    A fresh m x v tensor is far above the size the C allocator recycles (it maps new pages, and
    the first write to each page faults): on the benchmark CPU, writing 400 x 49152 fresh fp32
    logits took the head's matmul 3x its time into a warm buffer, and the log-softmax's
    subtraction into a fresh tensor 7x an in-place pass."""
    import torch

    buf = _work["buf"]
    if _work["busy"]:
        return torch.empty(m, v, device=device), False
    if buf is None or buf.device != torch.device(device) or buf.shape[1] != v or buf.shape[0] < m:
        _work["buf"] = buf = None  # free the old one before allocating its successor
        _work["buf"] = buf = torch.empty(max(m, int(m * 1.25)), v, device=device)
    _work["busy"] = True
    return buf[:m], True


def _cast(weight, dtype):
    """`weight` in `dtype`. A frozen weight's cast copy (bf16 under autocast: 28M elements for a
    135M model's head) is kept for the next call while the weight is unchanged (same storage,
    same version), where casting it in every forward and backward would redo the same work."""
    if weight.dtype == dtype:
        return weight
    if weight.requires_grad:
        return weight.to(dtype)
    key = (weight.data_ptr(), weight._version, tuple(weight.shape), dtype)
    if _work.get("cast_key") != key:
        _work["cast"], _work["cast_key"] = None, None
        _work["cast"], _work["cast_key"] = weight.detach().to(dtype), key
    return _work["cast"]


def release() -> None:
    """Drop the workspace and the cast head (the loop calls this when training ends)."""
    _work.update(buf=None, busy=False, cast=None, cast_key=None)


def _function():
    global _fn
    if _fn is not None:
        return _fn
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h, weight, bias, y):
            device = h.device.type
            dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
                     else h.dtype)
            m, v = h.shape[0], weight.shape[0]
            with torch.autocast(device, enabled=False):
                hd, w = h.to(dtype), _cast(weight, dtype)
                logits, shared = _logits_buffer(m, v, h.device)
                if dtype == torch.float32:
                    torch.mm(hd, w.t(), out=logits)
                    if bias is not None:
                        logits.add_(bias)
                else:  # the head in the autocast dtype, the softmax in fp32
                    logits.copy_(torch.nn.functional.linear(
                        hd, w, None if bias is None else bias.to(dtype)))
                # softmax in place: shift by the row max, exp, normalize
                logits.sub_(logits.amax(dim=1, keepdim=True))
                picked = logits.gather(1, y[:, None]).squeeze(1)
                total = logits.exp_().sum(dim=1)
                loss = (total.log() - picked).mean()
                probs = logits.div_(total[:, None])
            ctx.save_for_backward(h, weight, probs, y)
            ctx.has_bias, ctx.dtype, ctx.shared, ctx.done = bias is not None, dtype, shared, False
            return loss

        @staticmethod
        def backward(ctx, grad):
            if ctx.done:  # the softmax was turned into the gradient in place
                raise RuntimeError("linear_cross_entropy: a second backward through the same "
                                   "graph is not supported")
            ctx.done = True
            h, weight, g, y = ctx.saved_tensors
            m = g.shape[0]
            g[torch.arange(m, device=g.device), y] -= 1.0
            g.mul_(grad / m)
            gd = g.to(ctx.dtype)
            dh = dw = db = None
            if ctx.needs_input_grad[0]:
                dh = (gd @ _cast(weight, ctx.dtype)).to(h.dtype)
            if ctx.needs_input_grad[1]:
                dw = (gd.t() @ h.to(ctx.dtype)).to(weight.dtype)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                db = g.sum(0).to(weight.dtype)
            if ctx.shared:
                _work["busy"] = False
            return dh, dw, db, None

    _fn = LinearCrossEntropy
    return _fn


def linear_cross_entropy(h, weight, bias, y):
    """Mean cross-entropy of `F.linear(h, weight, bias)` (in fp32) against labels `y`.
    h: M x hidden, weight: V x hidden, bias: V or None, y: M (int64, no ignored labels)."""
    if h.shape[0] == 0:
        raise ValueError("linear_cross_entropy: no labelled positions")
    return _function().apply(h, weight, bias, y)


def applies(head) -> bool:
    """Is `head` (the model's output embeddings) a plain linear layer this can stand in for? Not
    where its weight is a quantized tensor subclass (torchao's int8) or not a float."""
    import torch

    return (type(head) is torch.nn.Linear and type(head.weight) is torch.nn.Parameter
            and head.weight.dtype in (torch.float32, torch.bfloat16, torch.float16))
