"""The tone study's evaluation: base, prompted, tuned (every adapter) and teacher on held-out
questions; both judges, content similarity, intervals and paired tests; its report sections."""
from __future__ import annotations

from pathlib import Path

from .. import progress
from ..evaluate import stats
from ..evaluate.compare import System, answer, rate_table
from ..evaluate.metrics import decide, rate
from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..lm.config import BackendConfig
from ..lm.registry import make_lm
from ..report.render import table
from .tone_config import EvaluateStage
from .tone_stages import fit_classifier, gen_params, student_chat

SYSTEMS = {"base": "base student, no system prompt", "prompted": "base student + tone system prompt",
           "tuned": "tuned student (LoRA), no system prompt", "teacher": "teacher + tone system prompt (+ demos)"}


def _prompts(cfg: EvaluateStage):
    from ..synth.simulate import demo_turns

    system = cfg.tone.system_prompt()

    def few_shot(it):
        c = student_chat(it, cfg.context, system)
        return c[:1] + demo_turns(cfg.tone, with_facts=False) + c[1:]
    return {"plain": lambda it: student_chat(it, cfg.context),
            "system": lambda it: student_chat(it, cfg.context, system), "few_shot": few_shot}


def _systems(cfg: EvaluateStage, inputs: dict[str, Path], cache: Path) -> list[System]:
    student = make_lm(BackendConfig(model=cfg.student, batch_size=cfg.eval_batch_size), cache)
    p = _prompts(cfg)
    systems = [System("base", student, p["plain"]), System("prompted", student, p["system"])]
    systems += [System(name, student, p["plain"], adapter=str(inputs[name].parent))
                for name in cfg.adapters]
    return systems + [System("teacher", make_lm(cfg.teacher, cache), p["few_shot"])]


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
    answers = answer(_systems(cfg, inputs, ctx.cache), items, gen_params(cfg.max_new_tokens, cfg.seed))
    answers["tuned"] = answers[cfg.main_adapter]
    clf = fit_classifier(inputs["calibration"], cfg.seed)
    llm = LLMJudge(make_lm(cfg.judge, ctx.cache), cfg.tone.description, cfg.tone.contrast,
                   bias=read_json(inputs["judges"])["llm_bias"])
    progress.log("evaluate: judging answers")
    scores = {name: (clf.score(outs), llm.score(answers[name]) if name in SYSTEMS else None)
              for name, outs in answers.items()}
    systems = {name: _system_metrics(answers[name], items, *scores[name]) for name in SYSTEMS}
    adapters = {name: {**read_json(inputs[f"{name}.tuned"]), "tone_rate_classifier": rate(scores[name][0])}
                for name in cfg.adapters}
    samples = [{"system": name, "id": items[i]["id"], "answer": o,
                "tone_classifier": round(scores[name][0][i], 4), "tone_llm": round(scores[name][1][i], 4)}
               for name in SYSTEMS for i, o in enumerate(answers[name])]
    sims = {name: systems[name].pop("_sim_reference_items") for name in SYSTEMS}
    write_jsonl(ctx.dir / "answers.jsonl", samples)
    evidence = _evidence(scores, sims, cfg.seed)
    write_json(ctx.dir / "metrics.json", {"systems": systems, "adapters": adapters,
                                          "main_adapter": cfg.main_adapter, "n_eval": len(items),
                                          "evidence": evidence})
    _log_sections(ctx, cfg, items, systems, adapters, samples, evidence)
    return ({f"{s}_tone_rate": m["tone_rate_classifier"] for s, m in systems.items()}
            | {f"{s}_sim_ref": m["sim_reference"] for s, m in systems.items()})


def _evidence(scores: dict, sims: dict, seed: int) -> dict:
    """Intervals for every system and judge, and the paired tests of the headline comparisons."""
    out = {}
    for j, judge in enumerate(("classifier", "llm")):
        outcomes = {n: decide(scores[n][j]) for n in SYSTEMS}
        out[f"tone_{judge}"] = rate_table(outcomes, reference="prompted")
        out[f"tuned_vs_prompted_{judge}"] = stats.compare_rates(
            "the tuned student", outcomes["tuned"], "system prompting", outcomes["prompted"],
            f"tone by the {'LLM' if judge == 'llm' else judge} judge")
    out["sim_reference"] = {n: stats.mean_summary(v, seed=seed) for n, v in sims.items()}
    out["tuned_vs_prompted_content"] = stats.compare_means(
        "the tuned student", sims["tuned"], "system prompting", sims["prompted"],
        "similarity to the reference answer", seed=seed)
    return out


