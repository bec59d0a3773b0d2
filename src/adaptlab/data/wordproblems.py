"""Arithmetic word problems from templates (the GSM8K stand-in of the BetterTogether study, Soylu et
al. 2024), with answers computed from the drawn values and a gold step-by-step solution.

A template is a question text and a short list of steps, each `out = left OP right` over the
drawn values and earlier results (+, -, *, and / only where it divides exactly). Draws whose
steps would go negative, zero, fractional or implausibly large are redrawn, so every
intermediate result is a positive integer. Each record keeps the whole computation as one
parenthesised expression over the numbers of the question (plus a template's stated constants,
such as 60 minutes in an hour), so a reader can re-derive the answer without this module.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import io

RETRIES = 200  # draws of one problem before giving up (on a valid or on an unseen one)
LIMIT = 10_000  # largest intermediate result: small models should not need long multiplication
NAMES = ("Mia", "Leo", "Ana", "Sam", "Kim", "Raj", "Omar", "Lena", "Ivy", "Tom", "Zoe", "Ben",
         "Nora", "Eli", "Maya", "Finn")
GOODS = (("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("ticket", "tickets"),
         ("mug", "mugs"), ("candle", "candles"), ("plant", "plants"), ("scarf", "scarves"))
THINGS = ("stickers", "marbles", "stamps", "shells", "coins", "beads")


@dataclass(frozen=True)
class Template:
    name: str
    question: str
    draw: Callable[[random.Random], dict]
    """The template's values: ints (numbers of the question) and strs (names, items)."""
    steps: tuple[tuple[str, str, str, str, str], ...]
    """(out, left, op, right, phrase): `out = left op right`; left/right name a value or an
    earlier result, or are an integer constant; phrase is formatted with all values."""
    constants: tuple[int, ...] = ()
    """Numbers the computation uses that the question states in words (60 minutes an hour)."""


def _who(r: random.Random, **values) -> dict:
    (item, items), thing = r.choice(GOODS), r.choice(THINGS)
    return {"name": r.choice(NAMES), "item": item, "items": items, "things": thing, **values}


def _two_goods(r: random.Random, **values) -> dict:
    (a, a_s), (b, _) = r.sample(GOODS, 2)
    return _who(r, item1=a, item1s=a_s, item2=b, **values)


def _draw_share(r):
    k, each = r.randint(2, 9), r.randint(2, 15)
    return _who(r, k=k, t=k * each)


def _draw_rate(r):
    rate, minutes = r.randint(2, 30), r.randint(2, 20)
    return _who(r, rate=rate, n=rate * minutes)


