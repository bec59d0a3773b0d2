"""The explanations study's stages before evaluation: data and tune (`fn(config, inputs, ctx)`,
each receiving only its own dataclass from explain_config)."""
from __future__ import annotations

from pathlib import Path

from ..errors import AdaptlabError
from ..io import read_jsonl, write_json, write_jsonl
from .explain_config import DataStage, TuneStage


# -- data ------------------------------------------------------------------------------------
def data_stage(cfg: DataStage, inputs: dict[str, Path], ctx) -> dict:
    """One pool of distinct expressions split into train / val / test, and a deeper test set."""
    from ..data.listops import ListOpsConfig, generate

    t = cfg.task
    shape = dict(depth=t.depth, classes=t.classes, min_args=t.min_args, max_args=t.max_args,
                 ops=tuple(t.ops))
    pool = generate(ListOpsConfig(n=cfg.test_n + cfg.train_n + cfg.val_n, seed=cfg.seed, **shape))
    # test first, then train: a larger N or another val_n leaves the earlier rows as they were
    parts = {"test": pool[:cfg.test_n], "train": pool[cfg.test_n:cfg.test_n + cfg.train_n],
             "val": pool[cfg.test_n + cfg.train_n:]}
    seen = {e["expression"] for e in parts["test"]}
    clash = sum(e["expression"] in seen for e in parts["train"] + parts["val"])
    if clash:
        raise AdaptlabError(f"data-{t.name}: {clash} training or validation expressions repeat "
                            "test ones: the expression space is too small for these sizes "
                            "(raise depth, max_args or the operators, or lower the sizes)")
    if t.deeper:
        parts["deeper"] = generate(ListOpsConfig(n=t.deeper, seed=cfg.seed + 1, exact_depth=True,
                                                 **{**shape, "depth": t.depth + 1}))
    for name, rows in parts.items():
        write_jsonl(ctx.dir / f"{name}.jsonl", rows)
    for n in cfg.sizes:  # each tune stage reads only its own N: adding an N retrains nothing
        write_jsonl(ctx.dir / f"train-n{n}.jsonl", parts["train"][:n])
    return {k: len(v) for k, v in parts.items()}


# -- tune ------------------------------------------------------------------------------------
def records(examples: list[dict], level: str) -> list[dict]:
    from ..data.listops import to_record

    return [to_record(ex, level) for ex in examples]


def target_of(level: str) -> str:
    """The TuneConfig target a level trains with."""
    return "answer" if level == "none" else "explained"


def trained_on(rec: dict, level: str, template: str) -> list[dict]:
    """The chat a record trains on at this level: the training formatter's own output."""
    from ..train.config import TuneConfig
    from ..train.formatters import formatter_for

    return formatter_for(TuneConfig(target=target_of(level), explanation_template=template))(rec)


def token_budget(tok, recs: list[dict], level: str, template: str) -> int:
    """New tokens for a level: the longest gold target among `recs` in this tokenizer, plus a
    margin, so no answer is cut short and none decodes far past what it needs."""
    longest = max(len(tok(trained_on(r, level, template)[-1]["content"])["input_ids"]) for r in recs)
    return longest + 16


def accuracy_hook(cfg: TuneStage, val: list[dict]):
    """Validation accuracy every few steps: greedy answers parsed, per-item outcomes kept."""
    from ..data.listops import parse_answer
    from ..evaluate.metrics import bits
    from ..lm.base import GenParams
    from ..lm.local import LocalLM

    recs = records(val, cfg.level)
    budget: list[int] = []  # the tokenizer arrives with the first call; the budget never changes

    def hook(step: int, model, tok) -> dict:
        lm = LocalLM(cfg.tune.model, model=model, tokenizer=tok, batch_size=len(recs),
                     device=str(getattr(model, "device", "cpu")))  # where training put it
        budget[:] = budget or [token_budget(tok, recs, cfg.level, cfg.tune.explanation_template)]
        params = GenParams(max_new_tokens=budget[0])
        outs = lm.chat([r["messages"][:1] for r in recs], params)
        ok = [parse_answer(o) == r["answer"] for o, r in zip(outs, recs)]
        return {"accuracy": round(sum(ok) / len(ok), 4), "items": bits(ok)}
    return hook


def tune_stage(cfg: TuneStage, inputs: dict[str, Path], ctx) -> dict:
    """Tune on the first N training expressions, targets at this level."""
    from ..train.lora import tune

    train = read_jsonl(inputs["train"])
    hook = accuracy_hook(cfg, read_jsonl(inputs["val"])) if "val" in inputs else None
    summary = tune(cfg.tune, records(train, cfg.level), ctx.dir, source=str(inputs["train"]),
                   eval_hook=hook)
    tuned = {"task": cfg.task, "model": cfg.tune.model, "level": cfg.level, "n": len(train),
             "seed": cfg.seed, "method": cfg.tune.method, "steps": summary["steps"]}
    write_json(ctx.dir / "tuned.json", tuned)
    return {**tuned, "final_loss": summary["final_loss"]}
