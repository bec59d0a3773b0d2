"""The knowledge-intervention study's evaluation and summary: the base model and every tuned set
answer the HOMO / ID / OOD questions zero-shot (option probabilities, no generation); accuracy
with Wilson intervals; McNemar of harmonious and self-aligning against incompatible; how far each
tuned model's option ranking moved from the base model's (rank correlation, KL); the Spearman
partial correlation of that consistency with accuracy across the mixing ratios; the paper's
numbers."""
from __future__ import annotations

import gc
from pathlib import Path

from ..evaluate import stats
from ..evaluate.mc import consistency, debias, option_probs, partial_spearman, predictions
from ..io import hash_path, read_json, read_jsonl, write_json, write_jsonl
from ..lm.registry import make_student
from ..report.plots import lines
from ..report.render import table
from .explain_config import model_tag
from .knowledge_config import EvaluateStage, SummaryStage, ratio_of

SPLITS = ("homo", "id", "ood")
CONTRASTS = (("harmonious", "incompatible"), ("self_aligning", "incompatible"))
"""The paired tests, fixed in advance: the paper's two headline comparisons."""


def _probs(cfg: EvaluateStage, inputs: dict, every: list[dict], cache: Path) -> dict[str, list[list[float]]]:
    """Each system's option probabilities on every question: the base, then each set's tuned
    model (LoRA adapters swapped on one loaded base; a full fine-tune loaded for its turn only,
    named by its weights' hash so a retrained model never meets another's cached answers)."""
    from ..data.mc import zero_shot

    chats = [zero_shot(q, cfg.score_by) for q in every]
    base = make_student(cfg.model, cfg.batch_size, cfg.device, cache)
    out = {"base": option_probs(base, chats, every, cfg.score_by)}
    for s in cfg.sets:
        d = inputs[s].parent
        if cfg.method == "full":
            lm = make_student(str(d), cfg.batch_size, cfg.device, cache,
                            name=f"local:{model_tag(cfg.model)}-{s}:{hash_path(d / 'model.safetensors')[:16]}")
            out[s] = option_probs(lm, chats, every, cfg.score_by)
            del lm
            gc.collect()
        else:
            base.set_adapter(str(d))
            try:
                out[s] = option_probs(base, chats, every, cfg.score_by)
            finally:
                base.set_adapter(None)
    return out


def _rate(ok: list[bool]) -> dict:
    r = stats.rate_summary(ok)
    return {"n": r["n"], "accuracy": round(r["rate"], 4), "ci": [round(c, 4) for c in r["ci"]]}


def _cell(r: dict) -> str:
    return stats.fmt_ci(r["accuracy"], tuple(r["ci"]))


def evaluate_stage(cfg: EvaluateStage, inputs: dict[str, Path], ctx) -> dict:
    split_qs = {s: read_jsonl(inputs[s]) for s in SPLITS}
    every = [q for s in SPLITS for q in split_qs[s]]
    # each system debiased by its own prior over the test questions, before and after tuning
    probs = {n: debias(p, cfg.debias) for n, p in _probs(cfg, inputs, every, ctx.cache).items()}
    preds = {name: predictions(every, p) for name, p in probs.items()}
    at, start = {}, 0  # split -> slice of `every`
    for s in SPLITS:
        at[s] = slice(start, start + len(split_qs[s]))
        start += len(split_qs[s])
    res: dict = {}
    for name, pr in preds.items():
        for s in SPLITS:
            ok = [p["correct"] for p in pr[at[s]]]
            row = {**_rate(ok), "ok": ok}
            if name != "base":
                c = consistency(probs["base"][at[s]], probs[name][at[s]])
                row |= {"rank_corr": round(c["mean_rank_corr"], 4), "kl": round(c["mean_kl"], 4)}
            res.setdefault(name, {})[s] = row
    tests = []
    for a, b in CONTRASTS:
        if a in res and b in res:
            for s in SPLITS:
                c = stats.compare_rates(a.replace("_", "-"), res[a][s]["ok"], b, res[b][s]["ok"],
                                        f"{s.upper()} accuracy")
                tests.append({"a": a, "b": b, "split": s, "p": round(c["test"]["p"], 4),
                              "diff": round(res[a][s]["accuracy"] - res[b][s]["accuracy"], 4),
                              "verdict": c["verdict"]})
    write_jsonl(ctx.dir / "answers.jsonl", [
        {"system": name, **p} for name, pr in preds.items() for p in pr])
    clean = {n: {s: {k: v for k, v in r.items() if k != "ok"} for s, r in per.items()} for n, per in res.items()}
    write_json(ctx.dir / "metrics.json", {"model": cfg.model, "systems": clean, "tests": tests,
                                          "sets": {s: read_json(inputs[s]) for s in cfg.sets}})
    _sections(ctx, cfg, clean, tests)
    tag = model_tag(cfg.model)
    return {f"{tag}_{n}_{s}_acc": r[s]["accuracy"] for n, r in clean.items() for s in SPLITS}


