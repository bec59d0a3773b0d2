"""Teacher-written explanations for a task without any, kept only where they reach the gold answer.

Each chat record (its final assistant message is the gold answer) is put to the teacher without
that answer, with `RationaleConfig.instruction` appended to the last user turn (not as a system
message: a record's own system message stays first, and small teachers follow an instruction
next to the question best). The reply is kept as the record's `explanation` only if its last
"The answer is X" states the gold answer; the explanation is the reasoning before that line, so
`target=explained` (which appends "The answer is {answer}.") does not say it twice. With
`samples` > 1 an item whose reply was rejected is asked again, up to `samples` tries in all.

Replies are journaled as they arrive (each chunk of each try with its own seed), so a killed run
resumes where it stopped and produces exactly what an uninterrupted run would, as in simulate.py.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import progress as _progress
from ..errors import AdaptlabError
from ..io import append_jsonl, read_journal, sha256_json
from ..lm.base import GenParams, chat_each
from ..lm.config import BackendConfig

_ANSWER = re.compile(r"the answer is\b:?[ \t]*(.*)", re.IGNORECASE)
INSTRUCTION = ("Think step by step: explain your reasoning in a few short sentences, then end with "
               "a final line of the form \"The answer is X.\", where X is the answer alone.")
REASONS = ("wrong_answer", "no_answer", "empty_reasoning")


@dataclass
class RationaleConfig:
    """How the teacher is asked for explanations."""

    teacher: BackendConfig = field(default_factory=BackendConfig)
    """Where the teacher runs (model, backend, batch size; the batch size is also the chunk of
    chats asked at once)."""
    max_new_tokens: int = 256
    """Upper bound on tokens per explanation."""
    temperature: float = 0.0
    """0 = greedy; retries (`samples` > 1) need sampling."""
    instruction: str = INSTRUCTION
    """Appended to each record's last user turn; must ask for a final "The answer is X." line."""
    samples: int = 1
    """Tries per item (temperature > 0): the first reply that reaches the gold answer is kept."""
    seed: int = 0
    """Sampling seed; each chunk of each try gets its own, derived from it."""

    def __post_init__(self) -> None:
        self.params(self.seed)  # checks max_new_tokens and temperature
        if not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be finite, got {self.temperature}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0 (greedy tries are all the same)")
        if not self.instruction.strip():
            raise ValueError("instruction must not be empty")

    def params(self, seed: int) -> GenParams:
        """The sampling parameters of one chunk of chats."""
        return GenParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                         seed=seed)


def _last_answer(text: str) -> re.Match | None:
    matches = list(_ANSWER.finditer(text))
    return matches[-1] if matches else None


def final_answer(text: str) -> str | None:
    """X of the last "The answer is X" (case-insensitive, to the end of its line), without
    trailing periods, whitespace or markdown asterisks; None if there is none or X is empty."""
    m = _last_answer(text)
    answer = m.group(1).strip().strip("*").strip().rstrip(".").strip() if m else ""
    return answer or None


def same_answer(a: str | None, b: str | None) -> bool:
    """Whether two answers agree: stripped, casefolded, trailing period dropped; numerically when
    both parse as numbers ("13" == "13.0")."""
    if a is None or b is None:
        return False
    a, b = (s.strip().casefold().rstrip(".").strip() for s in (a, b))
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return a == b


def check_reply(text: str, gold: str) -> tuple[str | None, str]:
    """(None, explanation) for a reply to keep, else (reason, ""), reason one of REASONS."""
    answer = final_answer(text)
    if answer is None:
        return "no_answer", ""
    if not same_answer(answer, gold):
        return "wrong_answer", ""
    m = _last_answer(text)
    reasoning = text[: m.start()].rstrip().rstrip("*").strip()
    return (None, reasoning) if reasoning else ("empty_reasoning", "")


def teacher_chat(record: dict, instruction: str) -> list[dict]:
    """The record's chat up to its last user turn, the instruction appended to that turn."""
    from ..data import prompt_turns

    chat = [dict(m) for m in prompt_turns(record["messages"])]
    chat[-1]["content"] = f"{chat[-1]['content']}\n\n{instruction}"
    return chat


def _open_journal(journal: Path | None, fingerprint: str) -> dict:
    """{(item, try): reply} from the journal; a new journal starts with the run's fingerprint."""
    rows = read_journal(journal) if journal is not None else []
    if not rows:
        if journal is not None:
            append_jsonl(journal, [{"fingerprint": fingerprint}])
        return {}
    if rows[0].get("fingerprint") != fingerprint:
        raise AdaptlabError(f"{journal}: journal of another input, teacher or config; "
                            "delete it to start over")
    return {(r["item"], r["try"]): r["text"] for r in rows[1:]}


