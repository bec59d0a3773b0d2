"""Run every benchmark, then print the Markdown table.

    python -m bench.run           # full: 12 training steps, 32 prompts at batch 1/4/8/16/32
    python -m bench.run --quick   # smoke check: 3 steps, 8 prompts; results under bench/results/quick/
"""
from __future__ import annotations

import argparse
import os

from . import generate, table, train_sft
from .common import ENV, RESULTS


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per training contender")
    p.add_argument("--only", choices=["train", "generate"], help="run one benchmark")
    a = p.parse_args(argv)
    os.environ.update(ENV)
    if a.only in (None, "train"):
        train_sft.run(3 if a.quick else a.steps, train_sft.CONTENDERS, quick=a.quick)
    if a.only in (None, "generate"):
        if a.quick:
            generate.run(8, (1, 8), quick=True)
        else:
            generate.run()
    print(table.render(RESULTS / "quick" if a.quick else RESULTS))


if __name__ == "__main__":
    main()
