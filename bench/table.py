"""Markdown tables from bench/results/*.json; optionally written into README.md between markers.

    python -m bench.table                    # print
    python -m bench.table --readme README.md # replace the block between the bench markers
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import RESULTS

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _load(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def _machine(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    isa = "/".join(m.get("isa", [])) or "?"
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores ({isa}), {m.get('ram_gb', '?')} GB RAM{gpu}; "
            f"torch {m.get('torch', '?')} with {m.get('torch_threads', '?')} threads")


def _fmt(x, nd=2) -> str:
    if x is None:
        return "–"
    return f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}"


def _loadavg(row: dict) -> str:
    """1-minute load average before → after the contender's process (2 cores: ~2 is only us)."""
    la = row.get("loadavg_1m")
    return f"{la[0]:.1f}→{la[1]:.1f}" if la else "–"


def _ceiling(r: dict) -> str:
    flops = r.get("matmul_flops", r.get("matmul_flops_fp32"))
    dtype = {"bfloat16": "bf16", "float32": "fp32"}.get(r.get("matmul_dtype", "float32"), "?")
    init = ". Random-init weights (throughput only)" if r.get("random_init") else ""
    return f"{dtype} matmul ceiling: {flops / 1e9:,.0f} GFLOP/s{init}"


def _contender_label(c: dict) -> str:
    if c.get("speed_options"):
        return f"{c['contender']} ({', '.join(c['speed_options'])})"
    return c["contender"] + (" (grad. checkpointing)" if c.get("gradient_checkpointing") else "")


def _head_share(c: dict) -> str:
    """LM-head rows per token fed: < 100% where the head skips unlabelled positions, > 100% where
    it also scores padding."""
    if c.get("head_rows") is None or not c.get("tokens"):
        return "–"
    return f"{100 * c['head_rows'] / c['tokens']:.0f}%"


