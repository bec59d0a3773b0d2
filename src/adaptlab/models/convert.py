"""GGUF -> safetensors, once per packaged model, with a logits check."""
from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from .. import progress
from ..errors import AdaptlabError
from ..io import atomic_dir, atomic_path, write_json
from .registry import PackagedModel, cache_dir, converted_dir


def assemble(m: PackagedModel, parts: list[Path]) -> Path:
    """Concatenate the parts into one GGUF in the cache, checking size and sha256."""
    if len(parts) == 1:
        return parts[0]
    out = cache_dir() / "gguf" / f"{m.name}.gguf"
    if out.exists() and out.stat().st_size == m.size:
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
    return out


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
    """Assemble, dequantize and save `m` as safetensors; verify logits are identical."""
    import torch
    from transformers import AutoModelForCausalLM

    out = converted_dir(m)
    progress.log(f"converting {m.name} to safetensors in {out} (once)")
    t0 = time.time()
    gguf = assemble(m, parts)
    model, tok = _load_gguf(gguf)
    ref = _probe_logits(model, tok)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        again = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32, use_safetensors=True,
                                                     trust_remote_code=False).eval()
        if not torch.equal(ref, _probe_logits(again, tok)):
            raise AdaptlabError(f"{m.name}: logits changed in conversion; refusing to cache")
        write_json(tmp / "adaptlab.json", {
            "name": m.name, "gguf_sha256": m.sha256, "licence": m.licence,
            "convert_seconds": round(time.time() - t0, 1),
        })
    if gguf.parent == cache_dir() / "gguf":
        gguf.unlink(missing_ok=True)  # the safetensors copy is what we load from now on
    progress.log(f"converted {m.name} in {time.time() - t0:.0f}s")
    return out


def clear(name: str) -> None:
    shutil.rmtree(cache_dir() / "models" / name, ignore_errors=True)
