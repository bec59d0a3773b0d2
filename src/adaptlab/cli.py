"""`adaptlab` command line: one thin command per library call."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import AdaptlabError, missing_extra


def _print_table(rows: list[dict], cols: list[str]) -> None:
    """Columns padded to their widest cell, except the last (a long last cell pads nothing)."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    for cells in [cols, *([str(r.get(c, "")) for c in cols] for r in rows)]:
        print("  ".join(v.ljust(widths[c]) for v, c in zip(cells[:-1], cols)) + "  " + cells[-1])


def cmd_models(a) -> int:
    from .models import list_models, resolve

    if a.prepare:
        for name in a.prepare:
            print(resolve(name))
        return 0
    rows = list_models()
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "role", "installed", "cached", "size_mb", "licence"])
    return 0


def cmd_tune(a) -> int:
    from .api import tune

    summary = tune(a.data, out=a.out, model=a.model, merge=a.merge, overrides=a.overrides)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_generate(a) -> int:
    from .api import generate

    n = generate(a.model, a.input, a.out, adapter=a.adapter, system=a.system, overrides=a.overrides)
    print(f"wrote {n} answers to {a.out}")
    return 0


def cmd_validate(a) -> int:
    from .data import load_examples

    ex = load_examples(a.file, require_reply=not a.prompts_only)
    print(f"{a.file}: {len(ex)} valid examples")
    return 0


def cmd_run(a) -> int:
    from .api import run

    result = run(a.recipe, a.overrides, only=a.only, start=a.start, force=a.force,
                 dry_run=a.dry_run)
    if a.dry_run:
        _print_table(result["stages"], ["stage", "status", "seed", "inputs"])
        return 0
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_explain(a) -> int:
    from .evaluate.stats import fmt_ci
    from .synth.rationales import explain_file

    st = explain_file(a.data, a.out, a.overrides, model=a.teacher, max_new_tokens=a.max_new_tokens,
                      samples=a.samples, temperature=a.temperature)
    print(json.dumps(st, indent=2))
    rate = fmt_ci(st["keep_rate"], st["keep_rate_ci"]) if st["asked"] else "n/a"
    print(f"wrote {st['kept'] + st['already_explained']} records to {a.out}: kept {st['kept']} "
          f"of {st['asked']} explained by the teacher (keep rate {rate}), "
          f"{st['already_explained']} already explained")
    return 0


def cmd_judge(a) -> int:
    from .api import judge

    rows = judge(a.recipe, a.file, out=a.out, overrides=a.overrides)
    if a.out:
        print(f"wrote {len(rows)} judged texts to {a.out}")
    else:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
    return 0


def cmd_mauve(a) -> int:
    from .evaluate.mauve import mauve_texts
    from .data.corpus import load_texts

    p, q = load_texts(a.p), load_texts(a.q)  # both checked before the embedder loads
    print(f"{mauve_texts(p, q, features=a.features, seed=a.seed).score:.4f}")
    return 0


def _adapter_args(values: list[str] | None) -> dict[str, str]:
    """--adapter values (NAME=DIR, or DIR served under its directory's name) -> {name: dir}."""
    from pathlib import Path

    out: dict[str, str] = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or os.path.isdir(v):
            name, path = Path(v).name, v
        if name in out:
            raise AdaptlabError(f"--adapter: two adapters named {name!r} (name one NAME=DIR)")
        out[name] = path
    return out


def cmd_serve(a) -> int:
    from .serve import serve_model

    serve_model(a.model, adapters=_adapter_args(a.adapter), host=a.host, port=a.port,
                api_key_env=a.api_key_env, precision=a.precision, batch_size=a.batch_size)
    return 0


def cmd_listops(a) -> int:
    from .data.listops import OPS, ListOpsConfig, generate, write_jsonl

    try:
        cfg = ListOpsConfig(n=a.n, depth=a.depth, classes=a.classes, max_args=a.max_args,
                            min_args=a.min_args, ops=tuple(a.ops or OPS), seed=a.seed,
                            exact_depth=a.exact_depth)
    except ValueError as e:
        raise AdaptlabError(f"listops: {e}") from None
    examples = generate(cfg)
    write_jsonl(a.out, examples)
    print(f"wrote {len(examples)} examples to {a.out}")
    return 0


def cmd_runs(a) -> int:
    from .runs.index import RunIndex
    from .runs.stage import runs_root

    rows = RunIndex(runs_root() / "index.sqlite").list()
    for r in rows:
        r["metrics"] = ", ".join(f"{k}={v}" for k, v in list(r["metrics"].items())[:6])
    if a.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _print_table(rows, ["name", "study", "status", "started", "metrics"])
    else:
        print("no runs yet")
    return 0


