"""Explained ListOps (Ballout et al. 2023, "Show Me How It's Done: The Role of Explanations in
Fine-Tuning Language Models"): seeded nested MIN/MAX/MED/SM expressions, their answers, and
explanations at three levels of detail, correct by construction.

An expression is in ListOps prefix notation, `[MAX 2 9 [MIN 4 7 ] 0 ]`. Literal operands are
single digits (0-9; 0..K-1 where K < 10, so that every answer is one of the K classes), SM is
the sum mod K and MED is `int(numpy.median(args))`. An explanation has one entry per
sub-expression in evaluation order: innermost first, left to right (post-order).
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import io

OPS = ("MIN", "MAX", "MED", "SM")
LEVELS = ("none", "short", "medium", "long")
NEST_P = 0.35  # chance that an argument is a nested expression, where the depth allows one
RETRIES = 100  # draws of one example before a duplicate expression is accepted
PROMPT = "Evaluate the ListOps expression (MIN, MAX, MED = median, SM = sum mod {K}). {expression}"
_TOKEN = re.compile(r"\[|\]|[^\s\[\]]+")
_INT = re.compile(r"-?[0-9]+")
_ANSWER = re.compile(r"the answer is\s*(-?[0-9]+)(?![0-9])(?!\.[0-9])", re.IGNORECASE)


@dataclass
class ListOpsConfig:
    n: int
    """How many examples to generate."""
    depth: int = 2
    """Maximum nesting depth; 1 is a single operator over digits."""
    classes: int = 10
    """K: SM is the sum mod K, and every answer is one of 0..K-1."""
    max_args: int = 4
    """Most operands of one operator."""
    min_args: int = 2
    """Fewest operands of one operator."""
    ops: tuple[str, ...] = OPS
    """Operators to draw from: some of MIN, MAX, MED, SM."""
    seed: int = 0
    """Seed of the generator: the same seed gives the same examples."""
    exact_depth: bool = False
    """Every expression has exactly `depth` levels (e.g. a test set deeper than training)."""

    def __post_init__(self):
        for name in ("n", "depth", "classes", "max_args", "min_args", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        _need(self.n >= 1, f"n must be at least 1, got {self.n}")
        _need(self.depth >= 1, f"depth must be at least 1, got {self.depth}")
        _need(self.classes >= 2, f"classes must be at least 2, got {self.classes}")
        _need(self.min_args >= 1, f"min_args must be at least 1, got {self.min_args}")
        _need(self.max_args >= self.min_args,
              f"max_args ({self.max_args}) must be at least min_args ({self.min_args})")
        _need(not isinstance(self.ops, str), f"ops must be a list of operators, got {self.ops!r}")
        self.ops = tuple(dict.fromkeys(self.ops))
        _need(bool(self.ops), "ops must name at least one operator")
        for op in self.ops:
            _need(op in OPS, f"unknown operator {op!r} in ops; expected some of {', '.join(OPS)}")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


class _Step(NamedTuple):
    op: str
    args: tuple[int, ...]
    result: int


# -- evaluation ------------------------------------------------------------------------------

def _twice_median(args) -> int:
    s = sorted(args)
    m = len(s) // 2
    return 2 * s[m] if len(s) % 2 else s[m - 1] + s[m]


def _median_text(args) -> str:
    t = _twice_median(args)
    return f"{t // 2}.5" if t % 2 else str(t // 2)


def _apply(op: str, args: tuple[int, ...], classes: int) -> int:
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "MED":
        return _twice_median(args) // 2  # operands are >= 0: floor is int()'s truncation
    return sum(args) % classes


def _trace(expression: str, classes: int) -> tuple[list[_Step], int]:
    """The steps of `expression` in evaluation order, and its nesting depth."""
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an integer of at least 2, got {classes!r}")
    tokens = iter(_TOKEN.findall(expression))
    stack: list[tuple[str, list[int]]] = []
    steps: list[_Step] = []
    depth = 0
    for tok in tokens:
        if steps and not stack:
            raise ValueError(f"unexpected {tok!r} after the end of the expression")
        if tok == "[":
            op = next(tokens, None)
            if op not in OPS:
                got = "the end" if op is None else repr(op)
                raise ValueError(f"expected an operator ({', '.join(OPS)}) after '[', got {got}")
            stack.append((op, []))
            depth = max(depth, len(stack))
        elif tok == "]":
            if not stack:
                raise ValueError("unmatched ']'")
            op, args = stack.pop()
            if not args:
                raise ValueError(f"{op} has no operands")
            steps.append(_Step(op, tuple(args), _apply(op, tuple(args), classes)))
            if stack:
                stack[-1][1].append(steps[-1].result)
        elif tok.isascii() and tok.isdigit():
            if not stack:
                raise ValueError(f"operand {tok} outside any '[ ... ]'")
            stack[-1][1].append(int(tok))
        else:
            raise ValueError(f"unexpected {tok!r}: expected '[OP', ']' or a non-negative integer")
    if stack:
        raise ValueError(f"missing ']': {len(stack)} bracket(s) left open")
    if not steps:
        raise ValueError("empty expression")
    return steps, depth


def evaluate(expression: str, classes: int) -> int:
    """The value of a ListOps prefix expression; ValueError naming the problem if malformed."""
    return _trace(expression, classes)[0][-1].result


# -- explanations ----------------------------------------------------------------------------

def _listed(args) -> str:
    words = [str(a) for a in args]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _short(s: _Step, classes: int) -> str:
    return f"{s.op}, {s.result}"


def _medium(s: _Step, classes: int) -> str:
    a = " ".join(map(str, s.args))
    if s.op in ("MIN", "MAX"):
        return f"{s.op}, {s.op.lower()} of [{a}], answer is {s.result}"
    if s.op == "MED":
        ordered = " ".join(map(str, sorted(s.args)))
        return (f"MED, sort [{a}] to [{ordered}], median is {_median_text(s.args)}, "
                f"answer is {s.result}")
    return f"SM, add [{a}], sum is {sum(s.args)}, answer is {s.result}"


def _sentence(s: _Step, classes: int) -> str:
    a = _listed(s.args)
    if s.op in ("MIN", "MAX"):
        return f"the {'minimum' if s.op == 'MIN' else 'maximum'} of {a} is {s.result}."
    if s.op == "MED":
        median = _median_text(s.args)
        tail = "." if median == str(s.result) else f", rounded down to {s.result}."
        return f"the median of {a} (in order: {_listed(sorted(s.args))}) is {median}{tail}"
    total = sum(s.args)
    return f"the sum of {a} is {total}, and {total} mod {classes} is {s.result}."


def _long(steps: list[_Step], classes: int) -> str:
    sentences = [_sentence(s, classes) for s in steps]
    if len(sentences) == 1:
        return sentences[0][0].upper() + sentences[0][1:]
    last = len(sentences) - 1
    return " ".join(("First, " if i == 0 else "Finally, " if i == last else "Next, ") + text
                    for i, text in enumerate(sentences))


def _example(expression: str, classes: int) -> dict:
    steps, depth = _trace(expression, classes)
    return {"expression": expression, "answer": steps[-1].result, "classes": classes,
            "depth": depth,
            "explanation_short": " ; ".join(_short(s, classes) for s in steps),
            "explanation_medium": " ; ".join(_medium(s, classes) for s in steps),
            "explanation_long": _long(steps, classes)}


# -- generation ------------------------------------------------------------------------------

def _draw(rng: random.Random, cfg: ListOpsConfig, levels: int, reach: bool) -> str:
    """A random expression of at most `levels` nesting levels (exactly `levels` if `reach`)."""
    k = rng.randint(cfg.min_args, cfg.max_args)
    op = rng.choice(cfg.ops)
    deep = rng.randrange(k) if reach and levels > 1 else -1
    args = []
    for i in range(k):
        if i == deep or (levels > 1 and rng.random() < NEST_P):
            args.append(_draw(rng, cfg, levels - 1, i == deep))
        else:
            args.append(str(rng.randrange(min(10, cfg.classes))))
    return f"[{op} {' '.join(args)} ]"


def generate(cfg: ListOpsConfig) -> list[dict]:
    """`cfg.n` explained examples, deterministic in `cfg.seed`, without repeats where feasible."""
    rng = random.Random(cfg.seed)
    seen: set[str] = set()
    out, retries = [], RETRIES
    for _ in range(cfg.n):
        for _ in range(retries):
            expression = _draw(rng, cfg, cfg.depth, cfg.exact_depth)
            if expression not in seen:
                break
        else:
            retries = 1  # the space looks exhausted: stop paying for retries
        seen.add(expression)
        out.append(_example(expression, cfg.classes))
    return out


# -- records ---------------------------------------------------------------------------------

def to_record(example: dict, level: str) -> dict:
    """A chat record whose reply is the answer, with the explanation of `level` (none: absent)."""
    if level not in LEVELS:
        raise ValueError(f"unknown explanation level {level!r}; expected one of "
                         f"{', '.join(LEVELS)}")
    prompt = PROMPT.format(K=example["classes"], expression=example["expression"])
    rec: dict = {"messages": [{"role": "user", "content": prompt},
                              {"role": "assistant", "content": str(example["answer"])}]}
    if level != "none":
        rec["explanation"] = example[f"explanation_{level}"]
    rec["answer"], rec["depth"] = example["answer"], example["depth"]
    return rec


def parse_answer(text: str) -> int | None:
    """The last `The answer is <int>` of a model's output, else the whole text as an integer,
    else None."""
    hits = _ANSWER.findall(text)
    if hits:
        return int(hits[-1])
    text = text.strip()
    return int(text) if _INT.fullmatch(text) else None


def write_jsonl(path: str | os.PathLike, examples: list[dict]) -> Path:
    """Write examples (or records) one JSON object a line, atomically."""
    return io.write_jsonl(path, examples)
