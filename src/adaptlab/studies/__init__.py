"""Studies: a recipe plus, where needed, a small module. The registry is a plain dict."""
from __future__ import annotations

import importlib


def _lazy(name: str):
    return lambda: importlib.import_module(f"adaptlab.studies.{name}")


STUDIES = {"tune": _lazy("quickstart"), "tone": _lazy("tone"), "explain": _lazy("explain"),
           "knowledge": _lazy("knowledge"), "bettertogether": _lazy("bettertogether"),
           "softsrv": _lazy("softsrv")}
