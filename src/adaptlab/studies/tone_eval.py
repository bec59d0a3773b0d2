"""The tone study's evaluation: base, prompted, tuned (every adapter) and teacher on held-out
questions; both judges, content similarity, intervals and paired tests; its report sections."""
from __future__ import annotations

from pathlib import Path

from .. import progress
from ..evaluate import stats
from ..evaluate.compare import System, answer, rate_table
from ..evaluate.content import content_ok, degenerate
from ..evaluate.metrics import decide, rate
from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..lm.config import BackendConfig
from ..lm.registry import make_lm
from ..report.render import table
from .tone_config import EvaluateStage
from .tone_stages import both_outcomes, fit_classifier, gen_params, student_chat

SYSTEMS = {"base": "base student, no system prompt",
           "prompted": "base student + tone system prompt",
           "few_shot": "base student + system prompt + demos (few-shot)",
           "tuned": "tuned student (LoRA), no system prompt",
           "tuned_prompted": "tuned student + system prompt",
           "teacher": "teacher as it made the training data (its prompt and facts, sampled)"}
PROMPTED = ("prompted", "few_shot")
"""The prompting baselines a user would try; the tuned student meets the best of them."""


def system_names(cfg: EvaluateStage) -> dict[str, str]:
    """Every compared system and its label, larger prompted models last."""
    return SYSTEMS | {f"larger:{b.model}": f"{b.model} + system prompt + demos" for b in cfg.larger}


def _prompts(cfg: EvaluateStage):
    from ..synth.simulate import demo_turns

    system = cfg.tone.system_prompt()

    def few_shot(it):
        c = student_chat(it, cfg.context, system)
        return c[:1] + demo_turns(cfg.tone, with_facts=False) + c[1:]
    return {"plain": lambda it: student_chat(it, cfg.context),
            "system": lambda it: student_chat(it, cfg.context, system), "few_shot": few_shot}


def _systems(cfg: EvaluateStage, inputs: dict[str, Path], cache: Path) -> list[System]:
    from ..synth.filters import trim_incomplete
    from ..synth.simulate import teacher_chat

    student = make_lm(BackendConfig(model=cfg.student, batch_size=cfg.eval_batch_size), cache)
    p = _prompts(cfg)
    main = str(inputs[cfg.main_adapter].parent)
    systems = [System("base", student, p["plain"]), System("prompted", student, p["system"]),
               System("few_shot", student, p["few_shot"])]
    systems += [System(name, student, p["plain"], adapter=str(inputs[name].parent))
                for name in cfg.adapters]
    systems.append(System("tuned_prompted", student, p["system"], adapter=main))
    as_made = gen_params(cfg.max_new_tokens, cfg.seed, cfg.teacher_temperature)
    systems.append(System("teacher", make_lm(cfg.teacher, cache), post=trim_incomplete, params=as_made,
                          prompt=lambda it: teacher_chat(cfg.tone, it[cfg.teacher_source], it["question"])))
    return systems + [System(f"larger:{b.model}", make_lm(b, cache), p["few_shot"]) for b in cfg.larger]


def _system_metrics(answers: list[str], items: list[dict], clf_scores, llm_scores) -> dict:
    from ..evaluate.embed import pairwise_cosine
    from ..evaluate.judges import agreement
    from ..evaluate.style import style_stats

    n = len(answers)
    sim_ref = pairwise_cosine(answers, [it["answer"] for it in items])
    sim_pas = pairwise_cosine(answers, [it["passage"] for it in items])
    return {"tone_rate_classifier": rate(clf_scores), "tone_rate_llm": rate(llm_scores),
            "sim_reference": round(sum(sim_ref) / n, 4), "sim_passage": round(sum(sim_pas) / n, 4),
            **style_stats(answers), "judge_agreement": agreement(clf_scores, llm_scores),
            "_sim_reference_items": sim_ref}


