"""Short question-answer chats the training tests tune on."""
from __future__ import annotations

PAIRS = [
    ("What colour is the sky?", "The sky is blue."),
    ("What is 2 + 2?", "2 + 2 is 4."),
    ("Name a fruit.", "An apple is a fruit."),
    ("Say hello.", "Hello!"),
    ("What is the opposite of hot?", "Cold."),
    ("How many legs does a cat have?", "A cat has four legs."),
    ("What do bees make?", "Bees make honey."),
    ("Which animal barks?", "A dog barks."),
    ("What is frozen water called?", "Ice."),
]


def examples(n: int = len(PAIRS)) -> list[dict]:
    """The first n pairs as chat records."""
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in PAIRS[:n]]
