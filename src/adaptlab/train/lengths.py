"""Refuse an over-long training example with the tokenizer alone, before any weights load."""
from __future__ import annotations

from ..errors import AdaptlabError, one_line


def check_lengths(cfg, examples: list[dict], source: str) -> None:
    """Every example of `source` fits `cfg.max_length` (or `cfg.truncate` is set)."""
    from ..models.load import load_tokenizer
    from .batches import tokenize

    try:
        tok = load_tokenizer(cfg.model)
    except (OSError, ValueError) as e:
        raise AdaptlabError(f"cannot load the tokenizer of '{cfg.model}': {one_line(e)}") from None
    tokenize(tok, examples, cfg.max_length, cfg.truncate, source)
