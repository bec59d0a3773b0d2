"""The BetterTogether study's stages: one optimizer chain (compile, then test every program it
yields), and the table across tasks, strategies and seeds."""
from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path

from .. import progress
from ..errors import require
from ..evaluate import stats
from ..io import read_json, write_json
from ..report.render import table
from .bettertogether_config import ChainStage, Sizes, TableStage

METRIC = {"multihop": "em", "wordproblems": "correct", "iris": "accuracy"}
"""The score each task's optimizers maximize and the table reports."""
MEASURES = {"multihop": ["em", "f1", "recall"], "wordproblems": ["correct", "parsed"],
            "iris": ["accuracy", "valid"]}
CONSTANT = "constant answer (reference)"
"""The table's row for one answer to every item: the training set's most common."""
NAMES = {"multihop": "two-hop QA (EM)", "wordproblems": "word problems (accuracy)",
         "iris": "Iris (accuracy)"}
PAPER = [  # Soylu et al. 2024, Table 1, Llama-3-8B-Instruct (HotPotQA EM, GSM8K, Iris; %)
    {"strategy": "vanilla", "HotPotQA": "31.6", "GSM8K": "72.7", "Iris": "48.0"},
    {"strategy": "p", "HotPotQA": "46.9", "GSM8K": "77.9", "Iris": "79.3"},
    {"strategy": "w", "HotPotQA": "34.8", "GSM8K": "75.1", "Iris": "37.3"},
    {"strategy": "p -> w -> p", "HotPotQA": "46.7", "GSM8K": "77.0", "Iris": "79.3"},
]
BIG = 10 ** 6  # "no limit" for DSPy's error counts: a small model's unparsable reply scores 0
_COST = ("generations", "prompt_tokens", "completion_tokens")


def _totals(usage: dict) -> dict:
    return {k: sum(u[k] for u in usage.values()) for k in _COST}


def metered(key: str, optimizer, provider, steps: list[dict]):
    """`optimizer` wrapped to record each compile's LM calls, tokens, training and wall time
    (and its error, if it raised) in `steps`. BetterTogether passes an optimizer only the
    arguments its `compile` accepts, so the wrapper shows the same signature."""
    from dspy.teleprompt.teleprompt import Teleprompter

    class Metered(Teleprompter):
        def compile(self, student, **kwargs):
            before, jobs, t0 = _totals(provider.usage()), len(provider.jobs), time.perf_counter()
            progress.log(f"step {len(steps) + 1}: {key} ({type(optimizer).__name__})")
            row = {"step": key}
            try:
                return optimizer.compile(student, **kwargs)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                raise
            finally:
                after = _totals(provider.usage())
                row |= {k: after[k] - before[k] for k in _COST}
                row["train_seconds"] = round(sum(j.seconds for j in provider.jobs[jobs:]), 1)
                row["train_examples"] = sum(j.examples for j in provider.jobs[jobs:])
                row["seconds"] = round(time.perf_counter() - t0, 1)
                steps.append(row)

    Metered.compile.__signature__ = inspect.signature(type(optimizer).compile)
    return Metered()


def _output(pred) -> dict:
    """What a prediction said, for side-by-side samples (retrieved passages left out)."""
    try:
        items = dict(pred.items())
    except Exception:
        return {}
    return {k: str(v)[:300] for k, v in items.items() if k != "context"}


def _test(task, program, test, threads: int, provider) -> tuple[list[dict], dict]:
    dspy = require("dspy", "programs")
    for lm in {id(p.lm): p.lm for p in program.predictors()}.values():
        lm.launch()
    before, t0 = _totals(provider.usage()), time.perf_counter()
    ev = dspy.Evaluate(devset=test, metric=task.metric, num_threads=threads, max_errors=BIG,
                       failure_score=0.0, display_progress=False, provide_traceback=False)
    res = ev(program)
    items = [{"id": ex.get("id"), **task.scores(ex, pred), "output": _output(pred)}
             for ex, pred, _ in res.results]
    after = _totals(provider.usage())
    return items, {**{k: after[k] - before[k] for k in _COST},
                   "seconds": round(time.perf_counter() - t0, 1)}


