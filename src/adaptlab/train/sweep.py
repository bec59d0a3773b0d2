"""Sweeps: one tuning run per point of sizes x precisions x seeds, each with a stable name."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product


@dataclass(frozen=True)
class Point:
    n: int
    """Training examples."""
    precision: str
    seed: int

    def name(self, prefix: str = "tune", with_seed: bool = False) -> str:
        """`tune-fp32-n100` (`-s1` appended when the sweep has several seeds)."""
        return f"{prefix}-{self.precision}-n{self.n}" + (f"-s{self.seed}" if with_seed else "")


def grid(sizes: list[int], precisions: list[str], seeds: list[int]) -> list[Point]:
    """Every point, precision outermost, then size, then seed (the order stages run in)."""
    return [Point(n, p, s) for p, n, s in product(precisions, sizes, seeds)]
