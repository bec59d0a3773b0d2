"""The converted student against an independent decode of its GGUF, tensor by tensor.

The conversion's own logits check compares the dequantized model with its own reload, so it
cannot see a wrong dequantization. Here every tensor of the packaged GGUF is decoded from its raw
bytes by code written for this test (ggml's block layouts, numpy only) and compared with the
converted safetensors (transformers' decode, through gguf-py).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("safetensors")
from gguf import GGUFReader  # noqa: E402

from adaptlab.models.registry import PACKAGED, source_files  # noqa: E402

MODEL = "smollm2-135m-instruct"

# ggml's blocks (ggml-common.h): 32 weights each.
Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", 32)])  # w = d * q
Q4_1 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])  # w = d * q + m


def ref_decode(kind: str, raw: bytes, n: int) -> np.ndarray:
    """`n` float32 weights from a GGUF tensor's raw bytes, in storage order."""
    if kind == "F32":
        w = np.frombuffer(raw, "<f4")
    elif kind == "F16":
        w = np.frombuffer(raw, "<f2").astype(np.float32)
    elif kind == "Q8_0":
        b = np.frombuffer(raw, Q8_0)
        w = b["d"].astype(np.float32)[:, None] * b["qs"].astype(np.float32)
    elif kind == "Q4_1":
        b = np.frombuffer(raw, Q4_1)
        q = np.empty((len(b), 32), np.float32)
        q[:, :16] = b["qs"] & 0x0F  # dequantize_row_q4_1: y[j] = (qs[j] & 0xF) * d + m
        q[:, 16:] = b["qs"] >> 4  # and y[j + 16] = (qs[j] >> 4) * d + m
        w = b["d"].astype(np.float32)[:, None] * q + b["m"].astype(np.float32)[:, None]
    else:
        raise AssertionError(f"the reference does not decode {kind}: extend it for this file")
    w = w.reshape(-1)
    assert w.size == n, (kind, w.size, n)
    return w


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's converter does to q_proj/k_proj rows (rotary halves interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, part, leaf = gguf_name.split(".")
    return f"model.layers.{layer}.{HF_NAMES[part]}.{leaf}"


def _field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def test_reference_decoder_layout_on_handmade_blocks():
    """d, m and the nibble order of Q4_1, and Q8_0's signed quants, on bytes built by hand."""
    qs = bytes(j | ((15 - j) << 4) for j in range(16))  # low nibble j, high nibble 15 - j
    block = np.array([0.5], "<f2").tobytes() + np.array([-1.0], "<f2").tobytes() + qs
    w = ref_decode("Q4_1", block, 32)
    assert w[:16].tolist() == [0.5 * j - 1 for j in range(16)]
    assert w[16:].tolist() == [0.5 * (15 - j) - 1 for j in range(16)]
    q8 = np.array([0.25], "<f2").tobytes() + np.arange(-16, 16, dtype=np.int8).tobytes()
    assert ref_decode("Q8_0", q8, 32).tolist() == [0.25 * q for q in range(-16, 16)]


@pytest.fixture(scope="module")
def gguf_and_converted():
    files = source_files(PACKAGED[MODEL])
    if files is None:
        pytest.skip(f"{MODEL} not installed ({PACKAGED[MODEL].install})")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from safetensors.numpy import load_file

    from adaptlab.models import resolve

    converted = load_file(f"{resolve(MODEL)}/model.safetensors")  # converts once if needed
    return GGUFReader(str(files[0])), converted


def test_every_converted_tensor_matches_an_independent_decode(gguf_and_converted):
    reader, converted = gguf_and_converted
    n_head = int(_field(reader, "llama.attention.head_count"))
    n_kv = int(_field(reader, "llama.attention.head_count_kv"))
    kinds = {t.tensor_type.name for t in reader.tensors}
    assert kinds <= {"F32", "F16", "Q8_0", "Q4_1"}, kinds
    assert "Q4_1" in kinds  # the file's bulk: the format this test exists for
    seen = set()
    for t in reader.tensors:
        name = hf_name(t.name)
        got = converted[name]
        n = int(np.prod(t.shape))
        want = ref_decode(t.tensor_type.name, np.asarray(t.data).tobytes(), n)
        want = want.reshape(tuple(int(d) for d in reversed(t.shape)))  # GGUF lists ne0 first
        if t.name.endswith("attn_q.weight"):
            got = llama_permute(got, n_head)
        elif t.name.endswith("attn_k.weight"):
            got = llama_permute(got, n_kv)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
        seen.add(name)
    # Tied embeddings: the converted file may hold no lm_head of its own.
    assert set(converted) - seen <= {"lm_head.weight"}, set(converted) - seen
    assert len(seen) == len(reader.tensors) == 272
