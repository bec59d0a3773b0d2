"""Run every benchmark, then print the Markdown table.

    python -m bench.run           # full: 30 training steps (one epoch), 32 prompts at batch 1/4/8/16/32, teacher
    python -m bench.run --quick   # smoke check: 3 steps, 8 prompts; results under bench/results/quick/
    python -m bench.run --only teacher   # the teacher benchmark alone (bench.teacher)
    python -m bench.run --device cuda --precision bf16 --random-init   # GPU: bench/results/gpu-*.json

The teacher benchmark (`bench.teacher`) runs on the CPU and picks its own precisions (fp32,
and bf16 where the CPU has it natively), so `--device`/`--precision`/`--random-init` do not apply
to it: a full run includes it only with the defaults (CPU, fp32), and `--only teacher` runs it
with those.
"""
from __future__ import annotations

import argparse
import os

from . import generate, table, teacher, train_sft
from .common import ENV, RESULTS, set_target


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per training contender (30 = one epoch of the 120 chats)")
    p.add_argument("--only", choices=["train", "generate", "teacher"], help="run one benchmark")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]; results go to gpu-*.json on a GPU")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 = autocast over fp32 weights for training, bf16 weights for generation")
    p.add_argument("--random-init", action="store_true",
                   help="the same architecture from its config, randomly initialized: no weights needed "
                        "(config + tokenizer from ADAPTLAB_BENCH_MODEL_DIR or the packaged student)")
    a = p.parse_args(argv)
    defaults = a.device == "cpu" and a.precision == "fp32" and not a.random_init
    if a.only == "teacher" and not defaults:
        p.error("the teacher benchmark runs on the CPU with real weights and picks its own precisions: "
                "drop --device/--precision/--random-init")
    os.environ.update(ENV)
    set_target(a.device, a.precision, a.random_init)
    if a.only in (None, "train"):
        train_sft.run(3 if a.quick else a.steps, train_sft.CONTENDERS, quick=a.quick)
    if a.only in (None, "generate"):
        if a.quick:
            generate.run(8, (1, 8), quick=True)
        else:
            generate.run()
    if a.only == "teacher" or (a.only is None and defaults):
        teacher.main(["--quick"] if a.quick else [])
    print(table.render(RESULTS / "quick" if a.quick else RESULTS, gpu=a.device != "cpu"))


if __name__ == "__main__":
    main()