def evaluate_stage(cfg: EvaluateStage, inputs: dict[str, Path], ctx) -> dict:
    from ..evaluate.judges import LLMJudge

    items = read_jsonl(inputs["eval"])
    items_index = {it["id"]: i for i, it in enumerate(items)}
    names = system_names(cfg)
    answers = answer(_systems(cfg, inputs, ctx.cache), items, gen_params(cfg.max_new_tokens, cfg.seed))
    answers["tuned"] = answers[cfg.main_adapter]
    clf = fit_classifier(inputs["calibration"], cfg.seed)
    llm = LLMJudge(make_lm(cfg.judge, ctx.cache), cfg.tone.description, cfg.tone.contrast,
                   bias=read_json(inputs["judges"])["llm_bias"])
    progress.log("evaluate: judging answers")
    # "tuned" is the main adapter's answers under its system name: judged once, shared
    scores = {name: (clf.score(outs), None) for name, outs in answers.items() if name != "tuned"}
    scores["tuned"] = scores[cfg.main_adapter]
    scores |= {name: (scores[name][0], llm.score(answers[name])) for name in names}
    systems = {name: _system_metrics(answers[name], items, *scores[name]) for name in names}
    adapters = {name: {**read_json(inputs[f"{name}.tuned"]), "tone_rate_classifier": rate(scores[name][0])}
                for name in cfg.adapters}
    samples = [{"system": name, "id": items[i]["id"], "answer": o,
                "tone_classifier": round(scores[name][0][i], 4), "tone_llm": round(scores[name][1][i], 4)}
               for name in names for i, o in enumerate(answers[name])]
    sims = {name: systems[name].pop("_sim_reference_items") for name in names}
    content = {n: content_ok(answers[n], [it["answer"] for it in items], cfg.content_threshold,
                             sims=sims[n]) for n in names}
    for n in names:
        systems[n]["degenerate"] = round(sum(bool(degenerate(a)) for a in answers[n]) / len(items), 4)
    for s in samples:
        s["content_ok"] = content[s["system"]][items_index[s["id"]]]
    write_jsonl(ctx.dir / "answers.jsonl", samples)
    evidence = _evidence({n: scores[n] for n in names}, content, sims, cfg.seed)
    write_json(ctx.dir / "metrics.json", {"systems": systems, "adapters": adapters,
                                          "main_adapter": cfg.main_adapter, "n_eval": len(items),
                                          "evidence": evidence})
    _log_sections(ctx, cfg, items, systems, adapters, samples, evidence)
    return ({f"{s}_tone_rate": m["tone_rate_classifier"] for s, m in systems.items()}
            | {f"{s}_sim_ref": m["sim_reference"] for s, m in systems.items()}
            | {f"{r['system']}_both_rate": round(r["rate"], 4) for r in evidence["both"]}
            | {"best_prompted": evidence["best_prompted"],
               "tuned_vs_best_prompted_p": evidence["tuned_vs_best_prompted_both"]["test"]["p"]})


def best_prompted(outcomes: dict[str, list[bool]]) -> str:
    """The prompting baseline with the highest rate (a larger model's included): the tuned
    student is tested against the strongest prompting a user could pick."""
    cands = [n for n in outcomes if n in PROMPTED or n.startswith("larger:")]
    return max(cands, key=lambda n: (sum(outcomes[n]), -cands.index(n)))


def _evidence(scores: dict, content: dict, sims: dict, seed: int) -> dict:
    """Intervals for every system and measure, and the paired tests of the headline comparisons:
    the tuned student against the best prompting baseline, chosen on the headline measure
    ("in tone and content preserved": the verdict classifier and the content check agree)."""
    measures = {"tone_classifier": {n: decide(sc[0]) for n, sc in scores.items()},
                "tone_llm": {n: decide(sc[1]) for n, sc in scores.items()},
                "content": content}
    measures["both"] = {n: both_outcomes(measures["tone_classifier"][n], content[n]) for n in scores}
    best = best_prompted(measures["both"])
    out = {"best_prompted": best}
    for key, outcomes in measures.items():
        out[key] = rate_table(outcomes, reference=best)
        out[f"tuned_vs_best_prompted_{key}"] = stats.compare_rates(
            "the tuned student", outcomes["tuned"], f"the best prompting ({best})", outcomes[best],
            MEASURES[key])
    out["sim_reference"] = {n: stats.mean_summary(v, seed=seed) for n, v in sims.items()}
    return out


MEASURES = {"both": "in tone and content preserved", "tone_classifier": "tone (verdict classifier)",
            "tone_llm": "tone (LLM judge)", "content": "content preserved"}
HEADLINES = tuple(f"tuned_vs_best_prompted_{k}" for k in MEASURES)


