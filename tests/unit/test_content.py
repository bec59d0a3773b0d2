"""The content checks: degenerate answers are caught, normal ones are not."""
from __future__ import annotations

import pytest

from adaptlab.evaluate.content import degenerate


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("Okay.", "empty"),
    ("No, no, no, no, no, no, no, no.", "repetition"),
    ("It is blue. It is blue. It is blue. It is blue.", "repetition"),
    ("The the the the answer.", "repetition"),
    ("x7$#@ 1234 ### %%% ^^^ 0x0f", "gibberish"),
    ("Supercalifragilisticexpialidociousandthensome is it.", "gibberish"),
])
def test_degenerate_answers_are_caught(text, why):
    assert degenerate(text) == why


@pytest.mark.parametrize("text", [
    "Cats purr by quickly twitching the muscles in their voice box. You'll hear it when they're happy!",
    "That'd be Mount Kilimanjaro, over in Tanzania. It's nearly 5,900 meters high.",
    "Inflation is when prices go up over time, so your money buys a bit less each year.",
    "Well, you know, it's the heart: it pumps blood, and the blood carries oxygen around.",
])
def test_normal_answers_pass(text):
    assert degenerate(text) is None


def test_filters_drop_degenerate_teacher_outputs(monkeypatch):
    import numpy as np

    import adaptlab.evaluate.embed as embed
    from adaptlab.synth.filters import filter_answers

    monkeypatch.setattr(embed, "embed", lambda texts, ref="": np.eye(len(texts), 8, dtype=np.float32))
    monkeypatch.setattr(embed, "pairwise_cosine", lambda a, b, ref="": [1.0] * len(a))
    rows = [{"simulated": t, "passage": "p", "facts": "f"} for t in (
        "Sure, you know, it's neat and it works well for you!", "No, no, no, no, no, no, no.")]
    kept, stats = filter_answers(rows, [0.9, 0.9])
    assert [r["simulated"] for r in kept] == [rows[0]["simulated"]]
    assert stats["dropped"] == {"degenerate": 1}