def _log_sections(ctx, cfg: EvaluateStage, items, systems, adapters, samples, ev) -> None:
    from .tone_report import plot_systems, plot_vs_n

    verdict = " ".join(ev[k]["verdict"][:1].upper() + ev[k]["verdict"][1:] for k in ("tuned_vs_prompted_classifier",
                                                   "tuned_vs_prompted_llm", "tuned_vs_prompted_content"))
    ctx.section("Verdict", text="Measured: " + verdict, rank=0)
    got = ", ".join(f"N={a['n']} {a['precision']}" for a in adapters.values())
    ctx.section("Scale of this run", rank=1, text=(
        f"Student {cfg.student}; teacher {cfg.teacher.model} ({cfg.teacher.backend}); LLM judge "
        f"{cfg.judge.model}. Trained: {got} (N is capped by the simulated examples that pass the "
        f"filters). {len(items)} held-out questions, greedy decoding, {cfg.max_new_tokens} new "
        "tokens. Intervals: Wilson 95% for rates, bootstrap 95% for means; p: McNemar (rates) or "
        "paired bootstrap (means) against the prompted student."))
    ctx.section(f"Comparison on {len(items)} held-out questions (main adapter: {cfg.main_adapter})",
                table=table(_comparison_rows(systems, ev)), image=plot_systems(ctx.dir, ev), rank=10)
    ctx.section("Tone rate vs N (classifier judge, held-out questions)", rank=20,
                table=table(_adapter_rows(adapters, len(items))), image=plot_vs_n(ctx.dir, adapters))
    ctx.section("Side by side", table=table(_side_by_side(items, samples),
                                            ["question", "base", "prompted", "tuned", "teacher"]), rank=40)
    ctx.section("Judge agreement on evaluated answers", rank=61,
                table=table([_agreement_row(n, m["judge_agreement"]) for n, m in systems.items()]))
    ctx.data.update({"systems": systems, "adapters": adapters, "samples": samples, "evidence": ev,
                     "tone": cfg.tone.description})


def _comparison_rows(systems: dict, ev: dict) -> list[dict]:
    fmt = lambda r: stats.fmt_ci(r["rate"], (r["ci_low"], r["ci_high"]))  # noqa: E731
    rows = []
    for i, (n, m) in enumerate(systems.items()):
        clf, llm = ev["tone_classifier"][i], ev["tone_llm"][i]
        sim = ev["sim_reference"][n]
        rows.append({"system": SYSTEMS[n], "tone (classifier)": fmt(clf),
                     "p vs prompted (clf)": clf.get("p_vs_prompted", ""),
                     "tone (LLM judge)": fmt(llm), "p vs prompted (LLM)": llm.get("p_vs_prompted", ""),
                     "sim_reference": stats.fmt_ci(sim["mean"], sim["ci"]),
                     **{k: m[k] for k in ("sim_passage", "words", "sentence_words",
                                          "contractions_per_100w", "you_per_100w", "with_list_or_markdown")},
                     "judge_kappa": m["judge_agreement"]["kappa"]})
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
        rows.append({"adapter": name, "N": a["n"], "precision": a["precision"],
                     "tone rate [95% CI]": stats.fmt_ci(k / n, stats.wilson(k, n))})
    return rows


def _side_by_side(items: list[dict], samples: list[dict], k: int = 6) -> list[dict]:
    questions = {it["id"]: it["question"] for it in items}
    by_id: dict[str, dict] = {}
    for s in samples:
        by_id.setdefault(s["id"], {})[s["system"]] = f"{s['answer']}  [clf {s['tone_classifier']:.2f}]"
    return [{"question": questions[i], **v} for i, v in list(by_id.items())[:k]]
