"""The knowledge-intervention study's stages before evaluation: data, probe, sets and tune
(`fn(config, inputs, ctx)`, each receiving only its own dataclass from knowledge_config)."""
from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from ..errors import AdaptlabError
from ..evaluate import stats
from ..io import read_jsonl, write_json, write_jsonl
from ..lm.registry import make_student
from ..report.render import table
from .knowledge_config import DataStage, ProbeStage, SetsStage, TuneStage, set_name


def by_domain(questions: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for q in questions:
        out.setdefault(q["domain"], []).append(q)
    return out


# -- data ------------------------------------------------------------------------------------
def data_stage(cfg: DataStage, inputs: dict[str, Path], ctx) -> dict:
    """Split the questions: per training domain, `homo_n` held out (HOMO), `shots` demos for the
    probe and the rest probed (the pool the sets come from); ID and OOD domains for testing."""
    from ..data.mc import load_questions

    sources = [str(inputs.get(f"questions{i}", s)) for i, s in enumerate(cfg.questions)]
    by = by_domain(load_questions(sources))
    ood = cfg.ood_domains or [d for d in by if d not in cfg.train_domains + cfg.id_domains]
    missing = [d for d in cfg.train_domains + cfg.id_domains + ood if d not in by]
    if missing:
        raise AdaptlabError(f"domains {', '.join(missing)}: not in the questions (they have "
                            f"{', '.join(by)})")
    rng, parts = random.Random(cfg.seed), {k: [] for k in ("pool", "demos", "homo", "id", "ood")}
    rows = []
    for d in cfg.train_domains:
        items = by[d][:]
        if len(items) < cfg.homo_n + cfg.shots + 4:
            raise AdaptlabError(f"domain {d}: {len(items)} questions; need more than homo_n + shots "
                                f"+ 4 = {cfg.homo_n + cfg.shots + 4} to hold out, demo and probe")
        rng.shuffle(items)
        h, s = cfg.homo_n, cfg.shots
        parts["homo"] += items[:h]
        parts["demos"] += items[h:h + s]
        parts["pool"] += items[h + s:]
        rows.append({"domain": d, "split": "train (HOMO)", "probed": len(items) - h - s,
                     "demos": s, "tested": h})
    for split, doms in (("id", cfg.id_domains), ("ood", ood)):
        for d in doms:
            items = by[d][:]
            rng.shuffle(items)
            take = items[:cfg.test_per_domain] if cfg.test_per_domain else items
            parts[split] += take
            rows.append({"domain": d, "split": split.upper(), "probed": 0, "demos": 0, "tested": len(take)})
    empty = [s.upper() for s in ("id", "ood") if not parts[s]]
    if empty:
        raise AdaptlabError(f"split {' and '.join(empty)}: no questions (name its domains in "
                            "id_domains / ood_domains, or ship more domains; test_per_domain: 0 = all)")
    for name, items in parts.items():
        write_jsonl(ctx.dir / f"{name}.jsonl", items)
    ctx.section("Questions", "Each training domain is split at random into held-out questions "
                "(HOMO), the probe's demos, and the questions probed for the instruction sets. "
                "ID domains are related to the training domains, OOD ones are not; the recipe "
                "decides which is which.", table(rows), rank=15)
    return {k: len(v) for k, v in parts.items()}


# -- probe -----------------------------------------------------------------------------------
def probe_stage(cfg: ProbeStage, inputs: dict[str, Path], ctx) -> dict:
    """k-shot multiple-choice probe of the base model on the pool: teacher-forced option
    probabilities, one pass per question (no generation)."""
    from ..data.mc import few_shot
    from ..evaluate.mc import debias, option_probs, predictions

    pool, demos = by_domain(read_jsonl(inputs["pool"])), by_domain(read_jsonl(inputs["demos"]))
    lm, preds = make_student(cfg.model, cfg.batch_size, cfg.device, ctx.cache), []
    for d, qs in pool.items():  # one call per domain: its header and demos are computed once
        shots = demos.get(d, [])[:cfg.shots]
        raw = option_probs(lm, [few_shot(q, shots, cfg.score_by) for q in qs], qs, cfg.score_by)
        preds += [{**p, "raw_probs": r["probs"], "raw_pred": r["pred"], "raw_correct": r["correct"]}
                  for p, r in zip(predictions(qs, debias(raw, cfg.debias)), predictions(qs, raw))]
    write_jsonl(ctx.dir / "probe.jsonl", preds)
    rows = []
    for d, qs in pool.items():
        mine = [p for p in preds if p["domain"] == d]
        row = {"domain": d}
        for key, name in (("correct", "accuracy"), ("raw_correct", "raw accuracy")):
            r = stats.rate_summary([p[key] for p in mine])
            row |= {"n": r["n"], name: stats.fmt_ci(r["rate"], r["ci"])}
        rows.append(row)

    def count(key):
        c = Counter(p[key] for p in preds)
        return ", ".join(f"{k} {c.get(k, 0)}" for k in "ABCD")
    raw_acc = sum(p["raw_correct"] for p in preds) / len(preds)
    ctx.section(f"Probe: {cfg.model}, {cfg.shots}-shot", f"Option probabilities by {cfg.score_by}, "
                f"debias {cfg.debias}. Predicted letters: {count('pred')}; from the raw "
                f"probabilities: {count('raw_pred')}, accuracy {raw_acc:.2f} (the gold keys are "
                "balanced, so a strong skew is a letter bias, not knowledge).", table(rows), rank=20)
    acc = sum(p["correct"] for p in preds) / len(preds)
    return {"probed": len(preds), "accuracy": round(acc, 4), "raw_accuracy": round(raw_acc, 4)}


# -- sets ------------------------------------------------------------------------------------
def _explain_chat(q: dict, letter: str) -> list[dict]:
    from ..data.mc import render, reply

    return [{"role": "user", "content": f"{render(q, letter)}\n\nThe answer is {reply(q, letter)}. "
                                        "In one or two sentences, explain why."}]


def _trim(text: str) -> str:
    """Up to the last finished sentence (a budget cut mid-sentence leaves a fragment)."""
    text = " ".join(text.split())
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[-1]] if ends else text