T = Template
TEMPLATES = (
    # one step
    T("shop_total", "{name} buys {q} {items} at ${p} each. How many dollars does {name} spend?",
      lambda r: _who(r, q=r.randint(2, 12), p=r.randint(2, 25)),
      (("cost", "q", "*", "p", "{q} {items} at ${p} each cost"),)),
    T("collect", "{name} has {a} {things}. A friend gives {name} {b} more {things}. How many "
      "{things} does {name} have now?", lambda r: _who(r, a=r.randint(5, 300), b=r.randint(2, 200)),
      (("total", "a", "+", "b", "{a} {things} and {b} more make"),)),
    T("spend", "{name} has ${m} and spends ${c} on a {item}. How many dollars does {name} have "
      "left?", lambda r: _who(r, m=r.randint(20, 500), c=r.randint(3, 400)),
      (("left", "m", "-", "c", "After spending ${c} of ${m}, {name} has"),)),
    T("share", "{name} shares {t} {things} equally among {k} friends. How many {things} does each "
      "friend get?", _draw_share, (("each", "t", "/", "k", "{t} {things} shared by {k} gives"),)),
    T("train_distance", "A train travels at {s} km per hour for {h} hours. How many kilometres "
      "does it travel?", lambda r: _who(r, s=r.randint(40, 160), h=r.randint(2, 9)),
      (("dist", "s", "*", "h", "{s} km each hour for {h} hours is"),)),
    T("print_time", "A printer prints {rate} pages per minute. How many minutes does it take to "
      "print {n} pages?", _draw_rate,
      (("mins", "n", "/", "rate", "{n} pages at {rate} a minute take"),)),
    # two steps
    T("change", "{name} buys {q} {items} at ${p} each and pays with a ${m} bill. How many "
      "dollars of change does {name} get?",
      lambda r: _who(r, q=r.randint(2, 6), p=r.randint(2, 15), m=r.choice((50, 100))),
      (("cost", "q", "*", "p", "{q} {items} at ${p} each cost"),
       ("change", "m", "-", "cost", "The change from ${m} is"))),
    T("two_goods", "A {item1} costs ${a} and a {item2} costs ${b}. How many dollars do {q} "
      "{item1s} and one {item2} cost together?",
      lambda r: _two_goods(r, a=r.randint(2, 30), b=r.randint(2, 40), q=r.randint(2, 9)),
      (("part", "q", "*", "a", "{q} {item1s} at ${a} each cost"),
       ("total", "part", "+", "b", "Adding the {item2} at ${b} gives"))),
    T("garden", "A garden has {rows} rows with {t} tulips in each row. {name} picks {d} tulips. "
      "How many tulips are left in the garden?",
      lambda r: _who(r, rows=r.randint(3, 15), t=r.randint(4, 20), d=r.randint(2, 40)),
      (("all", "rows", "*", "t", "{rows} rows of {t} tulips hold"),
       ("left", "all", "-", "d", "After picking {d}, the garden has"))),
    T("packs", "{name} buys {p} packs of {c} cards and shares all the cards equally among {k} "
      "friends. How many cards does each friend get?",
      lambda r: _who(r, p=r.randint(2, 9), c=r.randint(4, 12), k=r.randint(2, 8)),
      (("cards", "p", "*", "c", "{p} packs of {c} cards hold"),
       ("each", "cards", "/", "k", "Shared among {k} friends, each gets"))),
    T("print_hours", "A printer prints {rate} pages per minute. How many pages does it print in "
      "{h} hours?", lambda r: _who(r, rate=r.randint(2, 20), h=r.randint(2, 8)),
      (("per_hour", "rate", "*", "60", "An hour has 60 minutes, so in an hour it prints"),
       ("pages", "per_hour", "*", "h", "In {h} hours it prints")), constants=(60,)),
    T("savings", "{name} saves ${w} each week. After {n} weeks, {name} spends ${s} on a {item}. "
      "How many dollars does {name} have left?",
      lambda r: _who(r, w=r.randint(3, 40), n=r.randint(2, 12), s=r.randint(5, 200)),
      (("saved", "w", "*", "n", "Saving ${w} a week for {n} weeks gives"),
       ("left", "saved", "-", "s", "After spending ${s}, {name} has"))),
    # three steps
    T("two_legs", "A bus drives at {s1} km per hour for {h1} hours, then at {s2} km per hour for "
      "{h2} hours. How many kilometres does it drive in total?",
      lambda r: _who(r, s1=r.randint(30, 90), h1=r.randint(1, 6), s2=r.randint(30, 90),
                     h2=r.randint(1, 6)),
      (("leg1", "s1", "*", "h1", "The first part is"), ("leg2", "s2", "*", "h2",
                                                         "The second part is"),
       ("total", "leg1", "+", "leg2", "Together the bus drives"))),
    T("bake", "A baker makes {t} trays of {c} cookies and keeps {k} cookies. The rest are packed "
      "into boxes of {b}. How many boxes are filled?",
      lambda r: _who(r, t=r.randint(2, 9), c=r.randint(6, 24), k=r.randint(2, 20),
                     b=r.randint(2, 12)),
      (("all", "t", "*", "c", "{t} trays of {c} cookies make"),
       ("rest", "all", "-", "k", "Keeping {k} leaves"),
       ("boxes", "rest", "/", "b", "Packed in boxes of {b}, that fills"))),
    T("budget", "{name} has ${m}. {name} buys {q} {item1s} at ${p} each and a {item2} for ${e}. "
      "How many dollars does {name} have left?",
      lambda r: _two_goods(r, m=r.randint(30, 200), q=r.randint(2, 8), p=r.randint(2, 15),
                           e=r.randint(2, 30)),
      (("part", "q", "*", "p", "{q} {item1s} at ${p} each cost"),
       ("spent", "part", "+", "e", "With the {item2} at ${e}, {name} spends"),
       ("left", "m", "-", "spent", "From ${m}, {name} has left"))),
    T("jars", "{name} saves ${w} a week for {n} weeks and then gets ${g} as a gift. {name} splits "
      "all the money equally into {j} jars. How many dollars go into each jar?",
      lambda r: _who(r, w=r.randint(2, 25), n=r.randint(2, 10), g=r.randint(2, 60),
                     j=r.randint(2, 6)),
      (("saved", "w", "*", "n", "Saving ${w} a week for {n} weeks gives"),
       ("total", "saved", "+", "g", "With the ${g} gift, {name} has"),
       ("each", "total", "/", "j", "Split into {j} jars, each gets"))),
    T("bus_stops", "A bus has {a} passengers. At the first stop {b} get off and {c} get on. At "
      "the second stop {d} get off. How many passengers are on the bus now?",
      lambda r: _who(r, a=r.randint(10, 60), b=r.randint(1, 20), c=r.randint(1, 20),
                     d=r.randint(1, 30)),
      (("after_off", "a", "-", "b", "After {b} get off,"), ("after_on", "after_off", "+", "c",
                                                           "after {c} get on,"),
       ("now", "after_on", "-", "d", "and after {d} more get off, there are"))),
)
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
       "/": lambda a, b: a // b if b and a % b == 0 else None}