def chain_stage(c: ChainStage, inputs: dict[str, Path], ctx) -> dict:
    from ..programs import tasks as T
    from ..programs.adapter import FieldAdapter
    from ..programs.provider import AdaptlabProvider

    dspy = require("dspy", "programs")
    logging.getLogger("dspy").setLevel(logging.WARNING)
    task = T.get(c.task)
    train, val, test = task.load(seed=c.seed, n_train=c.sizes.train, n_val=c.sizes.val,
                                 n_test=c.sizes.test)
    provider = AdaptlabProvider(c.model, ctx.work / "adapters", batch_size=c.decode_slots,
                                device=c.device, precision=c.precision, tune=c.tune)
    steps: list[dict] = []
    try:
        lm = provider.lm(temperature=0.0, max_tokens=c.max_tokens, cache=False, num_retries=2)
        program = task.program()
        program.set_lm(lm)
        with dspy.context(lm=lm, adapter=FieldAdapter(), max_errors=BIG):
            p = dspy.BootstrapFewShotWithRandomSearch(
                metric=task.metric, max_bootstrapped_demos=c.max_demos,
                max_labeled_demos=c.max_demos, num_candidate_programs=c.candidates,
                num_threads=c.threads, max_errors=BIG)
            w = dspy.BootstrapFinetune(metric=task.metric, num_threads=c.threads)
            bt = dspy.BetterTogether(metric=task.metric, p=metered("p", p, provider, steps),
                                     w=metered("w", w, provider, steps))
            t0 = time.perf_counter()
            best = bt.compile(program, trainset=list(train), valset=list(val),
                              num_threads=c.threads, max_errors=BIG, seed=c.seed,
                              strategy=c.chain)
            compile_seconds = round(time.perf_counter() - t0, 1)
            found = {cand["strategy"]: cand for cand in best.candidate_programs}
            parts = c.chain.split(" -> ")
            results, cost = {}, {k: 0 for k in (*_COST, "train_seconds", "seconds")}
            for k in range(len(parts) + 1):
                strategy = " -> ".join(parts[:k]) or "vanilla"
                if k:
                    for key in cost:
                        cost[key] += steps[k - 1].get(key, 0) if k - 1 < len(steps) else 0
                if not k and not c.test_vanilla:
                    continue  # another chain of this task and seed tests it
                failed = next((s["error"] for s in steps[:k] if "error" in s), None)
                cand = found.get(" -> ".join(parts[:k]))
                if failed or cand is None:
                    results[strategy] = {"failed": failed or "no program recorded", "cost": dict(cost)}
                    continue
                progress.log(f"testing {strategy} on {len(test)} {c.task} examples")
                items, test_cost = _test(task, cand["program"], test, c.threads, provider)
                lms = sorted({p.lm.model for p in cand["program"].predictors()})
                results[strategy] = {"failed": None, "val": cand["score"], "test": items,
                                     "cost": {k: round(v, 1) for k, v in cost.items()},
                                     "test_cost": test_cost, "models": lms}
                try:
                    cand["program"].save(str(ctx.dir / f"program-{strategy.replace(' -> ', '')}.json"))
                except Exception as e:  # a program that cannot be saved is still measured
                    progress.log(f"could not save the {strategy} program: {type(e).__name__}")
    finally:
        usage, jobs = provider.usage(), [j.__dict__ for j in provider.jobs]
        provider.close()
    flag = bool(best.flag_compilation_error_occurred)
    write_json(ctx.dir / "results.json", {
        "task": c.task, "seed": c.seed, "chain": c.chain, "model": c.model,
        "compile_seconds": compile_seconds, "flag_compilation_error_occurred": flag,
        "steps": steps, "usage": usage, "jobs": jobs, "strategies": results})
    metric = METRIC[c.task]
    rows = [{"strategy": s, "val": r.get("val"),
             "test": (round(sum(i[metric] for i in r["test"]) / len(r["test"]), 3)
                      if r.get("test") else None),
             "failed": r["failed"] or "", "generations": r["cost"]["generations"],
             "train s": r["cost"]["train_seconds"], "wall s": r["cost"]["seconds"]}
            for s, r in results.items()]
    ctx.section(f"{c.task}, seed {c.seed}: chain {c.chain}", rank=40, table=table(rows), text=(
        f"BetterTogether compile: {compile_seconds} s; compilation error flag: {flag}. "
        "Validation scores are BetterTogether's (%); test is the metric's mean; cost is each "
        "strategy's optimization steps, cumulative along the chain."))
    return {**{f"{c.task}/{row['strategy']}": row["test"] for row in rows
               if row["test"] is not None},
            "compile_seconds": compile_seconds, "compilation_error": flag}


