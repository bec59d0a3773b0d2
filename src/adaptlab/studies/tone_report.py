"""The tone study's plots and its curves stage: training loss and the validation rates ("in tone
and content preserved", tone) per precision, the mean over seeds with intervals, how many steps
each precision takes to reach the reference's final rate, and a paired test at the last step."""
from __future__ import annotations

import csv
from pathlib import Path

from ..evaluate import stats
from ..report.plots import bars, lines
from ..report.render import table
from .tone_config import CurvesStage


def plot_systems(d: Path, evidence: dict) -> Path:
    return bars(d / "tone_by_system.png", {"in tone and content preserved": evidence["both"],
                                           "in tone (verdict classifier)": evidence["tone_classifier"],
                                           "content preserved": evidence["content"]},
                "share of held-out answers (95% CI)")


def plot_vs_n(d: Path, adapters: dict) -> Path:
    """Held-out tone rate against N per precision (the mean over seeds where there are several)."""
    series = {}
    for prec in sorted({a["precision"] for a in adapters.values()}):
        by_n: dict[int, list[float]] = {}
        for a in adapters.values():
            if a["precision"] == prec:
                by_n.setdefault(a["n"], []).append(a["tone_rate_classifier"])
        series[prec] = [(n, sum(v) / len(v)) for n, v in sorted(by_n.items())]
    return lines(d / "tone_vs_n.png", [{"xlabel": "simulated training examples N",
                                        "ylabel": "tone rate (classifier), held-out",
                                        "ylim": (0, 1), "series": series}])


def _csv(path: Path) -> list[dict]:
    """A log's rows: numbers as floats; per-question outcome columns (`*_items`) as text."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [{k: v if k.endswith("_items") else float(v) for k, v in r.items()}
                for r in csv.DictReader(f)]


CURVE_MEASURES = {"both": "in tone and content preserved", "tone": "tone (verdict classifier)"}
"""What the validation curve records per question (`<key>_items` in eval.csv)."""


def _outcomes(rows: list[dict]) -> dict[int, dict[str, list[bool]]]:
    """step -> measure -> per-question outcomes, from eval.csv rows that carry them."""
    return {int(r["step"]): {m: [c == "1" for c in r[f"{m}_items"]] for m in CURVE_MEASURES}
            for r in rows if all(f"{m}_items" in r for m in CURVE_MEASURES)}


def _point(per_seed: list[list[bool]], seed: int) -> dict:
    """One step of one precision: the mean over seeds of the per-seed rates with a bootstrap
    interval over seeds, and the Wilson interval of all seeds' answers pooled."""
    rates = [sum(o) / len(o) for o in per_seed]
    k, n = sum(map(sum, per_seed)), sum(map(len, per_seed))
    return {"mean": sum(rates) / len(rates), "seeds_ci": stats.bootstrap_mean(rates, seed=seed),
            "pooled": k / n, "wilson": stats.wilson(k, n), "per_seed": [round(r, 4) for r in rates]}


def aggregate(cfg: CurvesStage, outcomes: dict[str, dict]) -> list[dict]:
    """Per (precision, N): the steps every seed's curve has, each measure at each step."""
    groups: dict[tuple[str, int], list] = {}
    for a in cfg.adapters:
        if outcomes.get(a.name):
            groups.setdefault((a.precision, a.n), []).append(a)
    out = []
    for (prec, n), members in groups.items():
        steps = sorted(set.intersection(*(set(outcomes[a.name]) for a in members)))
        for step in steps:
            row = {"precision": prec, "n": n, "step": step, "seeds": [a.seed for a in members],
                   "questions": len(outcomes[members[0].name][step]["both"])}
            for m in CURVE_MEASURES:
                row[m] = _point([outcomes[a.name][step][m] for a in members], cfg.seed)
            out.append(row)
    return out


def _steps_to(rows: list[dict], measure: str, target: float) -> int | None:
    """The first step whose mean rate reaches `target` (None: never)."""
    return next((r["step"] for r in rows if r[measure]["mean"] >= target - 1e-9), None)


