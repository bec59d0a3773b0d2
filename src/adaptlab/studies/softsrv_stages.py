"""The SoftSRV study's stages up to the synthetic sets and the tuned students: data per domain,
a generator per domain and kind, the synthetic samples per domain and method, the
distribution-matching loop, and the LoRA fine-tunes (metrics, evaluation and the table are in
softsrv_eval)."""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .. import progress
from ..data.corpus import load_records, split_by_group
from ..errors import AdaptlabError, InputError
from ..io import hash_path, read_jsonl, write_json, write_jsonl
from ..lm.base import GenParams
from ..report.render import table
from ..synth import softsrv
from . import softsrv_domains as D
from .softsrv_config import (DataStage, GenerateStage, GeneratorStage, MatchStage, MatchStep,
                             TuneStage, kind_of)


# -- data -------------------------------------------------------------------------------------
def _question(rec, path: str, n: int) -> None:
    for key in ("id", "passage_id", "question"):
        if not isinstance(rec, dict) or not isinstance(rec.get(key), str) or not rec[key].strip():
            raise InputError(path, n, key, "expected a non-empty string")
    if rec.get("answer") not in ("yes", "no"):
        raise InputError(path, n, "answer", "expected yes or no")


def _passage(rec, path: str, n: int) -> None:
    for key in ("id", "passage"):
        if not isinstance(rec, dict) or not isinstance(rec.get(key), str) or not rec[key].strip():
            raise InputError(path, n, key, "expected a non-empty string")


def boolq_items(questions: str | Path, passages: str | Path) -> list[dict]:
    """Each question with its passage's text; an unknown passage_id is an input error."""
    text = {p["id"]: p["passage"] for p in load_records(passages, _passage)}
    out = []
    for n, q in enumerate(load_records(questions, _question), 1):
        if q["passage_id"] not in text:
            raise InputError(str(questions), n, "passage_id",
                             f"{q['passage_id']!r} is not a passage of {passages}")
        out.append({"id": q["id"], "passage_id": q["passage_id"],
                    "passage": text[q["passage_id"]], "question": q["question"],
                    "answer": q["answer"]})
    return out


def code_items(max_chars: int) -> list[dict]:
    """HumanEval problems (prompt + canonical solution at most `max_chars` characters; 0 = all)."""
    from ..evaluate.code import load_humaneval

    return [dict(p, id=p["task_id"]) for p in load_humaneval()
            if not max_chars or len(p["prompt"] + p["canonical_solution"]) <= max_chars]


def pool_size(domain: str, cfg) -> int | None:
    """How many items a domain has to split (None: generated, unlimited)."""
    if domain == "code":
        return len(code_items(cfg.code_max_chars))
    if domain == "boolq":
        return len(boolq_items(cfg.boolq_questions, cfg.boolq_passages))
    return None


def data_stage(c: DataStage, inputs: dict[str, Path], ctx) -> dict:
    """fit / heldout / test, disjoint and seeded. Filled test first, then heldout, then fit, so a
    larger fit leaves the evaluation sets as they were. boolq is split by passage (no passage
    in two parts), code by problem, word problems are drawn without repeats."""
    s = c.sizes
    sizes = {"test": s.test, "heldout": s.heldout, "fit": s.fit}
    total = sum(sizes.values())
    if c.domain == "wordproblems":
        from ..data.wordproblems import generate

        items = generate(total, seed=c.seed)
        parts, start = {}, 0
        for k, n in sizes.items():
            parts[k], start = items[start:start + n], start + n
    else:
        items = (code_items(c.code_max_chars) if c.domain == "code"
                 else boolq_items(inputs["questions"], inputs["passages"]))
        if len(items) < total:
            raise AdaptlabError(f"data-{c.domain}: {len(items)} items, the sizes need {total}")
        key = "passage_id" if c.domain == "boolq" else "id"
        groups: dict[str, list[dict]] = {}
        for it in items:
            groups.setdefault(it[key], []).append(it)
        parts = split_by_group(list(groups.values()), sizes, c.seed, items=lambda g: g)
    for k, rows in parts.items():
        write_jsonl(ctx.dir / f"{k}.jsonl", [{**it, "text": D.target_text(c.domain, it)}
                                             for it in rows])
    lengths = [len(D.target_text(c.domain, it)) for it in parts["fit"]]
    ctx.section(f"{c.domain}: targets", rank=60, text=(
        f"fit {len(parts['fit'])} (generators, few-shot pool, memorization reference), heldout "
        f"{len(parts['heldout'])} (MAUVE reference), test {len(parts['test'])} (downstream); "
        f"fit targets of {min(lengths)}-{max(lengths)} characters. First fit target:\n\n"
        + D.target_text(c.domain, parts["fit"][0])))
    return {k: len(v) for k, v in parts.items()}


