"""Refuse a training example that cannot be trained on with the tokenizer alone, before any
weights load: too long, no explanation under target=explained, an empty reply."""
from __future__ import annotations

from ..errors import AdaptlabError, one_line


def check_lengths(cfg, examples: list[dict], source: str) -> None:
    """Every example of `source`, as `cfg.target` formats it, fits `cfg.max_length` (or
    `cfg.truncate` is set) and has a reply to learn."""
    from ..models.load import load_tokenizer
    from .batches import tokenize
    from .formatters import formatter_for

    try:
        tok = load_tokenizer(cfg.model)
    except (OSError, ValueError) as e:
        raise AdaptlabError(f"cannot load the tokenizer of '{cfg.model}': {one_line(e)}") from None
    tokenize(tok, examples, cfg.max_length, cfg.truncate, source, formatter_for(cfg))