def _value(env: dict, ref: str) -> int:
    return int(ref) if ref.isdigit() else env[ref]


def solve(template: Template, values: dict) -> dict | None:
    """The record fields of one draw, or None if a step leaves the positive integers."""
    env, expr, lines, ops = dict(values), {}, [], []
    for out, left, op, right, phrase in template.steps:
        a, b = _value(env, left), _value(env, right)
        result = OPS[op](a, b)
        if result is None or not 0 < result <= LIMIT:
            return None
        env[out] = result
        expr[out] = f"({expr.get(left, str(a))} {op} {expr.get(right, str(b))})"
        lines.append(f"{phrase.format(**env)}: {a} {op} {b} = {result}.")
        ops.append(op)
    answer = env[template.steps[-1][0]]
    return {"question": template.question.format(**env), "answer": str(answer),
            "answer_int": answer, "steps": " ".join(lines) + f" The answer is {answer}.",
            "ops": ops, "expression": expr[template.steps[-1][0]][1:-1],
            "template": template.name, "n_steps": len(template.steps)}


def _draw(rng: random.Random, t: Template) -> dict | None:
    """A valid draw of template `t` (redrawn within the template, so that templates whose
    draws are often refused, like exact divisions, are not under-represented)."""
    for _ in range(RETRIES):
        if (rec := solve(t, t.draw(rng))) is not None:
            return rec
    return None


def generate(n: int, seed: int = 0, steps: tuple[int, int] = (1, 3)) -> list[dict]:
    """`n` problems of `steps[0]`..`steps[1]` steps, deterministic in `seed`, no repeats."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    lo, hi = steps
    pool = [t for t in TEMPLATES if lo <= len(t.steps) <= hi]
    if not pool:
        raise ValueError(f"no template has {lo} to {hi} steps; templates have 1 to 3")
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        for _ in range(RETRIES):
            rec = _draw(rng, rng.choice(pool))
            if rec is not None and rec["question"] not in seen:
                break
        else:
            raise ValueError(f"could not draw {n} distinct problems of {lo}-{hi} steps")
        seen.add(rec["question"])
        out.append({"id": f"wp-{len(out):05d}", **rec})
    return out


def write_jsonl(path: str | os.PathLike, problems: list[dict]) -> Path:
    return io.write_jsonl(path, problems)
