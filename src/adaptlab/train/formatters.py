"""Example formatters: a record {"messages", "explanation"?} -> the chat messages to train on.

`Formatter = Callable[[dict], list[dict]]`. Built-ins by `TuneConfig.target`, in `FORMATTERS`
(each entry takes the config and returns the formatter). A formatter refuses a record by raising
`FormatError(field, problem)`; the caller names the file and line.
"""
from __future__ import annotations

from typing import Callable

from ..errors import InputError
from .config import TuneConfig

Formatter = Callable[[dict], list[dict]]


class FormatError(ValueError):
    """A record a formatter cannot train on: which field, and why."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def chat(example: dict) -> list[dict]:
    """The messages as they are."""
    return [dict(m) for m in example["messages"]]


def answer(example: dict) -> list[dict]:
    """The messages as they are; an `explanation` the record carries is not trained on."""
    return chat(example)


def explained(template: str) -> Formatter:
    """The final assistant reply becomes `template` with {explanation} and {answer} filled in."""
    def fmt(example: dict) -> list[dict]:
        if example.get("explanation") is None:
            raise FormatError("explanation", "missing field (target=explained)")
        msgs = chat(example)
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            raise FormatError("messages", "no assistant reply to explain")
        if not msgs[last]["content"].strip():  # the template would hide it
            raise FormatError(f"messages[{last}].content", "empty assistant reply")
        msgs[last]["content"] = template.format(explanation=example["explanation"],
                                                answer=msgs[last]["content"])
        return msgs
    return fmt


FORMATTERS: dict[str, Callable[[TuneConfig], Formatter]] = {
    "chat": lambda cfg: chat,
    "answer": lambda cfg: answer,
    "explained": lambda cfg: explained(cfg.explanation_template),
}


def formatter_for(cfg: TuneConfig) -> Formatter:
    return FORMATTERS[cfg.target](cfg)


def training_messages(formatter: Formatter, example: dict, source: str, line: int) -> list[dict]:
    """`formatter(example)`, refused with file:line:field if it fails or leaves an empty reply
    (an empty target teaches the model to say nothing)."""
    try:
        msgs = formatter(example)
    except FormatError as e:
        raise InputError(source, line, e.field, e.problem) from None
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and not m["content"].strip():
            raise InputError(source, line, f"messages[{i}].content", "empty assistant reply")
    return msgs
