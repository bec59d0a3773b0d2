"""An independent check of GGUF dequantization: a few tensors decoded here, in plain numpy.

transformers dequantizes GGUF through gguf-py; comparing its output with its own reload cannot
catch a wrong decode. Here the simple ggml block layouts are decoded from the raw bytes (ggml's
`dequantize_row_*` in ggml-quants.c) and compared with what transformers produced. K-quants are
not decoded: a model made only of them is reported as unchecked, not passed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import AdaptlabError

# GGUF tensor name -> transformers parameter name, for tensors that transformers does not permute
# or offset (llama q/k rows are permuted; gemma norms are stored minus one).
PROBES = (
    ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
    ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight"),
    ("token_embd.weight", "model.embed_tokens.weight"),
)


def _f16(b):
    return b.view("<f2").astype("float32")


def _q8_0(raw):  # per block of 32: fp16 d, 32 int8 q; w = d * q
    blocks = raw.reshape(-1, 34)
    return (_f16(blocks[:, :2]) * blocks[:, 2:].view("int8").astype("float32")).reshape(-1)


def _nibbles(qs):
    """Weight j of a block sits in the low nibble of byte j, weight j + 16 in its high nibble."""
    import numpy as np

    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype("float32")


def _q4_0(raw):  # per block of 32: fp16 d, 16 bytes of 4-bit q; w = d * (q - 8)
    blocks = raw.reshape(-1, 18)
    return (_f16(blocks[:, :2]) * (_nibbles(blocks[:, 2:]) - 8)).reshape(-1)


def _q4_1(raw):  # per block of 32: fp16 d, fp16 m, 16 bytes of 4-bit q; w = d * q + m
    blocks = raw.reshape(-1, 20)
    return (_f16(blocks[:, :2]) * _nibbles(blocks[:, 4:]) + _f16(blocks[:, 2:4])).reshape(-1)


def _bf16(raw):
    import numpy as np

    return (raw.view("<u2").astype(np.uint32) << 16).view("<f4")


DECODERS = {"F32": lambda raw: raw.view("<f4"), "F16": lambda raw: _f16(raw), "BF16": _bf16,
            "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1}


def dequantize(raw, type_name: str, shape: tuple[int, ...]):
    """Raw tensor bytes (uint8) of a GGUF tensor -> float32 array in PyTorch's (row-major) shape.

    `shape` is the GGUF shape (innermost dimension first), as GGUFReader reports it.
    """
    import numpy as np

    if type_name not in DECODERS:
        raise KeyError(type_name)
    flat = DECODERS[type_name](np.ascontiguousarray(raw).view(np.uint8).reshape(-1))
    return flat.reshape(tuple(int(n) for n in reversed(shape)))


def _numpy(x):
    import numpy as np

    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def cross_check(state: Mapping, gguf: Path, rtol: float = 1e-6) -> list[str]:
    """Compare the PROBES tensors of a dequantized state dict with an independent decode.

    Returns the GGUF names checked (empty where none has a decodable type); raises AdaptlabError
    on a mismatch.
    """
    import numpy as np
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(str(gguf)).tensors}
    checked = []
    for gname, hname in PROBES:
        t = tensors.get(gname)
        if t is None or hname not in state or t.tensor_type.name not in DECODERS:
            continue
        want = dequantize(t.data, t.tensor_type.name, tuple(t.shape))
        got = _numpy(state[hname])
        if got.shape != want.shape:
            raise AdaptlabError(f"{gguf.name}: {hname} has shape {got.shape}, the GGUF's "
                                f"{gname} decodes to {want.shape}")
        err = float(np.abs(got - want).max())
        if err > rtol * max(1.0, float(np.abs(want).max())):
            raise AdaptlabError(f"{gguf.name}: {hname} differs from an independent "
                                f"{t.tensor_type.name} decode of {gname} (max error {err:.3g})")
        checked.append(gname)
    return checked
