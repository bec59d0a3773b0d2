"""Sentence embeddings (MiniLM by default) and cosine similarity."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=2)
def _model(ref: str):
    from sentence_transformers import SentenceTransformer

    from ..models import resolve

    return SentenceTransformer(resolve(ref), device="cpu", trust_remote_code=False,
                               model_kwargs={"use_safetensors": True})


def embed(texts: list[str], ref: str = "minilm-l6") -> np.ndarray:
    """Unit-normalized embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return _model(ref).encode(list(texts), batch_size=64, normalize_embeddings=True,
                              show_progress_bar=False, convert_to_numpy=True)


def pairwise_cosine(a: list[str], b: list[str], ref: str = "minilm-l6") -> list[float]:
    """cos(a[i], b[i]) for each i."""
    ea, eb = embed(a, ref), embed(b, ref)
    return [float(x) for x in (ea * eb).sum(axis=1)]
