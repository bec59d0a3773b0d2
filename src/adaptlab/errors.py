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