def explanations(lm, wanted: list[tuple[dict, str]], tokens: int) -> dict[tuple[str, str], str]:
    """(question id, letter) -> the explainer's explanation of that answer, greedy."""
    from ..lm.base import GenParams

    todo = list({(q["id"], L): (q, L) for q, L in wanted}.values())
    outs = lm.chat([_explain_chat(q, L) for q, L in todo], GenParams(max_new_tokens=tokens))
    return {(q["id"], L): _trim(o) for (q, L), o in zip(todo, outs)}


def _record(q: dict, letter: str, source: str, expl: str | None, form: str) -> dict:
    """A training record: the zero-shot question, and the answer (in the probe's form) then the
    explanation of it."""
    from ..data.mc import reply, zero_shot

    target = reply(q, letter, form) + (f"\n{expl}" if expl else "")
    return {"id": q["id"], "domain": q["domain"], "letter": letter, "source": source,
            "messages": [*zero_shot(q, form), {"role": "assistant", "content": target}]}


def select(pool: list[dict], probe: list[dict], cfg: SetsStage) -> tuple[list[dict], list[tuple[dict, dict]], int]:
    """(known questions, [(unknown question, its probe record)], set size): known = answered
    right with confidence >= threshold, unknown = answered wrong; both shuffled by the seed and
    cut to the same size."""
    p = {r["id"]: r for r in probe}
    known = [q for q in pool if p[q["id"]]["correct"] and p[q["id"]]["confidence"] >= cfg.threshold]
    unknown = [(q, p[q["id"]]) for q in pool if not p[q["id"]]["correct"]]
    most = min(len(known), len(unknown))
    n = cfg.set_size or min(most, cfg.max_set_size)
    if cfg.set_size > most or n < 2:
        raise AdaptlabError(f"sets for {cfg.model}: {len(known)} known and {len(unknown)} unknown "
                            f"questions in the pool, so sets of {cfg.set_size or n} cannot be "
                            "balanced (lower set_size or threshold, or probe more questions)")
    rng = random.Random(cfg.seed)
    rng.shuffle(known)
    rng.shuffle(unknown)
    return known[:n], unknown[:n], n


