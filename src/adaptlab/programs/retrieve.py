"""BM25 retrieval over a small set of pages ({"title", "text"}), for the DSPy programs: built
once with `bm25s`, queried many times, ties broken by page order so a run is repeatable.

Tokens are lower-cased words (`\\w+`) less bm25s's English stopwords; no stemming (the
multi-hop world's names are invented words, and stemming would only merge them by accident).
"""
from __future__ import annotations

import re
from typing import Sequence

from ..errors import require

_TOKEN = re.compile(r"\w+")


def passage(page: dict) -> str:
    """A page as the programs see it: "Title | text"."""
    return f"{page['title']} | {page['text']}"


class BM25Retriever:
    """`retriever(query, k) -> list of "Title | text"`, best first; k defaults to `k`."""

    def __init__(self, pages: Sequence[dict], k: int = 3, k1: float = 1.5, b: float = 0.75):
        bm25s = require("bm25s", "programs")
        from bm25s.stopwords import STOPWORDS_EN

        pages = list(pages)
        if not pages:
            raise ValueError("BM25Retriever needs at least one page")
        for i, p in enumerate(pages):
            if not isinstance(p, dict) or not isinstance(p.get("title"), str) \
                    or not isinstance(p.get("text"), str):
                raise ValueError(f"page {i} must be a dict with str 'title' and 'text', got {p!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k, self.pages = k, pages
        self.passages = [passage(p) for p in pages]
        self._stop = frozenset(STOPWORDS_EN)
        self._index = bm25s.BM25(k1=k1, b=b)
        # a page with no words after stopwords gets the empty token, which bm25s indexes
        docs = [self._tokens(f"{p['title']} {p['text']}") or [""] for p in pages]
        self._index.index(docs, show_progress=False)

    def _tokens(self, text: str) -> list[str]:
        return [t for t in _TOKEN.findall(text.lower()) if t not in self._stop]

    def search(self, query: str, k: int | None = None) -> list[tuple[int, float]]:
        """(page index, score) of the best `k` pages: by score, then by page order."""
        import numpy as np

        k = self.k if k is None else k
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        ids = self._index.get_tokens_ids(self._tokens(str(query)))
        scores = (self._index.get_scores_from_ids(ids) if ids
                  else np.zeros(len(self.pages), dtype=np.float32))
        order = np.argsort(-scores, kind="stable")[:k]  # stable: equal scores keep page order
        return [(int(i), float(scores[i])) for i in order]

    def __call__(self, query: str, k: int | None = None) -> list[str]:
        return [self.passages[i] for i, _ in self.search(query, k)]

    def __deepcopy__(self, memo):
        return self  # read-only once built: DSPy copies programs often, share the index

    def __repr__(self) -> str:
        return f"BM25Retriever({len(self.pages)} pages, k={self.k})"
