"""The training logs as files: loss.csv / eval.csv, and TensorBoard events when it is installed."""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from ..io import write_text


def write_logs(out: Path, logs: dict) -> None:
    for name in ("loss", "eval"):
        rows = logs.get(name, [])
        if not rows:
            continue
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        write_text(out / f"{name}.csv", buf.getvalue())


def write_tensorboard(out: Path, logs: dict) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    shutil.rmtree(out / "tb", ignore_errors=True)
    with SummaryWriter(str(out / "tb")) as w:
        for r in logs.get("loss", []):
            w.add_scalar("train/loss", r["loss"], r["step"])
            w.add_scalar("train/lr", r["lr"], r["step"])
        for r in logs.get("eval", []):
            for k, v in r.items():
                if k != "step" and isinstance(v, (int, float)):
                    w.add_scalar(f"eval/{k}", v, r["step"])
