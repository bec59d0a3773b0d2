"""The tone study's report: comparison table, curves, samples, judge calibration, filters."""
from __future__ import annotations

import csv
from pathlib import Path

from ..io import read_json, read_jsonl
from ..report.render import save_plot, table, write_report
from .tone_config import Config

SYSTEMS = {"base": "base student, no system prompt", "prompted": "base student + tone system prompt",
           "tuned": "tuned student (LoRA), no system prompt", "teacher": "teacher + tone system prompt (+ demos)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _plot_systems(d: Path, systems: dict) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(systems)
    for k, (key, label) in enumerate([("tone_rate_classifier", "classifier judge"),
                                      ("tone_rate_llm", "LLM judge")]):
        ax.bar([i + 0.38 * k for i in range(len(names))], [systems[n][key] for n in names],
               width=0.38, label=label)
    ax.set_xticks([i + 0.19 for i in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("tone achievement rate")
    ax.legend()
    return save_plot(fig, d / "tone_by_system.png")


def _plot_vs_n(d: Path, adapters: dict) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for prec in sorted({a["precision"] for a in adapters.values()}):
        pts = sorted((a["n"], a["tone_rate_classifier"]) for a in adapters.values() if a["precision"] == prec)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=prec)
    ax.set_xlabel("simulated training examples N")
    ax.set_ylabel("tone rate (classifier), held-out")
    ax.set_ylim(0, 1)
    ax.legend()
    return save_plot(fig, d / "tone_vs_n.png")


def _plot_curves(d: Path, curves: dict) -> Path:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, c in curves.items():
        if c["loss"]:
            a1.plot([r["step"] for r in c["loss"]], [r["loss"] for r in c["loss"]], label=name)
        if c["eval"]:
            a2.plot([r["step"] for r in c["eval"]], [r["tone_rate"] for r in c["eval"]], marker="o", label=name)
    a1.set_xlabel("step"), a1.set_ylabel("training loss"), a1.legend(fontsize=8)
    a2.set_xlabel("step"), a2.set_ylabel("validation tone rate"), a2.set_ylim(0, 1), a2.legend(fontsize=8)
    return save_plot(fig, d / "convergence.png")


def _verdict(s: dict) -> str:
    t, p = s["tuned"]["tone_rate_classifier"], s["prompted"]["tone_rate_classifier"]
    tl, pl = s["tuned"]["tone_rate_llm"], s["prompted"]["tone_rate_llm"]
    word = "beat" if t > p else ("tied with" if t == p else "did not beat")
    return (f"Measured: the tuned student {word} system prompting on tone by the classifier judge "
            f"({t:.2f} vs {p:.2f}); LLM judge: {tl:.2f} vs {pl:.2f}. Content similarity to the "
            f"reference: tuned {s['tuned']['sim_reference']:.2f}, prompted "
            f"{s['prompted']['sim_reference']:.2f}, base {s['base']['sim_reference']:.2f}.")


def stage_report(cfg: Config, d: Path, run, split, judges, sim, tuned: dict, ev) -> dict:
    metrics = read_json(ev.dir / "metrics.json")
    systems, adapters = metrics["systems"], metrics["adapters"]
    jm = read_json(judges.dir / "judges.json")
    fstats = read_json(sim.dir / "filter_stats.json")
    curves = {k: {"loss": _csv(v.dir / "loss.csv"), "eval": _csv(v.dir / "eval.csv")} for k, v in tuned.items()}
    rows = [{"system": SYSTEMS[n], **{k: m[k] for k in ("tone_rate_classifier", "tone_rate_llm",
            "sim_reference", "sim_passage", "words", "sentence_words", "contractions_per_100w",
            "you_per_100w", "with_list_or_markdown")}, "judge_kappa": m["judge_agreement"]["kappa"]}
            for n, m in systems.items()]
    samples = read_jsonl(ev.dir / "answers.jsonl")
    eval_items = {it["id"]: it for it in read_jsonl(split.dir / "eval.jsonl")}
    by_id: dict[str, dict] = {}
    for s in samples:
        by_id.setdefault(s["id"], {})[s["system"]] = f"{s['answer']}  [clf {s['tone_classifier']:.2f}]"
    side = [{"question": eval_items[i]["question"], **v} for i, v in list(by_id.items())[:6]]
    judge_rows = [{"judge": "classifier (MiniLM + style, logistic regression, 5-fold CV)", **jm["classifier"]},
                  {"judge": f"LLM ({jm['llm_model']}, calibrated bias, 5-fold CV)",
                   **{k: jm["llm"][k] for k in ("n", "accuracy", "in_tone_recall", "off_tone_recall", "chance")}}]
    drops = [{"reason": k, "dropped": v} for k, v in fstats["dropped"].items()] or [{"reason": "none", "dropped": 0}]
    got = ", ".join(f"N={a['n']} {a['precision']}" for a in adapters.values())
    scale = (f"Student {cfg.student}; teacher {cfg.teacher.model} ({cfg.teacher.backend}); LLM judge "
             f"{cfg.judge.model}. Requested N {cfg.train_sizes} x precisions {cfg.precisions}; "
             f"trained: {got} (N is capped by the simulated examples that pass the filters). "
             f"{metrics['n_eval']} held-out questions, greedy decoding, {cfg.max_new_tokens} new tokens.")
    sections = [
        {"title": "Verdict", "text": _verdict(systems)},
        {"title": "Scale of this run", "text": scale},
        {"title": f"Comparison on {metrics['n_eval']} held-out questions (main adapter: {metrics['main_adapter']})",
         "table": table(rows), "image": _plot_systems(d, systems)},
        {"title": "Tone rate vs N", "table": table(list(adapters.values())),
         "image": _plot_vs_n(d, adapters)},
        {"title": "Convergence by precision (loss and validation tone rate)", "image": _plot_curves(d, curves)},
        {"title": "Side by side", "table": table(side, ["question", "base", "prompted", "tuned", "teacher"])},
        {"title": "Judge calibration on the labeled set", "table": table(judge_rows,
            ["judge", "n", "accuracy", "in_tone_recall", "off_tone_recall", "chance"])},
        {"title": "Judge agreement on evaluated answers",
         "table": table([{"system": n, **m["judge_agreement"]} for n, m in systems.items()])},
        {"title": f"Simulated data filters: kept {fstats['kept']} of {fstats['candidates']}",
         "table": table(drops)},
        {"title": "Stage wall time (s, this invocation; 0 = cached)",
         "table": table([{"stage": k, "seconds": round(v, 1)} for k, v in run.timings.items()])},
    ]
    data = {"systems": systems, "adapters": adapters, "judges": jm, "filters": fstats,
            "curves": curves, "timings_s": run.timings, "tone": cfg.tone.description,
            "samples": samples}
    return write_report(d, f"Tone of voice: tuned vs prompted ({cfg.name})", sections, data)