# -- the table ----------------------------------------------------------------------------------

def _outcomes(runs: list[dict], strategy: str, measure: str) -> dict[tuple, float] | None:
    """(seed, item id) -> score, pooled over seeds; None if any seed lacks the strategy."""
    out = {}
    for r in runs:
        got = r["strategies"].get(strategy)
        if got is None:
            continue
        if got["failed"]:
            return None
        for item in got["test"]:
            out[(r["seed"], item["id"])] = item[measure]
    return out or None


def _cell(rate: dict) -> str:
    return f"{100 * rate['rate']:.1f} [{100 * rate['ci'][0]:.1f}, {100 * rate['ci'][1]:.1f}]"


def _constant(task_name: str, seed: int, sizes) -> dict:
    """The reference row for one task and seed: the training set's most common answer, scored
    on every test item (no model involved)."""
    from ..programs import tasks as T

    dspy = require("dspy", "programs")
    task = T.get(task_name)
    train, _, test = task.load(seed=seed, n_train=sizes.train, n_val=sizes.val, n_test=sizes.test)
    answer = T.constant_answer(task, train)
    pred = dspy.Prediction(**{task.answer: answer})
    return {"failed": None, "answer": answer,  # no cost: the table's cost rows skip it
            "test": [{"id": ex.get("id"), **task.scores(ex, pred)} for ex in test]}


