"""The tone study's evaluation: four systems on held-out questions, two judges, similarity."""
from __future__ import annotations

from pathlib import Path

from .. import progress
from ..io import hash_path, read_json, read_jsonl, write_json, write_jsonl
from .tone import classifier, gen_params, load_calibration, make_lm, student_chat
from .tone_config import BackendConfig, Config


def _answers(lm, items, cfg: Config, system: str | None, demos: bool = False) -> list[str]:
    from ..synth.simulate import demo_turns

    def chat(it):
        c = student_chat(it, cfg, system)
        return c[:1] + demo_turns(cfg.tone, with_facts=False) + c[1:] if demos else c
    return lm.chat([chat(it) for it in items], gen_params(cfg))


def _system_metrics(answers: list[str], items: list[dict], clf_scores, llm_scores) -> dict:
    from ..evaluate.embed import pairwise_cosine
    from ..evaluate.style import style_stats

    n = len(answers)
    sim_ref = pairwise_cosine(answers, [it["answer"] for it in items])
    sim_pas = pairwise_cosine(answers, [it["passage"] for it in items])
    return {
        "tone_rate_classifier": round(sum(s > 0.5 for s in clf_scores) / n, 4),
        "tone_rate_llm": round(sum(s > 0.5 for s in llm_scores) / n, 4),
        "sim_reference": round(sum(sim_ref) / n, 4),
        "sim_passage": round(sum(sim_pas) / n, 4),
        **style_stats(answers),
    }


def stage_evaluate(cfg: Config, d: Path, split_dir: Path, judges_dir: Path, tuned: dict,
                   run_dir: Path) -> dict:
    from ..evaluate.judges import LLMJudge, agreement
    from ..models.load import attach_adapter

    items = read_jsonl(split_dir / "eval.jsonl")
    cache = run_dir / "cache.sqlite"
    student_cfg = BackendConfig(model=cfg.student, batch_size=cfg.eval_batch_size)
    student = make_lm(student_cfg, cache)
    main = f"tune-{cfg.precisions[0]}-n{cfg.main_size}"
    answers = {
        "base": _answers(student, items, cfg, None),
        "prompted": _answers(student, items, cfg, cfg.tone.system_prompt()),
    }
    # Every adapter: tone rate vs N and precision; the main one is the "tuned" system.
    per_adapter = {}
    for name, res in tuned.items():
        lm = make_lm(student_cfg, cache, name=f"local:{cfg.student}+{hash_path(res.dir / 'adapter_model.safetensors')[:16]}",
                     model=attach_adapter(student.inner.model, str(res.dir), name="tuned"),
                     tokenizer=student.inner.tok)
        per_adapter[name] = _answers(lm, items, cfg, None)
        student.inner.model = lm.inner.model.unload()  # back to the bare base for the next one
    answers["tuned"] = per_adapter[main]
    teacher = make_lm(cfg.teacher, cache)
    answers["teacher"] = _answers(teacher, items, cfg, cfg.tone.system_prompt(), demos=True)

    clf = classifier(cfg)
    judge_meta = read_json(judges_dir / "judges.json")
    llm = LLMJudge(make_lm(cfg.judge, cache), cfg.tone.description, cfg.tone.contrast,
                   bias=judge_meta["llm_bias"])
    systems, samples = {}, []
    progress.log("evaluate: judging answers")
    for name, outs in answers.items():
        c, l_ = clf.score(outs), llm.score(outs)
        systems[name] = {**_system_metrics(outs, items, c, l_), "judge_agreement": agreement(c, l_)}
        for i, o in enumerate(outs):
            samples.append({"system": name, "id": items[i]["id"], "answer": o,
                            "tone_classifier": round(c[i], 4), "tone_llm": round(l_[i], 4)})
    curves = {}
    for name, outs in per_adapter.items():
        c = clf.score(outs)
        curves[name] = {"n": tuned[name].metrics.get("n"), "precision": tuned[name].metrics.get("precision"),
                        "tone_rate_classifier": round(sum(s > 0.5 for s in c) / len(c), 4)}
    write_jsonl(d / "answers.jsonl", samples)
    write_json(d / "metrics.json", {"systems": systems, "adapters": curves, "main_adapter": main,
                                    "n_eval": len(items)})
    return {f"{s}_tone_rate": m["tone_rate_classifier"] for s, m in systems.items()} | {
        f"{s}_sim_ref": m["sim_reference"] for s, m in systems.items()}
