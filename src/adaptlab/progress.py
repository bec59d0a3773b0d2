"""Progress bars on long work; quiet when stderr is not a terminal."""
from __future__ import annotations

import os
import sys


def enabled() -> bool:
    forced = os.environ.get("ADAPTLAB_PROGRESS")
    if forced is not None:
        return forced not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def bar(iterable=None, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar (disabled off-terminal); works as an iterator wrapper or a manual counter."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled(), leave=False)


def log(msg: str) -> None:
    """One status line on stderr (always shown: it is the run's log)."""
    print(f"[adaptlab] {msg}", file=sys.stderr, flush=True)
