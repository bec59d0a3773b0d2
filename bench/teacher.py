"""Teacher throughput: the tone study's teacher prompts on the local backend's engines, a naive
`generate` loop and llama.cpp, side by side in one run.

Workload: 32 teacher prompts of the tone study (`synth.simulate.teacher_chat`: the tone's system
prompt, the three demos of recipes/tone.yaml, then a corpus passage as the facts and its first
question), greedy, 48 new tokens max, on the 0.5B teacher (`--model` for another). Contenders,
each in its own process (so its peak RSS is its own), timed after loading and a warm-up call:

- `naive`: one `model.generate` per prompt (on the first `--naive-prompts` prompts only: it is
  slow); its texts are the reference for agreement;
- `old`: LocalLM(engine="generate"), the earlier path: batches through `model.generate`, the
  whole prompt prefilled per row, each batch waiting for its longest row;
- `new`: LocalLM(engine="continuous"): the shared prefix computed once, continuous batching;
  in fp32, in int8-dynamic (int8 weights and activations on torch's x86 int8 kernels, CPU only),
  and in bf16 where the CPU has native bf16 (or with `--bf16`, to measure agreement on a CPU that
  emulates it; slow there);
- `llamacpp`: LlamaCppLM on the packaged GGUF (quantized as shipped), when llama-cpp-python is
  installed. Its high-level API decodes one sequence at a time (it does reuse the previous
  prompt's KV for the prefix two prompts share); multi-sequence batches exist only in its
  low-level `llama_batch` API, which adaptlab does not drive.

tokens = new tokens per answer up to and including its stop token. TTFT = seconds from the call
to the first new token of any row. Agreement = texts equal to the naive loop's (on the prompts it
ran) and, for bf16 and int8-dynamic, to the fp32 new path's (on all prompts: `agree_fp32`).

    python -m bench.teacher [--quick] [--model NAME] [--prompts 32] [--naive-prompts 8] [--bf16]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import PASSAGES, ROOT, machine_info, peak_rss_mb, run_child, write_json_atomic, write_result

TEACHER = "qwen2.5-coder-0.5b-instruct"
MAX_NEW = 48


def teacher_prompts(n: int) -> list[list[dict]]:
    """`n` teacher chats of the tone study: recipes/tone.yaml's tone and demos, passage + question."""
    import yaml

    from adaptlab.synth.simulate import Demo, ToneSpec, teacher_chat

    tone = yaml.safe_load((ROOT / "recipes" / "tone.yaml").read_text())["tone"]
    spec = ToneSpec(description=" ".join(tone["description"].split()),
                    demos=[Demo(**d) for d in tone.get("demos", [])])
    rows = [json.loads(line) for line in PASSAGES.read_text(encoding="utf-8").splitlines() if line]
    rows.sort(key=lambda r: r["id"])
    return [teacher_chat(spec, r["passage"], r["qa"][0]["question"]) for r in rows[:n]]


class FirstForward:
    """Time from `arm()` to the end of the model's first forward after it (a first token exists)."""

    def __init__(self, model):
        self.t0 = self.s = None
        model.register_forward_hook(self._hook)

    def arm(self):
        self.t0, self.s = time.perf_counter(), None

    def _hook(self, *_):
        if self.t0 is not None and self.s is None:
            self.s = time.perf_counter() - self.t0


def _count(tok, stops, ids) -> int:
    return next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))