def table_stage(c: TableStage, inputs: dict[str, Path], ctx) -> dict:
    runs = {t: [read_json(inputs[n]) for n in names] for t, names in c.stages.items()}
    for t, rs in runs.items():  # the constant row rides on each seed's first chain
        for seed in dict.fromkeys(r["seed"] for r in rs):
            first = next(r for r in rs if r["seed"] == seed)
            first["strategies"]["constant"] = _constant(t, seed, Sizes(**c.sizes[t]))
    rows, cost_rows, verdicts, metrics, data = [], [], [], {}, {}
    failures = []
    for s in [*c.strategies, "constant"]:
        row = {"strategy": CONSTANT if s == "constant" else s}
        for t in c.tasks:
            # vanilla from the first chain of each seed (every chain starts from the same program)
            seen = {}
            for r in runs[t]:
                if s in r["strategies"] and (r["seed"], s) not in seen:
                    seen[(r["seed"], s)] = r
            picked = list(seen.values())
            o = _outcomes(picked, s, METRIC[t])
            if o is None:
                why = next((r["strategies"][s]["failed"] for r in picked
                            if s in r["strategies"] and r["strategies"][s]["failed"]), "not run")
                row[NAMES[t]] = "failed"
                failures.append(f"{t}, {s}: {why}")
                continue
            keys = sorted(o)
            rate = stats.rate_summary([bool(o[k]) for k in keys])
            row[NAMES[t]] = _cell(rate)
            metrics[f"{t}/{s}"] = round(rate["rate"], 4)
            data.setdefault(t, {})[s] = {"keys": [list(k) for k in keys],
                                         "scores": [o[k] for k in keys]}
            if s == "constant":
                continue
            cost = {k: sum(r["strategies"][s]["cost"][k] for r in picked)
                    for k in ("generations", "prompt_tokens", "completion_tokens",
                              "train_seconds", "seconds")}
            cost_rows.append({"task": t, "strategy": s, "LM calls": cost["generations"],
                              "tokens": cost["prompt_tokens"] + cost["completion_tokens"],
                              "training s": round(cost["train_seconds"]),
                              "wall s": round(cost["seconds"])})
        rows.append(row)
    for t in c.tasks:
        got = data.get(t, {})

        def compare(a: str, b: str):
            if a in got and b in got:
                keys = [tuple(k) for k in got[a]["keys"]]
                A = dict(zip(keys, got[a]["scores"]))
                B = {tuple(k): v for k, v in zip(got[b]["keys"], got[b]["scores"])}
                common = [k for k in keys if k in B]
                v = stats.compare_rates(a, [bool(A[k]) for k in common], b,
                                        [bool(B[k]) for k in common], f"{NAMES[t]}")
                verdicts.append({"task": t, "a": a, "b": b, "p": round(v["test"]["p"], 4),
                                 "verdict": v["verdict"]})

        for a, b in (("p", "vanilla"), ("w", "vanilla"), ("p -> w -> p", "p"),
                     ("p -> w -> p", "w"), ("p -> w", "p"), ("w -> p", "p"),
                     ("p -> w -> p", "constant")):
            compare(a, b)
    f1_rows = []
    if "multihop" in c.tasks:
        for s in c.strategies:
            picked = {}
            for r in runs["multihop"]:
                if s in r["strategies"] and r["seed"] not in picked:
                    picked[r["seed"]] = r
            o = _outcomes(list(picked.values()), s, "f1")
            rec = _outcomes(list(picked.values()), s, "recall")
            if o:
                m = stats.mean_summary([o[k] for k in sorted(o)])
                rr = stats.mean_summary([rec[k] for k in sorted(rec)])
                f1_rows.append({"strategy": s, "F1": stats.fmt_ci(m["mean"], m["ci"]),
                                "supporting pages retrieved": stats.fmt_ci(rr["mean"], rr["ci"])})
    flags = {f"{r['task']} s{r['seed']} {r['chain']}": r["flag_compilation_error_occurred"]
             for t in c.tasks for r in runs[t]}
    ctx.section("BetterTogether: test scores per strategy (Table 1 layout)", rank=9,
                table=table(rows), text=(
                    f"{c.model}, every module of each program on it. Test metric in %, Wilson 95% "
                    "intervals, pooled over seeds. p: bootstrapped few-shot demos with random "
                    "search; w: LoRA on the program's own traces that passed the metric. "
                    f"{CONSTANT}: the training set's most common answer, given to every test "
                    "item (a program that always says one thing scores this)."
                    + ("\n\nFailed: " + "; ".join(failures) if failures else "")))
    ctx.section("BetterTogether: the verdicts (McNemar, paired by item)", rank=10,
                table=table([{k: v[k] for k in ("task", "a", "b", "p")} for v in verdicts]),
                text="\n\n".join(v["verdict"] for v in verdicts) or "no pair to compare")
    if f1_rows:
        ctx.section("Two-hop QA: token F1 and retrieval (bootstrap 95%)", rank=11,
                    table=table(f1_rows))
    ctx.section("BetterTogether: cost of each strategy's optimization", rank=12,
                table=table(cost_rows), text=(
                    "LM calls and tokens the server answered during the strategy's optimizer "
                    "steps, cumulative along its chain, summed over seeds (BetterTogether's own "
                    "validation passes and the test runs are not included); training s: LoRA "
                    "fine-tuning; wall s: the steps' wall time. Compilation error flags: "
                    + ", ".join(f"{k}: {v}" for k, v in flags.items())))
    ctx.section("The paper's numbers", rank=13, table=table(PAPER), text=(
        "Soylu, Potts and Khattab 2024, Table 1, Llama-3-8B-Instruct, 3 seeds, HotPotQA / GSM8K / "
        "Iris, 6 random-search candidates, LoRA r=32 for 5 epochs. Here: a 135M-1.5B student, "
        "project-written stand-ins for HotPotQA and GSM8K (fictional entities, so retrieval is "
        "needed; templated arithmetic), tens of examples instead of hundreds, fewer candidates; "
        "compare directions, not levels."))
    ctx.data["bettertogether"] = {"rows": rows, "verdicts": verdicts, "cost": cost_rows,
                                  "f1": f1_rows, "flags": flags}
    write_json(ctx.dir / "table.json", ctx.data["bettertogether"])
    return metrics | {"compilation_errors": sum(bool(v) for v in flags.values())}