def _ask(lm, records, items: list[int], t: int, cfg: RationaleConfig, answers: dict,
         journal: Path | None, pb) -> None:
    """Try `t` for `items`, a chunk of `teacher.batch_size` at a time, each with its own seed;
    each reply is journaled as soon as it arrives."""
    chunk = cfg.teacher.batch_size
    for k in range(0, len(items), chunk):
        ch = items[k : k + chunk]
        if all((i, t) in answers for i in ch):
            continue
        if getattr(lm, "answers_each", False):  # answered independently: ask only the missing
            ch = [i for i in ch if (i, t) not in answers]
        params = cfg.params(cfg.seed + t * len(records) + k // chunk)

        def keep(j: int, text: str, ch=ch) -> None:
            if (ch[j], t) in answers:
                return  # answered before a restart; a local teacher was asked its chunk again
            if journal is not None:
                append_jsonl(journal, [{"item": ch[j], "try": t, "text": text}])
            answers[(ch[j], t)] = text
            pb.update(1)

        chat_each(lm, [teacher_chat(records[i], cfg.instruction) for i in ch], params, keep)


def explain(records: Sequence[dict], lm, cfg: RationaleConfig,
            journal: Path | None = None) -> tuple[list[dict], dict]:
    """(records to keep, stats): the records given explanations, in input order with those that
    already had one (unchanged); resumable from `journal` (None: nothing is journaled).

    stats: items, already_explained, asked, kept, keep_rate (kept / asked; None if none was
    asked), keep_rate_ci (95% Wilson), and per dropped item the reason its last try failed:
    wrong_answer, no_answer, empty_reasoning."""
    answers = _open_journal(journal, sha256_json([dataclasses.asdict(cfg), lm.name, list(records)]))
    if answers:
        _progress.log(f"explain: {len(answers)} replies journaled earlier in {journal}")
    todo = [i for i, r in enumerate(records) if r.get("explanation") is None]
    kept: dict[int, str] = {}
    why: dict[int, str] = {}
    try:
        for t in range(cfg.samples):
            ask = [i for i in todo if i not in kept]
            if not ask:
                break
            with _progress.bar(total=len(ask), desc=f"explain try {t + 1}", unit="item") as pb:
                pb.update(sum((i, t) in answers for i in ask))
                _ask(lm, records, ask, t, cfg, answers, journal, pb)
            for i in ask:
                reason, text = check_reply(answers[(i, t)], records[i]["messages"][-1]["content"])
                if reason is None:
                    kept[i] = text
                else:
                    why[i] = reason
    except BaseException:
        if journal is not None:
            _progress.log(f"explain: stopped with {len(answers)} replies kept in {journal}; "
                          "run again to resume")
        raise
    out = [r if i not in kept else {**r, "explanation": kept[i]} for i, r in enumerate(records)
           if i in kept or r.get("explanation") is not None]
    return out, _stats(len(records), len(todo), len(kept), [why[i] for i in todo if i not in kept])


def _stats(items: int, asked: int, kept: int, reasons: list[str]) -> dict:
    from ..evaluate.stats import wilson

    return {"items": items, "already_explained": items - asked, "asked": asked, "kept": kept,
            "keep_rate": kept / asked if asked else None, "keep_rate_ci": list(wilson(kept, asked)),
            **{r: reasons.count(r) for r in REASONS}}


def rationale_config(overrides: list[str] | None = None, model: str | None = None,
                     **given) -> RationaleConfig:
    """RationaleConfig from `key=value` overrides: its own fields by name, any other key a field
    of the teacher's BackendConfig (`backend=openai`, `batch_size=4`); `model` and the `given`
    fields that are not None win over them."""
    from ..config import from_dict, parse_overrides

    pairs = parse_overrides(overrides or [])
    own = {f.name for f in dataclasses.fields(RationaleConfig)}
    data = {k: v for k, v in pairs.items() if k in own}
    teacher = data.get("teacher", {})
    if isinstance(teacher, dict):  # else from_dict says what is wrong with it
        data["teacher"] = {**teacher, **{k: v for k, v in pairs.items() if k not in own},
                           **({"model": model} if model else {})}
    return from_dict(RationaleConfig, {**data, **{k: v for k, v in given.items() if v is not None}})


def explain_file(data: str | Path, out: str | Path, overrides: list[str] | None = None,
                 model: str | None = None, **given) -> dict:
    """Explain the records of `data` with the teacher and write the kept ones to `out` (JSONL,
    atomically, at the end); a killed run resumes from `out`.journal. Returns the stats."""
    from ..data import load_examples
    from ..io import write_jsonl
    from ..lm.registry import make_lm

    cfg = rationale_config(overrides, model, **given)
    records = load_examples(data)  # a bad record stops here, before any model loads
    if cfg.teacher.backend == "local":
        from ..models import resolve

        resolve(cfg.teacher.model, convert=False)
    journal = Path(f"{out}.journal")
    kept, stats = explain(records, make_lm(cfg.teacher), cfg, journal)
    write_jsonl(out, kept)
    journal.unlink()
    return stats