def _sections(ctx, cfg: EvaluateStage, res: dict, tests: list[dict]) -> None:
    rows = []
    for name, per in res.items():
        row = {"system": name if name == "base" else f"tuned on {name}",
               "self-aligning share": "" if ratio_of(name) is None else ratio_of(name)}
        for s in SPLITS:
            row[f"{s.upper()} accuracy [95% CI]"] = _cell(per[s])
        for s in SPLITS:
            row[f"{s.upper()} rank corr"] = per[s].get("rank_corr", "")
        row["KL (mean over splits)"] = (round(sum(per[s]["kl"] for s in SPLITS) / 3, 4)
                                        if "kl" in per["homo"] else "")
        rows.append(row)
    ctx.section(f"{cfg.model}: zero-shot accuracy after tuning on each set", rank=30, table=table(
        rows, list(dict.fromkeys(k for r in rows for k in r))), text=(
        "Zero-shot multiple choice, the prediction being the most probable option letter "
        f"(option probabilities by {cfg.score_by}, renormalized over A-D, debias {cfg.debias}). "
        "Wilson 95% intervals. "
        "rank corr: per question, the Pearson correlation of the ranks of the four option "
        "probabilities before (base) and after tuning, averaged over questions (1 = the model "
        "kept its order of preference); KL: KL(base || tuned) over the options, in nats."))
    ctx.section(f"{cfg.model}: verdicts", rank=31, text="\n\n".join(t["verdict"] for t in tests)
                or "no paired comparison (the recipe trains neither harmonious nor incompatible)")
    series: dict[str, list] = {}
    for name, per in res.items():
        r = ratio_of(name)
        if r is not None:
            for s in SPLITS:
                series.setdefault(s.upper(), []).append((r, per[s]["accuracy"], *per[s]["ci"]))
    img = lines(ctx.dir / "accuracy_vs_ratio.png", [
        {"xlabel": f"self-aligning share of the set ({model_tag(cfg.model)})",
         "ylabel": "zero-shot accuracy (95% CI)", "ylim": (0, 1),
         "series": {k: sorted(v) for k, v in series.items()}}])
    if img:
        ctx.section(f"{cfg.model}: accuracy against the mixing ratio", image=img, rank=32)


PAPER = [
    {"comparison": "harmonious - incompatible", "HOMO": 11.3, "ID": 14.6, "OOD": 14.6},
    {"comparison": "self-aligning - incompatible", "HOMO": 5.3, "ID": 9.8, "OOD": 7.0},
]
"""Ren et al. 2024 (Llama-2 7B / 13B, Mistral-7B, full fine-tuning on MMLU-derived sets), points
of accuracy averaged over their models; their consistency-accuracy partial correlation was
r = 0.78-0.87, and intermediate mixing ratios did best."""


def summary_stage(cfg: SummaryStage, inputs: dict[str, Path], ctx) -> dict:
    """The headline table (per model: accuracy gaps with their McNemar p), the partial
    correlation of consistency with accuracy across the mixing ratios, the paper's numbers."""
    rows, verdicts, points, out, accs = [], [], [], {}, []
    for model in cfg.models:
        m = read_json(inputs[model_tag(model)])
        for t in m["tests"]:
            key = f"{t['a']} - {t['b']}"
            row = next((r for r in rows if r["model"] == model and r["comparison"] == key), None)
            if row is None:
                row = {"model": model, "comparison": key}
                rows.append(row)
            row[f"{t['split'].upper()} (points)"] = f"{100 * t['diff']:+.1f}"
            row[f"{t['split'].upper()} p"] = t["p"]
            verdicts.append(f"{model}: {t['verdict']}")
            out[f"{model_tag(model)}_{t['a']}_vs_{t['b']}_{t['split']}_p"] = t["p"]
        base = m["systems"]["base"]
        for name, per in m["systems"].items():
            accs.append({"model": model, "system": name if name == "base" else f"tuned on {name}",
                         "questions per set": "" if name == "base" else m["sets"][name]["n"],
                         **{f"{s.upper()} [95% CI]": _cell(per[s]) for s in SPLITS},
                         "mean rank corr": (round(sum(per[s]["rank_corr"] for s in SPLITS) / 3, 3)
                                            if "rank_corr" in per["homo"] else "")})
            if ratio_of(name) is not None:
                points += [(per[s]["rank_corr"], per[s]["accuracy"], base[s]["accuracy"]) for s in SPLITS]
    ctx.section("Knowledge intervention: zero-shot accuracy per set", rank=9, table=table(accs), text=(
        "Each student probed, its sets built from its own answers, tuned on each set, and tested "
        "zero-shot on held-out questions of the training domains (HOMO), related domains (ID) and "
        "the others (OOD). Wilson 95% intervals. mean rank corr: how much of the base model's order "
        "of preference over the options survived tuning (1 = all of it)."))
    text = ""
    if len(points) >= 4:
        pc = partial_spearman(*zip(*points))
        out["consistency_accuracy_partial_r"] = round(pc["r"], 4)
        text = (f"Across the mixing ratios ({len(points)} points: each model, mixed set and split), "
                f"the Spearman partial correlation of consistency (mean rank correlation) with "
                f"accuracy, controlling for the base model's accuracy on that split, is "
                f"r = {pc['r']:.2f} (p = {pc['p']:.3g}, n = {pc['n']}).")
    ctx.section("Knowledge intervention: the verdicts", rank=10, table=table(
        rows, list(dict.fromkeys(k for r in rows for k in r))), text=(
        "Accuracy differences in points (tuned on the first set minus tuned on the second, zero-shot, "
        "same questions) with McNemar p.\n\n" + "\n\n".join(verdicts) + ("\n\n" + text if text else "")))
    ctx.section("The paper's numbers", rank=11, table=table(PAPER), text=(
        "Ren et al. 2024 fully fine-tuned 7-13B models on thousands of MMLU-derived examples; this "
        "default tunes LoRA adapters on 135M-0.5B students with a few dozen questions per set, and "
        "those students are near chance on many of the questions, so their 'known' answers are "
        "partly lucky guesses. What is compared is the direction of each gap, and the sign of the "
        "consistency-accuracy correlation (theirs r = 0.78-0.87)."))
    ctx.data["knowledge_summary"] = {"rows": rows, "verdicts": verdicts, "points": points}
    return out
