"""The explanations study's evaluation and summary: every tuning run and the prompting baselines
on the same test expressions, accuracy with intervals, paired tests against the answer-only run,
accuracy against N, the N (and steps) needed to reach the threshold, and the paper's numbers."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from .. import progress
from ..evaluate import stats
from ..evaluate.compare import System, answer
from ..io import hash_path, read_json, read_jsonl, write_json, write_jsonl
from ..lm.base import GenParams
from ..lm.registry import make_student
from ..report.plots import lines
from ..report.render import table
from .explain_config import EvaluateStage, Run, SummaryStage, model_tag
from .explain_stages import records, token_budget, trained_on


def _demos(train: list[dict], k: int, level: str, template: str) -> list[dict]:
    """k worked examples as chat turns, exactly as a run of this level trains on them: the
    answer alone, or the explanation then the answer."""
    return [m for r in records(train[:k], level) for m in trained_on(r, level, template)]


def _ask(demos: list[dict]):
    return lambda it: demos + records([it], "none")[0]["messages"][:1]


BASELINES = {"few_shot": "none", "few_shot_explained": "long"}
"""Prompting baselines (the strongest a user would try without tuning) and the level of their
demos: answer-only few-shot, and few-shot with long explanations (chain of thought)."""
HEADLINE = ("long", "medium", "short")
"""The level the verdicts test against the answer-only run, fixed before looking: the most
detailed one trained (the paper's strongest), not the best one on the test set."""


def _entries(cfg: EvaluateStage, model: str, train: list[dict]) -> list[tuple[str, str, object, Run | None]]:
    """(system name, level, prompt, run) for the model's baselines and its runs."""
    out = []
    if cfg.few_shot:
        out += [(f"{model_tag(model)}:{b}", lv, _ask(_demos(train, cfg.few_shot, lv, cfg.template)), None)
                for b, lv in BASELINES.items() if b in cfg.baselines]
    return out + [(r.name, r.level, _ask([]), r) for r in cfg.runs if r.model == model]


def _score(items: list[dict], outs: list[str]) -> dict:
    from ..data.listops import parse_answer

    parsed = [parse_answer(o) for o in outs]
    return {"ok": [p == it["answer"] for p, it in zip(parsed, items)],
            "unparsable": sum(p is None for p in parsed), "answers": outs}


def _answer_all(cfg: EvaluateStage, inputs: dict, sets: dict, train: list[dict], cache: Path):
    """Every system's outcomes on every set: {system: {set: {ok, unparsable, answers}}}. One base
    model per student serves its baselines and LoRA runs (adapters swap); a full fine-tune is
    loaded for its own turn only, named by its weights' hash so a retrained model never meets
    another's cached answers."""
    import gc

    from ..models.load import load_tokenizer

    majority = Counter(ex["answer"] for ex in train).most_common(1)[0][0]
    res: dict[str, dict] = {"majority": {s: _score(items, [str(majority)] * len(items))
                                         for s, items in sets.items()}}
    # every set in one call per system: the decode slots stay full; rows stop at their own EOS,
    # so the budget of the set with the longest targets costs the others nothing
    every = [it for items in sets.values() for it in items]
    for model in cfg.models:
        tok, base = load_tokenizer(model), None
        entries = _entries(cfg, model, train)
        budgets = {lv: token_budget(tok, records(every, lv), lv, cfg.template) for lv in {e[1] for e in entries}}
        for name, level, prompt, run in entries:
            if run is not None and cfg.method == "full":
                d = inputs[run.name].parent
                lm, adapter = make_student(str(d), cfg.eval_batch_size, cfg.device, cache,
                                           name=f"local:{run.name}:{hash_path(d / 'model.safetensors')[:16]}"), None
            else:
                base = base or make_student(model, cfg.eval_batch_size, cfg.device, cache)
                lm, adapter = base, (str(inputs[run.name].parent) if run is not None else None)
            progress.log(f"evaluate: {name} on {len(every)} expressions ({', '.join(sets)})")
            system = System(name, lm, prompt, adapter=adapter,
                            params=GenParams(max_new_tokens=budgets[level]))
            texts, start = answer([system], every, GenParams())[name], 0
            for s, items in sets.items():
                res.setdefault(name, {})[s] = _score(items, texts[start:start + len(items)])
                start += len(items)
            if lm is not base:
                del lm
                gc.collect()
    return res


# -- rates over seeds ---------------------------------------------------------------------------
def _per_seed(res: dict, names: list[str], set_name: str) -> list[list[bool]]:
    return [res[n][set_name]["ok"] for n in names]


def _item_means(per_seed: list[list[bool]]) -> list[float]:
    return [sum(col) / len(col) for col in zip(*per_seed)]


def _rate(per_seed: list[list[bool]], seed: int = 0) -> dict:
    """Accuracy with its interval: Wilson for one seed; over several, the mean of each item's
    share of correct seeds with a bootstrap over items (items, not item x seed, are the unit)."""
    if len(per_seed) == 1:
        r = stats.rate_summary(per_seed[0])
        return {"n": r["n"], "accuracy": round(r["rate"], 4), "ci": [round(c, 4) for c in r["ci"]],
                "interval": "Wilson"}
    m = stats.mean_summary(_item_means(per_seed), seed=seed)
    return {"n": m["n"], "seeds": len(per_seed), "accuracy": round(m["mean"], 4),
            "ci": [round(c, 4) for c in m["ci"]], "interval": "bootstrap over items"}


def _cell(r: dict) -> str:
    return stats.fmt_ci(r["accuracy"], tuple(r["ci"]))


def _compare(name_a: str, a: list[list[bool]], name_b: str, b: list[list[bool]], what: str,
             seed: int = 0) -> dict:
    """McNemar on the same items for one seed each; a paired bootstrap over items of each
    item's share of correct seeds otherwise."""
    if len(a) == 1 and len(b) == 1:
        return stats.compare_rates(name_a, a[0], name_b, b[0], what)
    return stats.compare_means(name_a, _item_means(a), name_b, _item_means(b), what, seed=seed)


def _group(runs: list[Run]) -> dict[tuple[str, str, int], list[str]]:
    """(model, level, N) -> its runs' names (one per seed), in seed order."""
    g: dict[tuple[str, str, int], list[str]] = {}
    for r in runs:
        g.setdefault((r.model, r.level, r.n), []).append(r.name)
    return g


def _points(cfg: EvaluateStage, res: dict, sets: dict) -> list[dict]:
    """Per (model, level, N): accuracy per set, unparsable answers, and the paired test against
    the answer-only run at the same model, N and seeds."""
    groups, rows = _group(cfg.runs), []
    for (model, level, n), names in groups.items():
        row = {"model": model, "level": level, "n": n, "seeds": len(names),
               **{f"{s}_unparsable": sum(res[x][s]["unparsable"] for x in names) for s in sets}}
        ref = groups.get((model, "none", n))
        for s in sets:
            row[s] = _rate(_per_seed(res, names, s), cfg.seed)
            if level != "none" and ref and len(ref) == len(names):
                row[f"{s}_vs_none"] = _compare(level, _per_seed(res, names, s), "answer only",
                                               _per_seed(res, ref, s), f"{s} accuracy", cfg.seed)
        rows.append(row)
    return rows


def _first_step(path: Path, threshold: float) -> int | None:
    """The first logged step whose validation accuracy reaches the threshold (None: never)."""
    with open(path, encoding="utf-8") as f:
        return next((int(r["step"]) for r in csv.DictReader(f)
                     if float(r["accuracy"]) >= threshold - 1e-9), None)


def _to_threshold(cfg: EvaluateStage, points: list[dict], inputs: dict) -> list[dict]:
    """Per (model, level): the smallest N whose test accuracy reaches the threshold, and, with
    validation curves, the first step that reaches it for each N and seed."""
    out = []
    for model in cfg.models:
        for level in dict.fromkeys(r.level for r in cfg.runs):
            pts = sorted((p for p in points if p["model"] == model and p["level"] == level),
                         key=lambda p: p["n"])
            if not pts:
                continue
            hit = next((p["n"] for p in pts if p["test"]["accuracy"] >= cfg.threshold - 1e-9), None)
            steps = []
            for r in cfg.runs:
                curve = inputs.get(f"{r.name}.curve")
                if r.model == model and r.level == level and curve is not None:
                    s = _first_step(curve, cfg.threshold)
                    steps.append(f"N={r.n} seed {r.seed}: {s if s is not None else 'never'}")
            out.append({"model": model, "level": level,
                        "examples_to_threshold": hit if hit is not None else f"> {pts[-1]['n']}",
                        "steps_to_threshold": "; ".join(steps) or "no curve"})
    return out


def headline_level(levels) -> str | None:
    return next((lv for lv in HEADLINE if lv in levels), None)


def _verdicts(cfg: EvaluateStage, points: list[dict], res: dict) -> list[str]:
    """At each model's largest N: every explanation level against the answer-only run (test
    set), the headline level on the deeper set, and the headline level against the stronger
    prompting baseline."""
    out, groups = [], _group(cfg.runs)
    for model in cfg.models:
        mine = [p for p in points if p["model"] == model]
        if not mine:
            continue
        top = max(p["n"] for p in mine)
        at = {p["level"]: p for p in mine if p["n"] == top}
        out += [f"{model}, N = {top}: " + p["test_vs_none"]["verdict"] for p in at.values()
                if "test_vs_none" in p]
        head = headline_level(at)
        if head and "deeper_vs_none" in at[head]:
            out.append(f"{model}, N = {top}, deeper expressions: " + at[head]["deeper_vs_none"]["verdict"])
        base = [f"{model_tag(model)}:{b}" for b in BASELINES if f"{model_tag(model)}:{b}" in res]
        tuned = head or ("none" if "none" in at else None)
        if base and tuned:
            bl = max(base, key=lambda b: sum(res[b]["test"]["ok"]))  # the stronger one: conservative
            out.append(f"{model}, N = {top}: " + _compare(
                f"tuned ({tuned})", _per_seed(res, groups[(model, tuned, top)], "test"),
                bl.split(":", 1)[1].replace("_", " "), _per_seed(res, [bl], "test"),
                "test accuracy", cfg.seed)["verdict"])
    return out


def _plot(d: Path, cfg: EvaluateStage, points: list[dict]) -> Path | None:
    panels = []
    for model in cfg.models:
        series = {}
        for p in sorted((p for p in points if p["model"] == model), key=lambda p: p["n"]):
            series.setdefault(p["level"], []).append((p["n"], p["test"]["accuracy"], *p["test"]["ci"]))
        panels.append({"xlabel": f"training examples N ({model})", "ylabel": "test accuracy (95% CI)",
                       "ylim": (0, 1), "series": series})
    return lines(d / "accuracy_vs_n.png", panels)


def _tables(cfg: EvaluateStage, points: list[dict], res: dict, sets: dict) -> dict:
    rows = []
    for name in ["majority", *(n for n in res if ":" in n)]:
        rows.append({"system": name, "N": "", "seeds": "",
                     **{f"{s} accuracy [95% CI]": _cell(_rate([res[name][s]["ok"]])) for s in sets},
                     **{f"{s} unparsable": res[name][s]["unparsable"] for s in sets}})
    for p in points:
        row = {"system": f"{model_tag(p['model'])} tuned, {p['level']}", "N": p["n"], "seeds": p["seeds"]}
        for s in sets:
            row[f"{s} accuracy [95% CI]"] = _cell(p[s])
            row[f"{s} unparsable"] = p[f"{s}_unparsable"]
            if f"{s}_vs_none" in p:
                row[f"{s}: p vs answer only"] = round(p[f"{s}_vs_none"]["test"]["p"], 4)
        rows.append(row)
    return table(rows, list(dict.fromkeys(k for r in rows for k in r)))


def evaluate_stage(cfg: EvaluateStage, inputs: dict[str, Path], ctx) -> dict:
    train = read_jsonl(inputs["train"])
    sets = {"test": read_jsonl(inputs["test"])}
    if "deeper" in inputs:
        sets["deeper"] = read_jsonl(inputs["deeper"])
    res = _answer_all(cfg, inputs, sets, train, ctx.cache)
    points = _points(cfg, res, sets)
    reach = _to_threshold(cfg, points, inputs)
    verdicts = _verdicts(cfg, points, res)
    write_jsonl(ctx.dir / "answers.jsonl", [
        {"system": name, "set": s, "expression": it["expression"], "gold": it["answer"], "answer": a, "ok": o}
        for name, per in res.items() for s, items in sets.items()
        for it, a, o in zip(items, per[s]["answers"], per[s]["ok"])])
    runs = {r.name: {**read_json(inputs[r.name]), **{s: _rate([res[r.name][s]["ok"]]) for s in sets},
                     **{f"{s}_unparsable": res[r.name][s]["unparsable"] for s in sets}} for r in cfg.runs}
    baselines = {n: {s: _rate([v[s]["ok"]]) for s in sets} for n, v in res.items() if n not in runs}
    write_json(ctx.dir / "metrics.json", {"task": cfg.task, "threshold": cfg.threshold, "runs": runs,
                                          "baselines": baselines, "points": points,
                                          "to_threshold": reach, "verdicts": verdicts})
    _sections(ctx, cfg, points, res, sets, reach, verdicts)
    top = {(p["model"], p["level"]): p for p in sorted(points, key=lambda p: p["n"])}
    return {f"{cfg.task}_{model_tag(m)}_{lv}_acc": p["test"]["accuracy"] for (m, lv), p in top.items()}


def _sections(ctx, cfg, points, res, sets, reach, verdicts) -> None:
    t = cfg.task
    ctx.section(f"{t}: accuracy by system", rank=20, table=_tables(cfg, points, res, sets), text=(
        "Test expressions have the training depth; deeper ones are one level deeper than any seen "
        "in training. An answer that does not parse counts as wrong (unparsable: over all seeds). "
        "Intervals: Wilson for one seed; with several, a bootstrap over expressions of each "
        "expression's share of correct seeds. p: McNemar (one seed) or a paired bootstrap (several) "
        "against the answer-only run with the same model, N and seeds. majority: always the most "
        "frequent training answer."))
    ctx.section(f"{t}: verdicts", text="\n\n".join(verdicts) or "no paired comparison in this grid",
                rank=21)
    img = _plot(ctx.dir, cfg, points)
    if img:
        ctx.section(f"{t}: test accuracy against N", image=img, rank=22)
    ctx.section(f"{t}: examples and steps to reach accuracy {cfg.threshold:.2f}", rank=23,
                table=table(reach), text=("The smallest N in the grid whose test accuracy reaches "
                                          "the threshold; steps: the first validation-curve step "
                                          "that reaches it, for each N and seed."))
    first = sets["test"][:4]
    top = max(r.n for r in cfg.runs)
    names = [n for n in res if n == "majority" or ":" in n] + [r.name for r in cfg.runs if r.n == top]
    rows = [{"expression": it["expression"], "gold": it["answer"],
             **{n: res[n]["test"]["answers"][i][-160:] for n in names}} for i, it in enumerate(first)]
    ctx.section(f"{t}: side-by-side answers (first test expressions)", table=table(rows), rank=80)
    ctx.data[f"explain_{t}"] = {"points": points, "to_threshold": reach, "verdicts": verdicts}


PAPER = [
    {"task": "Explained-ListOps-30", "model": "T5-small (60M), full fine-tuning", "none": 0.651, "long": 0.878},
    {"task": "Explained-ListOps-30", "model": "T5-3B, full fine-tuning", "none": 0.658, "long": 0.993},
    {"task": "modular sum", "model": "T5-small (60M), full fine-tuning", "none": "chance", "long": 0.757},
]
"""Ballout et al. 2023, the figures this study is compared with (their training sets, T5 models)."""


def summary_stage(cfg: SummaryStage, inputs: dict[str, Path], ctx) -> dict:
    """The headline: each task and model at its largest N, every level's test accuracy, and the
    pre-registered comparison (the most detailed level against answer only) with its verdict."""
    rows, verdicts, out = [], [], {}
    for task in cfg.tasks:
        m = read_json(inputs[task])
        for model in dict.fromkeys(p["model"] for p in m["points"]):
            pts = [p for p in m["points"] if p["model"] == model]
            top = max(p["n"] for p in pts)
            at = {p["level"]: p for p in pts if p["n"] == top}
            row = {"task": task, "model": model, "N": top,
                   **{lv: _cell(p["test"]) for lv, p in at.items()}}
            head = headline_level(at)
            if head and "test_vs_none" in at[head]:
                cmp = at[head]["test_vs_none"]
                row[f"{head} vs answer only: p"] = round(cmp["test"]["p"], 4)
                verdicts.append(f"{task}, {model}, N = {top}: {cmp['verdict']}")
                out[f"{task}_{model_tag(model)}_{head}_vs_none_p"] = round(cmp["test"]["p"], 4)
            rows.append(row)
    ctx.section("Explanations: test accuracy at the largest N", rank=10, table=table(
        rows, list(dict.fromkeys(k for r in rows for k in r))), text=(
        "Accuracy on held-out expressions (95% intervals) for each level the model was trained "
        "with. The test pairs the most detailed level trained (fixed in advance, not picked on the "
        "test set) with the answer-only run on the same expressions.\n\n" + "\n\n".join(verdicts)))
    ctx.section("The paper's numbers", rank=11, table=table(PAPER), text=(
        "Ballout et al. 2023 fine-tuned whole T5 models on their Explained-ListOps-30 training data; "
        "this grid trains decoder models on far fewer examples, with LoRA unless method is full, "
        "so the absolute numbers are not expected to match: what is compared is the direction and "
        "size of the gain from explanations."))
    ctx.data["explain_summary"] = {"rows": rows, "verdicts": verdicts}
    return out
