"""The GGUF side of the model cache, on small files made here: the conversion's independent
decode (models.gguf_check) and the reuse of an assembled split GGUF (models.convert.assemble)."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from adaptlab.errors import AdaptlabError
from adaptlab.models import convert
from adaptlab.models.gguf_check import cross_check, dequantize
from adaptlab.models.packaged import PackagedModel


def _f16(x: float) -> bytes:
    return np.array([x], "<f2").tobytes()


# -- the independent decode ----------------------------------------------------------------------
def test_q4_1_block_layout_scale_min_and_nibble_order():
    qs = bytes(j | ((15 - j) << 4) for j in range(16))  # low nibble j, high nibble 15 - j
    raw = np.frombuffer(_f16(0.5) + _f16(-1.0) + qs, np.uint8)
    w = dequantize(raw, "Q4_1", (32, 1))
    assert w.shape == (1, 32)
    assert w[0].tolist() == [0.5 * j - 1 for j in range(16)] + [0.5 * (15 - j) - 1 for j in range(16)]


def test_q4_0_q8_0_f16_bf16_layouts():
    qs = bytes(j | ((15 - j) << 4) for j in range(16))
    w = dequantize(np.frombuffer(_f16(2.0) + qs, np.uint8), "Q4_0", (32,))
    assert w.tolist() == [2.0 * (j - 8) for j in range(16)] + [2.0 * (7 - j) for j in range(16)]
    q8 = np.frombuffer(_f16(0.25) + np.arange(-16, 16, dtype=np.int8).tobytes(), np.uint8)
    assert dequantize(q8, "Q8_0", (32,)).tolist() == [0.25 * q for q in range(-16, 16)]
    vals = np.array([1.5, -2.25, 3.0], np.float32)
    assert dequantize(vals.astype("<f2").view(np.uint8), "F16", (3,)).tolist() == vals.tolist()
    bf16 = (vals.view(np.uint32) >> 16).astype("<u2")
    assert dequantize(bf16.view(np.uint8), "BF16", (3,)).tolist() == vals.tolist()
    with pytest.raises(KeyError):
        dequantize(np.zeros(210, np.uint8), "Q6_K", (256,))


def _tiny_gguf(path, quant="Q4_1", rows=4, cols=64, seed=0):
    """A GGUF holding blk.0.ffn_down.weight as random `quant` blocks; returns gguf-py's decode."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows, cols // block * nbytes), dtype=np.uint8)
    for off in range(0, raw.shape[1], nbytes):  # finite fp16 scales (random bytes may be NaN)
        raw[:, off:off + 2] = np.frombuffer(_f16(0.01), np.uint8)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.ffn_down.weight", raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return gguf.quants.dequantize(raw, qtype)


def test_cross_check_passes_a_right_decode_and_refuses_a_wrong_one(tmp_path):
    path = tmp_path / "tiny.gguf"
    decoded = _tiny_gguf(path)
    assert decoded.shape == (4, 64)
    assert cross_check({"model.layers.0.mlp.down_proj.weight": decoded}, path) == [
        "blk.0.ffn_down.weight"]
    halves = decoded.reshape(-1, 2, 16)[:, ::-1].reshape(4, 64)  # nibble order swapped
    with pytest.raises(AdaptlabError, match="independent Q4_1 decode"):
        cross_check({"model.layers.0.mlp.down_proj.weight": halves}, path)
    one_off = decoded.copy()
    one_off[3, 63] += 0.01  # a single weight off by one quantization step
    with pytest.raises(AdaptlabError, match="max error"):
        cross_check({"model.layers.0.mlp.down_proj.weight": one_off}, path)
    with pytest.raises(AdaptlabError, match="shape"):
        cross_check({"model.layers.0.mlp.down_proj.weight": decoded.T}, path)


def test_cross_check_reports_what_it_cannot_decode(tmp_path):
    path = tmp_path / "k.gguf"
    decoded = _tiny_gguf(path, quant="Q6_K", rows=2, cols=256)
    assert cross_check({"model.layers.0.mlp.down_proj.weight": decoded}, path) == []


# -- reuse of an assembled split GGUF ------------------------------------------------------------
@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A fake packaged model of three small part files; the cache in tmp_path."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    data = os.urandom(10_000)
    parts = []
    for i, chunk in enumerate((data[:3000], data[3000:7000], data[7000:])):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(chunk)
        parts.append(p)
    m = PackagedModel("fake-split", "test", "none", ("a", "b", "c"), ("p0", "p1", "p2"),
                      len(data), hashlib.sha256(data).hexdigest())
    return m, parts, data


def _hashes(monkeypatch) -> list:
    """Count the times a whole cached file is hashed."""
    calls = []
    real = convert.sha256_file
    monkeypatch.setattr(convert, "sha256_file", lambda p: calls.append(p) or real(p))
    return calls


def test_assemble_writes_the_file_and_a_verified_sidecar(split_model, monkeypatch):
    m, parts, data = split_model
    out = convert.assemble(m, parts)
    assert out.read_bytes() == data
    side = convert.read_json(out.with_name(out.name + ".verified.json"))
    assert side["sha256"] == m.sha256 and side["size"] == len(data)
    calls = _hashes(monkeypatch)
    for p in parts:
        p.unlink()  # a verified cached file needs no parts
    assert convert.assemble(m, parts) == out and calls == []  # reused without hashing again


def test_a_corrupt_cached_file_of_the_right_size_is_rebuilt(split_model, monkeypatch):
    m, parts, data = split_model
    out = convert.assemble(m, parts)
    with open(out, "r+b") as f:  # flip one byte in place: same size
        f.seek(5000)
        b = f.read(1)
        f.seek(5000)
        f.write(bytes([b[0] ^ 0xFF]))
    st = out.stat()
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a coarse clock may not tick
    assert out.stat().st_size == len(data) and out.read_bytes() != data
    calls = _hashes(monkeypatch)
    assert convert.assemble(m, parts) == out
    assert out.read_bytes() == data and len(calls) == 1


def test_a_cached_file_without_sidecar_is_hashed_once_then_trusted(split_model, monkeypatch):
    m, parts, data = split_model
    out = convert.assemble(m, parts)
    out.with_name(out.name + ".verified.json").unlink()  # e.g. left by an older adaptlab
    mtime = out.stat().st_mtime_ns
    calls = _hashes(monkeypatch)
    assert convert.assemble(m, parts) == out and len(calls) == 1
    assert out.stat().st_mtime_ns == mtime  # verified, not rebuilt
    assert convert.assemble(m, parts) == out and len(calls) == 1  # and not hashed again


def test_corrupt_parts_are_refused_and_nothing_is_cached(split_model):
    m, parts, data = split_model
    parts[1].write_bytes(b"\0" * 4000)
    with pytest.raises(AdaptlabError, match="sha256 mismatch"):
        convert.assemble(m, parts)
    out = convert.cache_dir() / "gguf" / "fake-split.gguf"
    assert not out.exists() and not out.with_name(out.name + ".verified.json").exists()


def test_a_corrupt_cached_file_is_rebuilt_from_corrupt_parts_never(split_model):
    """A bad cached file and bad parts: refused, not passed off as the model."""
    m, parts, data = split_model
    out = convert.assemble(m, parts)
    out.write_bytes(b"\1" * len(data))
    parts[0].write_bytes(b"\0" * 3000)
    with pytest.raises(AdaptlabError, match="sha256 mismatch"):
        convert.assemble(m, parts)
    assert not out.exists()