def mixture(unknown: list[tuple[dict, dict]], ratio: float, order: list[int], expl: dict,
            form: str) -> list[dict]:
    """The incompatible questions, the first round(ratio * n) of `order` taking the model's own
    answer (self-aligning) instead of the gold one: nested, so a higher ratio keeps every swap
    of a lower one."""
    own = set(order[:round(ratio * len(unknown))])
    out = []
    for i, (q, pr) in enumerate(unknown):
        letter, src = (pr["pred"], "own") if i in own else (q["answer"], "gold")
        out.append(_record(q, letter, src, expl.get((q["id"], letter)), form))
    return out


def sets_stage(cfg: SetsStage, inputs: dict[str, Path], ctx) -> dict:
    """Harmonious, incompatible, self-aligning and the mixtures, of one size, with explanations
    of the answer each target gives."""
    pool, probe = read_jsonl(inputs["pool"]), read_jsonl(inputs["probe"])
    known, unknown, n = select(pool, probe, cfg)
    expl: dict = {}
    if cfg.explanations:
        wanted = ([(q, q["answer"]) for q in known] + [(q, q["answer"]) for q, _ in unknown]
                  + [(q, pr["pred"]) for q, pr in unknown])
        expl = explanations(make_student(cfg.explainer, cfg.batch_size, cfg.device, ctx.cache), wanted,
                            cfg.explanation_tokens)
    order = list(range(n))
    random.Random(cfg.seed + 1).shuffle(order)
    sets = {"harmonious": [_record(q, q["answer"], "gold", expl.get((q["id"], q["answer"])), cfg.form)
                           for q in known]}
    for r in sorted(cfg.ratios):
        sets[set_name(r)] = mixture(unknown, r, order, expl, cfg.form)
    for name, recs in sets.items():
        write_jsonl(ctx.dir / f"{name}.jsonl", recs)
    pr = {r["id"]: r for r in probe}
    known_all = sum(r["correct"] and r["confidence"] >= cfg.threshold for r in probe)
    unknown_all = sum(not r["correct"] for r in probe)
    right_unsure = len(probe) - known_all - unknown_all
    empty = sum(not v for v in expl.values())
    rows = [{"set": k, "questions": len(v), "own answers": sum(r["source"] == "own" for r in v),
             "mean probe confidence": round(sum(pr[r["id"]]["confidence"] for r in v) / len(v), 3)}
            for k, v in sets.items()]
    how = (f"by {cfg.explainer}" + (f"; {empty} came back empty, and those targets carry the answer only"
                                    if empty else "")) if cfg.explanations else "none (answers only)"
    ctx.section(f"Instruction sets: {cfg.model}",
                f"Of {len(probe)} probed questions, {known_all} are known (right, confidence >= "
                f"{cfg.threshold}), {unknown_all} unknown (wrong) and {right_unsure} right but unsure "
                f"(in neither set). Every set has {n} questions; the incompatible, self-aligning and "
                f"mixed sets share the same {n} unknown questions and differ only in whose answer the "
                f"target gives. Explanations: {how}.", table(rows), rank=25)
    return {"set_size": n, "known": known_all, "unknown": unknown_all, "right_unsure": right_unsure,
            "empty_explanations": empty}


# -- tune ------------------------------------------------------------------------------------
def tune_stage(cfg: TuneStage, inputs: dict[str, Path], ctx) -> dict:
    from ..train.lora import tune

    recs = read_jsonl(inputs["set"])
    summary = tune(cfg.tune, [{"messages": r["messages"]} for r in recs], ctx.dir, source=str(inputs["set"]))
    tuned = {"model": cfg.model, "set": cfg.set, "n": len(recs), "method": cfg.tune.method,
             "steps": summary["steps"]}
    write_json(ctx.dir / "tuned.json", tuned)
    return {**tuned, "final_loss": summary["final_loss"]}