# -- generators ------------------------------------------------------------------------------
def generator_stage(c: GeneratorStage, inputs: dict[str, Path], ctx) -> dict:
    """A soft prompt of one kind trained on the domain's fit targets (synth.softsrv.fit), written
    to this stage's directory (a killed run resumes from its checkpoints, save_every)."""
    texts = [r["text"] for r in read_jsonl(inputs["fit"])]
    gen = softsrv.fit(c.generator, texts, ctx.dir)
    s = gen.summary or {}
    losses = s.get("losses") or []
    ctx.section(f"{c.domain}: SoftSRV {c.generator.kind} generator", rank=61, text=(
        f"{s.get('steps')} steps on {len(texts)} targets, {s.get('trainable_params')} trainable "
        f"parameters (frozen {c.generator.model}); loss {losses[0] if losses else '?'} -> "
        f"{s.get('final_loss')}; {s.get('seconds')} s."))
    return {"steps": s.get("steps"), "first_loss": losses[0] if losses else None,
            "final_loss": s.get("final_loss"), "seconds": s.get("seconds")}


# -- the frozen LM as a plain text continuation (fewshot) -------------------------------------
class TextLM:
    """A causal LM continuing plain text: no chat template, no special tokens added."""

    def __init__(self, model, tok, device: str = "cpu", batch_size: int = 8):
        self.model, self.tok, self.device, self.batch_size = model, tok, device, batch_size

    def complete(self, prompts: list[str], params: GenParams, stop: str) -> list[str]:
        """Each prompt's continuation, cut before `stop` (sampling stops there too)."""
        from ..lm import engine as eng
        from ..models.chat import stop_token_ids

        ids = [self.tok(p, add_special_tokens=False).input_ids for p in prompts]
        tail = len(self.tok(stop, add_special_tokens=False).input_ids) + 4

        def stop_check(toks: list[int]) -> bool:
            return stop in self.tok.decode(toks[-tail:], skip_special_tokens=True)

        if eng.supports(self.model):
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            toks, _ = eng.generate(self.model, ids, max_new_tokens=params.max_new_tokens,
                                   stops=stop_token_ids(self.tok), slots=self.batch_size,
                                   temperature=params.temperature, top_p=params.top_p,
                                   seed=params.seed, order=order, device=self.device,
                                   pad_id=self.tok.pad_token_id or 0, stop_check=stop_check)
        else:
            toks = self._generate(ids, params)
        return [D.cut_reply(t) if stop == D.MARK else t.split(stop, 1)[0].strip()
                for t in self.tok.batch_decode(toks, skip_special_tokens=True)]

    def _generate(self, ids: list[list[int]], params: GenParams) -> list[list[int]]:
        import torch

        out = []
        torch.manual_seed(params.seed)
        for row in ids:  # one at a time: no padding to get wrong
            x = torch.tensor([row], device=self.device)
            sample = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p) \
                if params.temperature > 0 else dict(do_sample=False)
            with torch.no_grad():
                y = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                        max_new_tokens=params.max_new_tokens,
                                        pad_token_id=self.tok.pad_token_id, **sample)
            out.append(y[0, x.shape[1]:].tolist())
        return out


def load_frozen(model: str, device: str, precision: str, batch_size: int) -> TextLM:
    from ..models.load import load_model

    m, tok = load_model(model, precision, device=device)
    return TextLM(m, tok, device, batch_size)


# -- generation ------------------------------------------------------------------------------
def _shots(fit: list[str], k: int, seed: int, rnd: int, i: int) -> list[str]:
    return random.Random(seed * 1_000_003 + rnd * 10_007 + i).sample(fit, k)