def child(contender: str, model_ref: str, n: int, batch: int, precision: str) -> dict:
    """One contender in this process: load, warm up, time; texts and counts back as JSON."""
    import torch

    from adaptlab.lm.base import GenParams
    from adaptlab.models.chat import render_ids, stop_token_ids

    chats = teacher_prompts(n)
    params = GenParams(max_new_tokens=MAX_NEW)
    warm = GenParams(max_new_tokens=2)
    if contender == "llamacpp":
        from adaptlab.lm.llamacpp import LlamaCppLM

        lm = LlamaCppLM(model_ref, n_ctx=2048)
        lm.chat(chats[:1], warm)
        lm.completion_tokens = 0
        t = time.perf_counter()
        texts = lm.chat(chats, params)
        s = time.perf_counter() - t
        return {"texts": texts, "tokens": lm.completion_tokens, "seconds": s, "ttft_s": None,
                "peak_rss_mb": peak_rss_mb(), "gguf": lm.path.name}
    from adaptlab.lm.local import LocalLM

    engine = "generate" if contender in ("old", "naive") else "continuous"
    lm = LocalLM(model_ref, precision=precision, batch_size=batch, engine=engine)
    ff = FirstForward(lm.model)
    stops = set(stop_token_ids(lm.tok))
    if contender == "naive":
        def run(cs, p):
            out, toks = [], 0
            for c in cs:
                ids = torch.tensor([render_ids(lm.tok, c, add_generation_prompt=True)])
                with torch.no_grad():
                    g = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                          do_sample=False, max_new_tokens=p.max_new_tokens,
                                          eos_token_id=sorted(stops), pad_token_id=lm.tok.pad_token_id,
                                          temperature=None, top_p=None, top_k=None)
                new = g[0, ids.shape[1]:].tolist()
                toks += _count(lm.tok, stops, new)
                out.append(lm.tok.decode(new, skip_special_tokens=True).strip())
            return out, toks
    elif contender == "old":
        counted = {"n": 0}
        orig = lm.model.generate

        def counting(*a, **k):
            g = orig(*a, **k)
            counted["n"] += sum(_count(lm.tok, stops, r) for r in g[:, k["input_ids"].shape[1]:].tolist())
            return g

        lm.model.generate = counting

        def run(cs, p):
            counted["n"] = 0
            return lm.chat(cs, p), counted["n"]
    else:
        def run(cs, p):
            return lm.chat(cs, p), lm.last_stats.tokens

    run(chats[:2], warm)  # thread pool, allocator
    ff.arm()
    t = time.perf_counter()
    texts, tokens = run(chats, params)
    s = time.perf_counter() - t
    st = lm.last_stats if contender.startswith("new") else None
    return {"texts": texts, "tokens": tokens, "seconds": s,
            "ttft_s": st.ttft_s if st else ff.s, "peak_rss_mb": peak_rss_mb(),
            "precision": lm.precision,
            "engine_stats": None if st is None else {k: getattr(st, k) for k in
                                                     ("prefix_tokens", "prefill_tokens", "steps", "row_steps")}}


def _same(a: list[str], b: list[str]) -> int:
    return sum(x == y for x, y in zip(a, b))