def convergence_verdict(cfg: CurvesStage, agg: list[dict], outcomes: dict[str, dict]) -> dict:
    """For N = main_size: steps each precision takes to reach the reference precision's final
    mean rate, and each precision against the reference at its last step, paired by seed and
    question (McNemar on the pooled pairs)."""
    curves = {}
    for r in agg:
        if r["n"] == cfg.main_size:
            curves.setdefault(r["precision"], []).append(r)
    ref = curves.get(cfg.reference)
    if not ref:
        return {"sentences": [], "steps_to_target": {}, "final": {}, "tests": {}}
    sentences, steps_to, tests = [], {}, {}
    for m, what in CURVE_MEASURES.items():
        target = ref[-1][m]["mean"]
        steps_to[m] = {p: _steps_to(rows, m, target) if target > 0 else None for p, rows in curves.items()}
        if target == 0:
            sentences.append(f'{cfg.reference} ends at a mean rate of "{what}" of 0 on the '
                             "validation questions: there is no target to time the precisions to.")
            continue
        got = ", ".join(f"{p} at step {s}" if s is not None else f"{p} not within {rows[-1]['step']} steps"
                        for p, s, rows in ((p, steps_to[m][p], curves[p]) for p in curves))
        sentences.append(f'First step at which the mean rate of "{what}" (over seeds) reaches '
                         f"{cfg.reference}'s final mean, {target:.2f}: {got}.")
    if len(curves) > 1:
        sentences.append("The step counts carry no test of their own (the intervals in the table show "
                         "how far apart the curves are); the paired tests at the last step do.")
    by_name = {(a.precision, a.seed): a.name for a in cfg.adapters if a.n == cfg.main_size}
    for p, rows in curves.items():
        if p == cfg.reference:
            continue
        seeds = [s for s in rows[-1]["seeds"] if s in ref[-1]["seeds"]]
        step_p, step_r = rows[-1]["step"], ref[-1]["step"]
        for m, what in CURVE_MEASURES.items():
            a = [o for s in seeds for o in outcomes[by_name[(p, s)]][step_p][m]]
            b = [o for s in seeds for o in outcomes[by_name[(cfg.reference, s)]][step_r][m]]
            t = stats.compare_rates(p, a, cfg.reference, b, f'"{what}" at the last step (step {step_p}), '
                                    f"pooled over {len(seeds)} seeds x {rows[-1]['questions']} "
                                    "validation questions")
            tests[f"{p}_vs_{cfg.reference}_{m}"] = {"p": t["test"]["p"], "significant": t["significant"],
                                                    "verdict": t["verdict"]}
            sentences.append(t["verdict"])
    final = {p: {m: round(rows[-1][m]["mean"], 4) for m in CURVE_MEASURES} | {"step": rows[-1]["step"]}
             for p, rows in curves.items()}
    return {"sentences": sentences, "steps_to_target": steps_to, "final": final, "tests": tests}


def _label(r: dict, several_n: bool) -> str:
    return f"{r['precision']} N={r['n']}" if several_n else r["precision"]


def _table_rows(agg: list[dict], several_n: bool, several_seeds: bool) -> list[dict]:
    fmt = stats.fmt_ci
    rows = []
    for r in agg:
        row = {"precision": _label(r, several_n), "step": r["step"]}
        for m, what in CURVE_MEASURES.items():
            if several_seeds:
                row[f"{what}, mean over seeds [95% bootstrap CI over seeds]"] = fmt(r[m]["mean"],
                                                                                      r[m]["seeds_ci"])
            row[f"{what}, pooled seeds x questions [95% Wilson CI]"] = fmt(r[m]["pooled"], r[m]["wilson"])
        rows.append(row)
    return rows