def sampler(c: GenerateStage, inputs: dict[str, Path], ctx) -> Callable[[int, int], list[str]]:
    """(round, k) -> that round's k raw samples (round r samples with seed c.seed + r)."""
    fit = [r["text"] for r in read_jsonl(inputs["fit"])]
    s = c.sampling
    kind = kind_of(c.method)
    if kind is not None:
        gen = softsrv.load_generator(inputs["generator"].parent, device=c.device,
                                     precision=c.precision)
        return lambda r, k: gen.generate(k, variation=s.variation, noise_scale=s.noise_scale,
                                         temperature=s.temperature, top_p=s.top_p,
                                         max_new_tokens=c.max_new_tokens, seed=c.seed + r,
                                         batch_size=s.batch_size)

    def prompts(r: int, k: int) -> list[str]:
        return [D.fewshot_prompt(c.domain, _shots(fit, c.shots, c.seed, r, i)) for i in range(k)]

    def params(r: int) -> GenParams:
        return GenParams(max_new_tokens=c.max_new_tokens, temperature=s.temperature,
                         top_p=s.top_p, seed=c.seed + r, stop=(D.MARK,))

    if c.method == "fewshot":
        lm = load_frozen(c.frozen, c.device, c.precision, s.batch_size)
        return lambda r, k: lm.complete(prompts(r, k), params(r), D.MARK)
    from ..lm.registry import make_lm

    kwargs = {"device": c.device} if c.teacher.backend == "local" else {}
    teacher = make_lm(c.teacher, ctx.cache, **kwargs)
    return lambda r, k: [D.cut_reply(t) for t in teacher.chat(
        [[{"role": "user", "content": p}] for p in prompts(r, k)], params(r))]


def generate_stage(c: GenerateStage, inputs: dict[str, Path], ctx) -> dict:
    """c.n samples (round 0: what MAUVE and the other metrics measure), then, while fewer than
    c.n parse, another round of just the shortfall (c.n minus the parsed so far; new seed), up
    to c.max_rounds rounds. Every sample is kept (samples.jsonl: round, text, the parsed record
    or why it does not parse). Each finished round's texts are journaled in work/, so a killed
    stage resumes at the next round (the texts are parsed again on the way)."""
    draw = None
    rows: list[dict] = []
    for r in range(c.max_rounds):
        journal = ctx.work / f"round-{r}.jsonl"
        if journal.exists():
            texts = [x["text"] for x in read_jsonl(journal)]
        else:
            draw = draw or sampler(c, inputs, ctx)
            k = c.n - sum(x["ok"] for x in rows)
            progress.log(f"generate {c.domain}/{c.method}: round {r + 1}, {k} samples")
            texts = draw(r, k)
            write_jsonl(journal, [{"round": r, "text": t} for t in texts])
        for i, t in enumerate(texts):
            rec, why = D.parse(c.domain, t)
            rows.append({"round": r, "index": i, "text": t, "ok": rec is not None,
                         "reason": why, "record": rec})
        if sum(x["ok"] for x in rows) >= c.n:
            break
    write_jsonl(ctx.dir / "samples.jsonl", rows)
    ok = sum(x["ok"] for x in rows)
    return {"attempted": len(rows), "parsed": ok, "parse_rate": round(ok / len(rows), 4),
            "rounds": rows[-1]["round"] + 1}


# -- the distribution-matching loop -----------------------------------------------------------
SETTINGS = ("temperature", "top_p", "variation", "noise_scale")


def apply(settings: dict, step: MatchStep) -> dict:
    """The next round's settings: `step`'s set fields replace the current ones; its steps add."""
    out = dict(settings, steps=settings["steps"] + step.steps)
    for k in SETTINGS:
        if getattr(step, k) is not None:
            out[k] = getattr(step, k)
    return out


def match_loop(start: dict, schedule: list[MatchStep], budget: int, target: float,
               score: Callable[[dict], float]) -> tuple[list[dict], str]:
    """Round 0 scores `start`; round r > 0 scores start with schedule[:r] applied. Stops at the
    first round whose score reaches `target`, or after `budget` rounds. Returns every round
    ({"round", **settings, "mauve"}) and why it stopped."""
    rounds, settings = [], dict(start)
    for r in range(budget):
        if r:
            settings = apply(settings, schedule[r - 1])
        value = round(score(settings), 4)  # decide on the score as recorded and reported
        rounds.append({"round": r, **settings, "mauve": value})
        if value >= target:
            return rounds, f"target {target} reached in round {r}"
    return rounds, f"budget of {budget} rounds spent, target {target} not reached"