def run(model: str = TEACHER, n: int = 32, naive_n: int = 8, batch: int = 32, bf16: bool | None = None,
        quick: bool = False) -> dict:
    import importlib.util

    from adaptlab.lm.engine import native_bf16

    native = native_bf16("cpu")
    plan = [("naive", naive_n, 1, "fp32"), ("old", n, batch, "fp32"), ("new", n, batch, "fp32"),
            ("new", n, batch, "int8-dynamic")]
    if native if bf16 is None else bf16:
        plan.append(("new", n, batch, "bf16"))
    has_llamacpp = importlib.util.find_spec("llama_cpp") is not None
    if has_llamacpp:
        plan.append(("llamacpp", n, 1, "q"))
    rows, machine, failed = [], None, []
    for name, k, bs, prec in plan:
        print(f"[bench] teacher: {name} {prec}, {k} prompts, batch {bs}", file=sys.stderr, flush=True)
        try:
            res = run_child("bench.teacher", ["--child", name, "--model", model, "--prompts",
                                              str(k), "--batch", str(bs), "--precision", prec])
        except RuntimeError as e:
            if name != "llamacpp":  # ours must run; the optional outside contender may not
                raise
            failed.append({"contender": name, "error": str(e).rsplit(" failed ", 1)[-1]})
            print(f"[bench] teacher: {name} failed ({failed[-1]['error']}); recorded, not shown",
                  file=sys.stderr, flush=True)
            continue
        machine = res.pop("machine", machine)
        res.update(contender=name, batch_size=bs, prompts=k,
                   tokens_per_s=round(res["tokens"] / res["seconds"], 2))
        rows.append(res)
        print(f"[bench] teacher: {name} {prec}: {res['tokens_per_s']} tok/s, {res['seconds']:.1f} s",
              file=sys.stderr, flush=True)
    naive = rows[0]["texts"]
    old = rows[1]
    fp32 = rows[2]["texts"]
    for r in rows:
        r["speedup_vs_old"] = round(r["tokens_per_s"] / old["tokens_per_s"], 2)
        if r["contender"] != "llamacpp":
            r["identical_to_naive"] = [_same(naive, r["texts"]), len(naive)]
        if r["contender"] == "new" and r.get("precision") != "fp32":
            r["agree_fp32"] = [_same(fp32, r["texts"]), len(fp32)]
        if r["contender"] in ("new", "old"):
            r["identical_to_old"] = [_same(old["texts"], r["texts"]), len(old["texts"])]
    data = {"model": model, "greedy": True, "max_new_tokens": MAX_NEW, "prompts": n,
            "naive_prompts": naive_n, "native_bf16": native, "llama_cpp_installed": has_llamacpp,
            "rows": rows, "failed": failed,
            "notes": ["tokens = new tokens per answer up to and including its stop token",
                      "ttft_s = seconds from the call to the first new token (old/naive: the end of "
                      "the first forward after the call)",
                      f"naive ran on the first {naive_n} prompts only; identical_to_naive compares "
                      "those", "each contender ran in its own process, timed after a warm-up call"]}
    write_result("teacher" if model == TEACHER else f"teacher-{model}", data, machine, quick)
    print(table(data))
    return data


def table(r: dict) -> str:
    """The Markdown table of one result."""
    lines = [f"**Teacher generation** — {r['model']}, greedy, {r['max_new_tokens']} new tokens max, "
             f"{r['prompts']} tone-study teacher prompts (naive loop: first {r['naive_prompts']}).\n",
             "| contender | precision | batch | prompts | tokens/s | × old LocalLM | TTFT s | "
             "peak RAM MB | = naive | = old | = fp32 new |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    label = {"naive": "naive generate loop", "old": "LocalLM, engine=generate (previous)",
             "new": "LocalLM, engine=continuous (new)", "llamacpp": "LlamaCppLM (GGUF as shipped)"}

    def frac(v):
        return f"{v[0]}/{v[1]}" if v else "–"

    for c in r["rows"]:
        ttft = f"{c['ttft_s']:.2f}" if c.get("ttft_s") is not None else "–"
        lines.append(f"| {label[c['contender']]} | {c.get('precision', 'q')} | {c['batch_size']} | "
                     f"{c['prompts']} | {c['tokens_per_s']:.1f} | {c['speedup_vs_old']:.2f}× | {ttft} | "
                     f"{c['peak_rss_mb']:,.0f} | {frac(c.get('identical_to_naive'))} | "
                     f"{frac(c.get('identical_to_old'))} | {frac(c.get('agree_fp32'))} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=TEACHER)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--naive-prompts", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--bf16", action="store_true", default=None,
                   help="add the bf16 contender even where the CPU has no native bf16 (slow there)")
    p.add_argument("--quick", action="store_true",
                   help="8 prompts at batch 8, naive on 4; results under bench/results/quick/")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        res = child(a.child, a.model, a.prompts, a.batch, a.precision)
        write_json_atomic(Path(a.json_out), {**res, "machine": machine_info()})
        return
    if a.quick:
        run(a.model, 8, 4, 8, a.bf16, quick=True)
    else:
        run(a.model, a.prompts, a.naive_prompts, a.batch, a.bf16)


if __name__ == "__main__":
    main()
