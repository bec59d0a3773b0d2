"""Filters for simulated answers; each drop is counted by reason."""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

END = re.compile(r"[.!?…\"')\]]\s*$")
_LAST_SENTENCE_END = re.compile(r"^(.*[.!?…])[^.!?…]*$", re.S)


def trim_incomplete(text: str) -> str:
    """Drop a trailing unfinished sentence (generation hit its token limit mid-sentence)."""
    text = text.strip()
    if END.search(text):
        return text
    m = _LAST_SENTENCE_END.match(text)
    return m.group(1).strip() if m else text


def ngram_copy_share(answer: str, source: str, n: int = 8) -> float:
    """Share of the answer's word n-grams that appear verbatim in the source."""
    words = re.findall(r"\w+", answer.lower())
    src = " " + " ".join(re.findall(r"\w+", source.lower())) + " "
    grams = [" " + " ".join(words[i : i + n]) + " " for i in range(len(words) - n + 1)]
    return sum(g in src for g in grams) / len(grams) if grams else 0.0


def filter_answers(rows: Sequence[dict], tone_scores: Sequence[float], min_words: int = 5,
                   max_copy: float = 0.5, min_topic_sim: float = 0.3, min_tone: float = 0.5,
                   max_dup_sim: float = 0.95, embed_ref: str = "minilm-l6") -> tuple[list[dict], dict]:
    """Keep answers that are non-empty, not degenerate, complete, not copied, on topic, in tone
    and not duplicates.

    Returns (kept rows, {"kept": n, "dropped": {reason: n}}); each row gets `drop_reason`.
    """
    from ..evaluate.content import degenerate
    from ..evaluate.embed import embed, pairwise_cosine

    trimmed = [trim_incomplete(r["simulated"]) for r in rows]
    rows = [{**r, "simulated": t, "trimmed": t != r["simulated"].strip()} for r, t in zip(rows, trimmed)]
    texts = trimmed
    topic = pairwise_cosine(texts, [r["passage"] for r in rows], embed_ref)
    emb = embed(texts, embed_ref)
    kept, kept_idx, reasons = [], [], Counter()
    for i, r in enumerate(rows):
        t = texts[i].strip()
        reason = None
        if len(t.split()) < min_words:
            reason = "empty_or_truncated" if r["trimmed"] else "empty"
        elif degenerate(t):
            reason = "degenerate"  # looping or gibberish: see evaluate.content
        elif not END.search(t):
            reason = "truncated"
        elif ngram_copy_share(t, r.get("facts", r["passage"])) > max_copy:
            reason = "copied"
        elif topic[i] < min_topic_sim:
            reason = "off_topic"
        elif tone_scores[i] < min_tone:
            reason = "off_tone"
        elif kept_idx and float((emb[kept_idx] @ emb[i]).max()) > max_dup_sim:
            reason = "near_duplicate"
        r = {**r, "topic_sim": round(topic[i], 4), "tone_score": round(tone_scores[i], 4),
             "drop_reason": reason}
        if reason:
            reasons[reason] += 1
        else:
            kept.append(r)
            kept_idx.append(i)
    return kept, {"candidates": len(rows), "kept": len(kept), "dropped": dict(reasons),
                  "trimmed_unfinished_sentence": sum(r["trimmed"] for r in rows)}