def _series(agg: list[dict], measure: str, several_n: bool, ci: str) -> dict:
    series: dict[str, list] = {}
    for r in agg:
        p = r[measure]
        lo, hi = p["seeds_ci"] if ci == "seeds_ci" else p["wilson"]
        y = p["mean"] if ci == "seeds_ci" else p["pooled"]
        series.setdefault(_label(r, several_n), []).append((r["step"], y, lo, hi))
    return series


def _mean_loss(cfg: CurvesStage, loss: dict[str, list[tuple]], several_n: bool) -> dict:
    """Training loss per (precision, N), the mean over seeds at each step they all reached."""
    groups: dict[str, list[dict]] = {}
    for a in cfg.adapters:
        if loss.get(a.name):
            label = _label({"precision": a.precision, "n": a.n}, several_n)
            groups.setdefault(label, []).append(dict(loss[a.name]))
    return {label: [(s, sum(c[s] for c in curves) / len(curves))
                    for s in sorted(set.intersection(*(set(c) for c in curves)))]
            for label, curves in groups.items()}


def curves_stage(cfg: CurvesStage, inputs: dict[str, Path], ctx) -> dict:
    """inputs: each adapter's manifest (its directory holds loss.csv and eval.csv)."""
    curves = {name: {"loss": _csv(p.parent / "loss.csv"), "eval": _csv(p.parent / "eval.csv")}
              for name, p in inputs.items()}
    outcomes = {n: _outcomes(c["eval"]) for n, c in curves.items()}
    agg = aggregate(cfg, outcomes)
    several_n = len({a.n for a in cfg.adapters}) > 1
    n_seeds = min((len(r["seeds"]) for r in agg), default=0)
    ci = "seeds_ci" if n_seeds > 1 else "wilson"
    loss = _mean_loss(cfg, {n: [(r["step"], r["loss"]) for r in c["loss"]] for n, c in curves.items()},
                      several_n)
    img = lines(ctx.dir / "convergence.png", [
        {"xlabel": "step", "ylabel": "training loss" + (" (mean over seeds)" if n_seeds > 1 else ""),
         "series": loss},
        *[{"xlabel": "step", "ylabel": f"validation rate:\n{what}", "ylim": (0, 1),
           "series": _series(agg, m, several_n, ci)} for m, what in CURVE_MEASURES.items()]])
    verdict = convergence_verdict(cfg, agg, outcomes)
    ctx.data["curves"] = curves
    ctx.data["convergence"] = {"points": agg, "verdict": verdict, "plotted_interval": ci}
    if not agg:
        ctx.section("Convergence by precision (training loss)", image=img, rank=30)
        return {"adapters": len(curves)}
    q = agg[0]["questions"]
    shown = ("the mean over seeds, with the 95% percentile-bootstrap interval over the seeds' rates"
             if ci == "seeds_ci" else "the rate with its 95% Wilson interval")
    ctx.section("Convergence by precision (validation rates during training)", rank=30, image=img,
                table=table(_table_rows(agg, several_n, n_seeds > 1)), text=(
        f"Every few steps the student answers the {q} validation questions (greedy); each answer is "
        "in tone by the verdict classifier and content preserved by the content check, as in the "
        f"evaluation. {n_seeds} seed(s) per precision. The plot shows {shown}. The table also gives "
        f"the rate of all seeds' answers pooled ({n_seeds} x {q}) with its Wilson interval, which "
        "treats every (seed, question) as independent and so is narrower than the spread between "
        "seeds can justify. " + " ".join(verdict["sentences"])))
    if len({r["precision"] for r in agg}) > 1 and verdict["sentences"]:
        ctx.section("Verdict: convergence by precision", rank=2, text=" ".join(verdict["sentences"]))
    metrics = {"adapters": len(curves)}
    for p, f in verdict["final"].items():
        metrics |= {f"curve_{p}_final_{m}_rate": f[m] for m in CURVE_MEASURES}
        metrics[f"curve_{p}_steps_to_target_both"] = verdict["steps_to_target"]["both"].get(p)
    metrics |= {f"curve_{k}_p": round(t["p"], 4) for k, t in verdict["tests"].items()}
    return metrics