def match_stage(c: MatchStage, inputs: dict[str, Path], ctx) -> dict:
    """generate -> MAUVE vs heldout -> adjust (the schedule), for one SoftSRV generator. Round 0
    is the generate stage's first round (same generator, settings and seed: its samples are
    read, not drawn again); every round samples with that seed, so a change in MAUVE comes from
    the settings (with few samples, noise is large all the same). The settings are chosen on
    heldout, so the best round's MAUVE is optimistic; the loop's samples are not tuned on."""
    from .softsrv_eval import mauve_score

    fit = [r["text"] for r in read_jsonl(inputs["fit"])]
    heldout = [r["text"] for r in read_jsonl(inputs["heldout"])]
    first = [r["text"] for r in read_jsonl(inputs["samples"]) if r["round"] == 0]
    trained: dict[int, object] = {}
    samples: dict[int, list[str]] = {}

    def generator(steps: int):
        """The generate stage's generator (its steps), or one trained for `steps` in work/ on
        the same frozen LM (loaded once)."""
        if steps not in trained:
            if steps == c.generator.steps:
                trained[steps] = softsrv.load_generator(
                    inputs["generator"].parent, device=c.generator.device,
                    precision=c.generator.precision)
            else:
                base = generator(c.generator.steps)
                progress.log(f"match {c.domain}: training a {c.generator.kind} generator for "
                             f"{steps} steps")
                lm = None if base.lm is None else (base.lm, base.tok)
                trained[steps] = softsrv.fit(replace(c.generator, steps=steps), fit,
                                             ctx.work / f"steps-{steps}", lm=lm)
        return trained[steps]

    def score(st: dict) -> float:
        if not samples:  # round 0: the generate stage's first round (same generator, settings,
            samples[0] = first  # seed), not sampled again
            return mauve_score(heldout, first, c.features, c.mauve_buckets)
        texts = generator(st["steps"]).generate(
            c.n, variation=st["variation"], noise_scale=st["noise_scale"],
            temperature=st["temperature"], top_p=st["top_p"], max_new_tokens=c.max_new_tokens,
            seed=c.seed, batch_size=c.sampling.batch_size)
        samples[len(samples)] = texts
        return mauve_score(heldout, texts, c.features, c.mauve_buckets)

    start = {"steps": c.generator.steps, **{k: getattr(c.sampling, k) for k in SETTINGS}}
    rounds, why = match_loop(start, c.schedule, c.budget, c.target, score)
    for r in rounds:
        r["parse_rate"] = round(sum(D.parse(c.domain, t)[0] is not None for t in samples[r["round"]])
                                / c.n, 4)
    write_json(ctx.dir / "match.json", {"domain": c.domain, "method": c.method,
                                        "target": c.target, "rounds": rounds, "stopped": why})
    write_jsonl(ctx.dir / "samples.jsonl", [{"round": r, "text": t} for r, ts in samples.items()
                                            for t in ts])
    ctx.section(f"{c.domain}: distribution matching ({c.method})", rank=30, table=table(rounds),
                text=(f"Each round: {c.n} samples, MAUVE against the heldout targets. {why}. "
                      "steps: the generator's optimizer steps; the other columns: the sampling "
                      "settings of that round. Settings are picked on heldout, so the best "
                      "round's MAUVE is optimistic."))
    best = max(rounds, key=lambda r: r["mauve"])
    return {"rounds": len(rounds), "reached": rounds[-1]["mauve"] >= c.target,
            "first_mauve": rounds[0]["mauve"], "best_mauve": best["mauve"]}


# -- tune ------------------------------------------------------------------------------------
def tune_stage(c: TuneStage, inputs: dict[str, Path], ctx) -> dict:
    """LoRA on the method's training records (the metrics stage cut every method's set to the
    same size); an empty set (too few parsable samples) is recorded as not tuned."""
    from .. import train

    recs = read_jsonl(inputs["train"])
    out = {"domain": c.domain, "method": c.method, "n": len(recs), "model": c.tune.model}
    if not recs:
        write_json(ctx.dir / "tuned.json", {**out, "skipped": "too few parsable samples"})
        return {"n": 0, "skipped": True}
    summary = train.tune(c.tune, recs, ctx.dir, source=str(inputs["train"]))
    weights = ctx.dir / "adapter_model.safetensors"
    write_json(ctx.dir / "tuned.json", {**out, "skipped": None, "steps": summary.get("steps"),
                                        "final_loss": summary.get("final_loss"),
                                        "weights_sha256": hash_path(weights)})
    return {"n": len(recs), "steps": summary.get("steps"), "final_loss": summary.get("final_loss")}