def _log_sections(ctx, cfg: EvaluateStage, items, systems, adapters, samples, ev) -> None:
    from .tone_report import plot_systems, plot_vs_n

    verdict = " ".join(ev[k]["verdict"][:1].upper() + ev[k]["verdict"][1:] for k in HEADLINES)
    ctx.section("Verdict", text="Measured: " + verdict, rank=0)
    got = ", ".join(dict.fromkeys(f"N={a['n']} {a['precision']}" for a in adapters.values()))
    seeds = sorted({a.get("seed", cfg.seed) for a in adapters.values()})
    got += f", each with seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""
    ctx.section("Scale of this run", rank=1, text=(
        f"Student {cfg.student}; teacher {cfg.teacher.model} ({cfg.teacher.backend}); LLM judge "
        f"{cfg.judge.model}. Trained: {got} (N is capped by the simulated examples that pass the "
        f"filters). {len(items)} held-out questions, greedy decoding, {cfg.max_new_tokens} new "
        "tokens. Tone is judged by the verdict classifier (never the one that filtered the "
        "training data) and the LLM judge. Intervals: Wilson 95% for rates, bootstrap 95% for "
        f"means; p: McNemar (rates) or paired bootstrap (means) against the best prompting "
        f"baseline, here {ev['best_prompted']}."))
    names = system_names(cfg)
    ctx.section(f"Comparison on {len(items)} held-out questions (main adapter: {cfg.main_adapter})",
                table=table(_comparison_rows(systems, ev, names)), image=plot_systems(ctx.dir, ev),
                rank=10)
    ctx.section("Tone rate vs N (verdict classifier, held-out questions)", rank=20,
                table=table(_adapter_rows(adapters, len(items))), image=plot_vs_n(ctx.dir, adapters))
    ctx.section("Side by side", rank=40, table=table(
        [{"question": r["question"], **{names[n]: r.get(n, "") for n in names}} for r in _side_by_side(items, samples)],
        ["question", *names.values()]))
    ctx.section("Judge agreement on evaluated answers", rank=61,
                table=table([_agreement_row(n, m["judge_agreement"]) for n, m in systems.items()]))
    ctx.data.update({"systems": systems, "adapters": adapters, "samples": samples, "evidence": ev,
                     "tone": cfg.tone.description})


STYLE_COLUMNS = {"sim_passage": "similarity to passage", "words": "words",
                 "sentence_words": "words per sentence", "contractions_per_100w": "contractions per 100 words",
                 "you_per_100w": "'you' per 100 words", "with_list_or_markdown": "share with lists or markdown"}


def _comparison_rows(systems: dict, ev: dict, names: dict[str, str]) -> list[dict]:
    fmt = lambda r: stats.fmt_ci(r["rate"], (r["ci_low"], r["ci_high"]))  # noqa: E731
    p_col = f"p_vs_{ev['best_prompted']}"
    rows = []
    for i, (n, m) in enumerate(systems.items()):
        row = {"system": names[n]}
        for key, label in MEASURES.items():
            r = ev[key][i]
            row[f"{label} [95% CI]"] = fmt(r)
            row[f"McNemar p ({label})"] = r.get(p_col, "(reference)")
        sim = ev["sim_reference"][n]
        rows.append({**row, "similarity to reference [95% CI]": stats.fmt_ci(sim["mean"], sim["ci"]),
                     "degenerate": m["degenerate"], **{label: m[k] for k, label in STYLE_COLUMNS.items()},
                     "judges' kappa": m["judge_agreement"]["kappa"]})
    return rows


def _agreement_row(system: str, a: dict) -> dict:
    k = round((a["agreement"] or 0) * a["n"])
    return {"system": system, "n": a["n"],
            "agreement [95% CI]": stats.fmt_ci(k / a["n"], stats.wilson(k, a["n"])) if a["n"] else "",
            "Cohen's kappa": a["kappa"]}


def _adapter_rows(adapters: dict, n: int) -> list[dict]:
    rows = []
    for name, a in adapters.items():
        k = round(a["tone_rate_classifier"] * n)
        rows.append({"adapter": name, "N": a["n"], "precision": a["precision"], "seed": a.get("seed", ""),
                     "tone rate [95% CI]": stats.fmt_ci(k / n, stats.wilson(k, n))})
    return rows


def _side_by_side(items: list[dict], samples: list[dict], k: int = 6) -> list[dict]:
    questions = {it["id"]: it["question"] for it in items}
    by_id: dict[str, dict] = {}
    for s in samples:
        by_id.setdefault(s["id"], {})[s["system"]] = f"{s['answer']}  [clf {s['tone_classifier']:.2f}]"
    return [{"question": questions[i], **v} for i, v in list(by_id.items())[:k]]