def _fail(e: AdaptlabError) -> int:
    msg = " ".join(str(e).splitlines())  # one line, whatever a message holds
    print(f"adaptlab: error: {msg}", file=sys.stderr)
    return e.exit_code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaptlab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("models", help="list packaged offline models (installed? cached? size, licence)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--prepare", nargs="+", metavar="NAME", help="convert these to safetensors now")
    s.set_defaults(fn=cmd_models)

    s = sub.add_parser("tune", help="LoRA fine-tune a chat model on a data file")
    s.add_argument("--data", required=True, help="JSONL/Parquet/dataset dir of chat examples")
    s.add_argument("--model", help="packaged name, dir or hub id (default: smollm2-135m-instruct)")
    s.add_argument("--out", required=True, help="output adapter directory")
    s.add_argument("--merge", action="store_true", help="also write a merged model to OUT/merged")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="TuneConfig fields, e.g. lora_r=16")
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("generate", help="answer the prompts of a data file with a local model")
    s.add_argument("--model", default="smollm2-135m-instruct")
    s.add_argument("--adapter", help="LoRA adapter directory")
    s.add_argument("--input", required=True, help="JSONL/Parquet of chats (last turn: user)")
    s.add_argument("--out", required=True, help="output JSONL: input chats + generated reply")
    s.add_argument("--system", help="system prompt added to every chat")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="max_new_tokens, temperature, top_p, seed, batch_size, precision")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("validate", help="check a data file; print the first error")
    s.add_argument("file")
    s.add_argument("--prompts-only", action="store_true", help="chats may end on a user turn")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("run", help="run a recipe's stages into runs/<name>/ (resumes, skips done)")
    s.add_argument("recipe", help="recipe YAML, e.g. recipes/tone.yaml")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--only", metavar="STAGE", help="run just this stage (its inputs must exist)")
    g.add_argument("--from", dest="start", metavar="STAGE",
                   help="run this stage and the ones after it (earlier outputs must exist)")
    s.add_argument("--force", action="store_true", help="re-run the selected stages even if cached")
    s.add_argument("--dry-run", action="store_true",
                   help="list the stages and whether each is cached (cached/stale/new/partial/"
                        "waiting); run nothing")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("explain", help="have a teacher explain each record; keep those that reach "
                                       "the gold answer")
    s.add_argument("--data", required=True, help="JSONL/Parquet of chats (last turn: gold answer)")
    s.add_argument("--out", required=True, help="output JSONL: the kept records with `explanation`")
    s.add_argument("--teacher", help="teacher model (default: qwen2.5-coder-0.5b-instruct)")
    s.add_argument("--max-new-tokens", type=int, help="tokens per explanation (default 256)")
    s.add_argument("--samples", type=int, help="tries per item, with --temperature > 0 (default 1)")
    s.add_argument("--temperature", type=float, help="0 = greedy (default)")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="teacher BackendConfig fields (backend, base_url, batch_size, precision) "
                        "or seed, instruction")
    s.set_defaults(fn=cmd_explain)

    s = sub.add_parser("judge", help="score texts with a recipe's calibrated judges (one JSON line each)")
    s.add_argument("recipe", help="recipe YAML whose judges to use, e.g. recipes/tone.yaml")
    s.add_argument("file", help='JSONL with one {"text": ...} per line')
    s.add_argument("--out", help="write the JSON lines here instead of printing them")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="dotted recipe overrides")
    s.set_defaults(fn=cmd_judge)

    s = sub.add_parser("mauve", help="MAUVE between two sets of texts (prints the score only)")
    s.add_argument("p", metavar="P.jsonl", help='JSONL with one {"text": ...} per line')
    s.add_argument("q", metavar="Q.jsonl", help="the texts to compare with, same format")
    s.add_argument("--features", default="minilm-l6",
                   help="sentence-embedding model the texts are featurized with (default minilm-l6)")
    s.add_argument("--seed", type=int, default=25, help="seed of the k-means (default 25)")
    s.set_defaults(fn=cmd_mauve)

    s = sub.add_parser("listops", help="generate Explained-ListOps examples (answers + 3 levels "
                                        "of explanation) as JSONL")
    s.add_argument("--n", type=int, required=True, help="number of examples")
    s.add_argument("--depth", type=int, default=2, help="maximum nesting depth (default 2)")
    s.add_argument("--classes", type=int, default=10, help="K: SM is the sum mod K (default 10)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output JSONL")
    s.add_argument("--max-args", type=int, default=4, help="most operands of one operator")
    s.add_argument("--min-args", type=int, default=2, help="fewest operands of one operator")
    s.add_argument("--ops", nargs="+", metavar="OP", help="operators (default: MIN MAX MED SM)")
    s.add_argument("--exact-depth", action="store_true", help="every expression --depth deep")
    s.set_defaults(fn=cmd_listops)

    s = sub.add_parser("runs", help="list runs and their key metrics")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_runs)

    s = sub.add_parser("serve", help="serve a local model (+ LoRA adapters, by name) over an "
                                      "OpenAI-compatible HTTP API")
    s.add_argument("--model", default="smollm2-135m-instruct",
                   help="packaged name, dir or hub id (served under this name)")
    s.add_argument("--adapter", action="append", metavar="[NAME=]DIR",
                   help="LoRA adapter directory served as model NAME (default: the directory's "
                        "name); repeatable; more can be added at run time (POST /v1/adapters)")
    s.add_argument("--precision", default="fp32",
                   help="fp32 | bf16 | int8 | int8-dynamic (CPU, no adapters) | auto (default fp32)")
    s.add_argument("--batch-size", type=int, default=8,
                   help="decode slots: requests waiting together are generated as one batch")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs an API key)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key-env", metavar="NAME",
                   help="variable holding the key clients must send (default: ADAPTLAB_API_KEY if set)")
    s.set_defaults(fn=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except AdaptlabError as e:
        return _fail(e)
    except ImportError as e:  # an extra not installed, imported deep inside a call
        hint = missing_extra(e)
        if hint is None:
            raise
        return _fail(hint)
    except KeyboardInterrupt:
        print("adaptlab: interrupted (finished work is kept; run again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