def train_table(r: dict) -> str:
    rows = {c["contender"]: c for c in r["contenders"]}
    ref = rows.get("adaptlab")
    head = (f"**LoRA SFT** — {r['model']}, {r['precision']}, LoRA r={r['lora']['r']} on q/k/v/o, batch "
            f"{r['batch_size']}, {r['steps']} optimizer steps, lr {r['lr']}, {r['train_examples']} train / "
            f"{r['val_examples']} validation chats. Untuned validation loss: {r['base_val_loss']:.3f}. "
            f"{_ceiling(r)}.\n\n")
    counted = all(c.get("head_rows") is not None for c in rows.values())
    share_col = " LM head rows ÷ tokens |" if counted else ""
    lines = ["| contender | tokens/s | adaptlab ÷ this | s/step (median) | peak RAM MB | final train loss | "
             f"val loss |{share_col} MFU | load avg |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if counted else "")]
    for name, c in rows.items():
        ratio = f"{ref['tokens_per_s'] / c['tokens_per_s']:.2f}×" if ref else "–"
        share = f" {_head_share(c)} |" if counted else ""
        lines.append(f"| {_contender_label(c)} | {_fmt(c['tokens_per_s'], 1)} | {ratio} | {c['s_per_step']:.2f} "
                     f"({c['median_s_per_step']:.2f}) | {_fmt(c['peak_rss_mb_train'], 0)} | "
                     f"{c['final_train_loss']:.3f} ({c['train_loss_on']}) | {c['val_loss']:.3f} |{share} "
                     f"{100 * c['mfu']:.1f}% | {_loadavg(c)} |")
    notes = []
    if ref:
        vs = [f"{ref['tokens_per_s'] / rows[k]['tokens_per_s']:.2f}× {label}"
              for k, label in (("trl-fast", "TRL with its speed options on (trl-fast; goal ≥ 1.5×)"),
                               ("trl", "TRL at its defaults"))
              if k in rows]
        if vs:
            notes.append("adaptlab's tokens/s: " + "; ".join(vs) + ".")
    test = (r.get("goal_vs_trl_fast") or {}).get("val_loss_test")
    if test:
        notes.append(f"Validation loss, adaptlab − trl-fast, mean over the {r['val_examples']} chats: "
                     f"{test['diff_per_chat']:+.4f} [{test['ci'][0]:+.4f}, {test['ci'][1]:+.4f}] "
                     f"(paired bootstrap, p = {test['p']:.2f}): "
                     + ("no worse." if test["no_worse"] else "worse."))
    notes.append("MFU: model FLOPs of the positions each side computes — 4 × non-embedding base "
                 "parameters per non-padding token fed, plus 4 × vocab × hidden per row the LM head "
                 "was applied to (counted by hooks)." if counted else
                 "MFU: 4 × base parameters per non-padding token (the LM head counted on every token).")
    return head + "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def _identical(row: dict, n: int) -> str:
    return "– (other weights)" if row.get("identical") is None else f"{row['identical']}/{n}"


def generate_table(r: dict) -> str:
    head = (f"**Generation** — {r['model']}, {r['precision']}, greedy, {r['max_new_tokens']} new tokens max, "
            f"{r['prompts']} prompts; peak RAM {r['peak_rss_mb']:.0f} MB.\n\n")
    lines = [f"Load average around the run: {_loadavg(r)}.\n",
             "| contender | batch | tokens/s | speedup vs naive | outputs identical to naive | seconds |",
             "|---|--:|--:|--:|--:|--:|"]
    for row in r["rows"]:
        lines.append(f"| {row['contender']} | {row['batch_size']} | {row['tokens_per_s']:.1f} | "
                     f"{row['speedup']:.2f}× | {_identical(row, r['prompts'])} | {row['seconds']:.1f} |")
    return head + "\n".join(lines) + "\n"


_TEACHER_LABELS = {"naive": "naive generate loop", "old": "LocalLM, engine=generate (previous)",
                   "new": "LocalLM, engine=continuous (new)", "llamacpp": "LlamaCppLM (GGUF as shipped)"}


def _frac(v) -> str:
    return f"{v[0]}/{v[1]}" if v else "–"


def teacher_table(r: dict) -> str:
    """bench/results/teacher*.json: teacher-prompt generation, one row per contender."""
    rows = r["rows"]
    agree = any("agree_fp32" in c for c in rows)
    head = (f"**Teacher generation** — {r['model']}, greedy, {r['max_new_tokens']} new tokens max, "
            f"{r['prompts']} tone-study teacher prompts (naive loop: first {r['naive_prompts']}).\n\n")
    cols = ["contender", "precision", "batch", "prompts", "tokens/s", "× old LocalLM", "TTFT s",
            "peak RAM MB", "identical to naive"] + (["agrees with fp32"] if agree else [])
    lines = ["| " + " | ".join(cols) + " |", "|---|---|" + "--:|" * (len(cols) - 2)]
    for c in rows:
        prec = c.get("precision") or ("GGUF " + c["gguf"] if c.get("gguf") else "–")
        ttft = f"{c['ttft_s']:.2f}" if c.get("ttft_s") is not None else "–"
        cells = [_TEACHER_LABELS.get(c["contender"], c["contender"]), prec, str(c["batch_size"]),
                 str(c["prompts"]), f"{c['tokens_per_s']:.1f}", f"{c['speedup_vs_old']:.2f}×", ttft,
                 _fmt(float(c["peak_rss_mb"]), 0), _frac(c.get("identical_to_naive"))]
        if agree:
            cells.append(_frac(c.get("agree_fp32")))
        lines.append("| " + " | ".join(cells) + " |")
    tail = "".join(f"\n{_TEACHER_LABELS.get(f['contender'], f['contender'])}: failed "
                   f"({f['error']}), no row.\n" for f in r.get("failed", []))
    return head + "\n".join(lines) + "\n" + tail


def profile_table(r: dict) -> str:
    head = (f"**Where an adaptlab training step goes** — torch.profiler over {r['steps']} steps "
            f"({r['s_per_step']:.2f} s/step, self CPU time by op).\n\n")
    lines = ["| op | share of self CPU time |", "|---|--:|"]
    for op in r["top_ops"][:8]:
        lines.append(f"| `{op['name']}` | {op['share'] * 100:.1f}% |")
    return head + "\n".join(lines) + "\n"


def _tables(res: dict) -> list:
    """(result name, table function) in the order the tables are shown. A result kept from another
    machine, `<name>@<tag>.json` (renamed by hand before a rerun overwrites `<name>.json`), follows
    its `<name>`'s table."""
    teachers = sorted((k for k in res if "@" not in k and (k == "teacher" or k.startswith("teacher-"))),
                      key=lambda k: (k != "teacher", k))
    plan = [("train_sft", train_table), ("train_sft-bf16", train_table),
            *((k, teacher_table) for k in teachers),
            ("generate", generate_table), ("generate-bf16", generate_table),
            ("profile_train", profile_table)]
    return [(k, fn) for name, fn in plan
            for k in [name, *sorted(k for k in res if k.startswith(name + "@"))]]


def render(results: Path = RESULTS, gpu: bool = False) -> str:
    """Tables of the CPU results (or, with `gpu`, of the gpu-*.json ones)."""
    res = {k.removeprefix("gpu-"): v for k, v in _load(results).items() if k.startswith("gpu-") == gpu}
    if not res:
        return "No benchmark results yet: run `python -m bench.run`.\n"
    names = [name for name, _ in _tables(res) if name in res]
    where = {n: (res[n].get("date", "")[:10], _machine(res[n].get("machine", {}))) for n in names}
    one = len(set(where.values())) == 1
    parts = [f"Measured {where[names[0]][0]} on {where[names[0]][1]}.\n"] if one and names else []
    for name, fn in _tables(res):
        if name in res:
            if not one:  # results from several runs or machines: each table says its own
                parts.append(f"*Measured {where[name][0]} on {where[name][1]}.*\n")
            parts.append(fn(res[name]))
    return "\n".join(parts)


def update_readme(path: Path, text: str) -> bool:
    """Replace the text between the bench markers; False (file untouched) when they are absent."""
    doc = path.read_text(encoding="utf-8")
    i, j = doc.find(START), doc.find(END)
    if i < 0 or j < i:
        return False
    new = doc[: i + len(START)] + "\n" + text.rstrip() + "\n" + doc[j:]
    tmp = path.with_name(f".{path.name}.bench.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    return True


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, help="file whose bench:start/bench:end block to replace")
    p.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    text = render(a.results)
    if any(a.results.glob("gpu-*.json")):
        text += "\n**On a GPU**\n\n" + render(a.results, gpu=True)
    print(text)
    if a.readme:
        if update_readme(a.readme, text):
            print(f"[bench] updated {a.readme}", file=sys.stderr)
        else:
            print(f"[bench] {a.readme} has no {START} … {END} block; left unchanged", file=sys.stderr)


if __name__ == "__main__":
    main()
