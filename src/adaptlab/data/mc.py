"""Multiple-choice questions: read them (JSONL, MMLU-style CSV, a Hugging Face dataset when
online), check every line, and render them as the prompts a probe scores.

JSONL, one question per line:
  {"question": str, "options": [4 strings], "answer": "A".."D", "domain": str}
MMLU-style CSV (no header): question, option A, B, C, D, answer letter; the domain is the file
name without a trailing _test / _dev / _val (`high_school_geography_test.csv`).
Hugging Face: `hf:<dataset>[:<config>[:<split>]]` with MMLU's fields (question, choices, answer
as an index, subject), e.g. `hf:cais/mmlu:all:test`.

Every question gets a stable `id`: `<domain>:<first 10 hex of the sha1 of its question text>`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from ..errors import AdaptlabError, InputError

LETTERS = ("A", "B", "C", "D")
_DOMAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_ -]*")


def question_id(domain: str, question: str) -> str:
    return f"{domain}:{hashlib.sha1(question.encode()).hexdigest()[:10]}"


def check_question(rec: object, path: str, line: int) -> dict:
    """One question, checked field by field (InputError names the file, line and field)."""
    def bad(field: str | None, problem: str):
        return InputError(path, line, field, problem)

    if not isinstance(rec, dict):
        raise bad(None, f"expected a JSON object, got {type(rec).__name__}")
    for key in ("question", "options", "answer", "domain"):
        if key not in rec:
            raise bad(key, "missing field")
    q, opts, ans, dom = rec["question"], rec["options"], rec["answer"], rec["domain"]
    if not isinstance(q, str) or not q.strip():
        raise bad("question", "expected a non-empty string")
    if (not isinstance(opts, list) or len(opts) != 4
            or not all(isinstance(o, str) and o.strip() for o in opts)):
        raise bad("options", "expected a list of 4 non-empty strings")
    if len({o.strip() for o in opts}) != 4:
        raise bad("options", "two options are the same")
    if ans not in LETTERS:
        raise bad("answer", f"expected one of A, B, C, D, got {ans!r}")
    if not isinstance(dom, str) or not _DOMAIN.fullmatch(dom):
        raise bad("domain", "expected a name of letters, digits, '_', '-' or spaces")
    return {"id": question_id(dom, q), "question": q.strip(), "options": [o.strip() for o in opts],
            "answer": ans, "domain": dom}


def _jsonl(path: Path) -> list[tuple[int, object]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                out.append((n, json.loads(raw)))
            except json.JSONDecodeError as e:
                raise InputError(str(path), n, None, f"not valid JSON ({e.msg})") from None
    return out


def _csv(path: Path) -> list[tuple[int, object]]:
    domain = re.sub(r"_(test|dev|val)$", "", path.stem)
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) != 6:
                raise InputError(str(path), n, None, f"expected 6 columns (question, A, B, C, D, "
                                                     f"answer), got {len(row)}")
            out.append((n, {"question": row[0], "options": row[1:5], "answer": row[5].strip(),
                            "domain": domain}))
    return out


def _hf(spec: str) -> list[dict]:
    """`hf:<dataset>[:<config>[:<split>]]`, MMLU's fields (needs `datasets` and the network)."""
    try:
        import datasets
    except ImportError:
        raise AdaptlabError(f"{spec}: reading a Hugging Face dataset needs `pip install datasets` "
                            "(and the network)") from None
    name, config, split = (spec[3:].split(":") + [None, None])[:3]
    ds = datasets.load_dataset(name, config or None, split=split or "test")
    out = []
    for i, r in enumerate(ds, 1):
        rec = {"question": r["question"], "options": list(r["choices"]),
               "answer": LETTERS[int(r["answer"])] if int(r["answer"]) in range(4) else r["answer"],
               "domain": r.get("subject") or name.rsplit("/", 1)[-1]}
        out.append(check_question(rec, spec, i))
    return out


def load_questions(sources: list[str]) -> list[dict]:
    """Every question of every source (files, directories of *.jsonl / *.csv, `hf:` specs), in
    order; a question text repeated within a domain is refused with both places named."""
    out, seen = [], {}
    for src in sources:
        if src.startswith("hf:"):
            rows = [(spec_i, rec, src) for spec_i, rec in enumerate(_hf(src), 1)]
        else:
            p = Path(src)
            files = sorted(p.glob("*.jsonl")) + sorted(p.glob("*.csv")) if p.is_dir() else [p]
            if not files or not all(f.exists() for f in files):
                raise AdaptlabError(f"{src}: no such file, or a directory without .jsonl / .csv files")
            rows = []
            for f in files:
                read = _csv if f.suffix == ".csv" else _jsonl
                rows += [(n, check_question(rec, str(f), n), str(f)) for n, rec in read(f)]
        for n, q, where in rows:
            if q["id"] in seen:
                raise InputError(where, n, "question", f"repeats {seen[q['id']]}")
            seen[q["id"]] = f"{where}:{n}"
            out.append(q)
    if not out:
        raise AdaptlabError(f"{', '.join(sources)}: no questions")
    return out


# -- prompts ---------------------------------------------------------------------------------
FORMS = ("letters", "texts")
"""letters: the options are listed A-D and the answer is a letter (the MMLU form); texts: the
cloze form, the question alone and the answer an option's text (what models under ~1B answer
above chance: they have not learned to bind option letters to options)."""


def topic(domain: str) -> str:
    return domain.replace("_", " ")


def _form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"form '{form}': expected one of {', '.join(FORMS)}")
    return form


def render(q: dict, answer: str | None = None, form: str = "letters") -> str:
    """The question (with its lettered options in the letters form) and `Answer:`, followed by
    the answer for a demo: its letter, or its option's text in the texts form."""
    if _form(form) == "texts":
        text = q["options"][LETTERS.index(answer)] if answer else None
        return f"Question: {q['question']}\nAnswer:" + (f" {text}" if text else "")
    opts = "\n".join(f"{L}. {o}" for L, o in zip(LETTERS, q["options"]))
    return f"{q['question']}\n{opts}\nAnswer:" + (f" {answer}" if answer else "")


def zero_shot(q: dict, form: str = "letters") -> list[dict]:
    """The chat a tuned or base model is asked: one question, no demos."""
    return [{"role": "user", "content": f"The following is a {'multiple choice ' * (form == 'letters')}"
                                        f"question about {topic(q['domain'])}.\n\n{render(q, form=form)}"}]


def few_shot(q: dict, demos: list[dict], form: str = "letters") -> list[dict]:
    """The probe's k-shot prompt (the paper's MMLU form): a header naming the domain, k solved
    questions, then this one. Questions of a domain share it all up to their own text."""
    shots = "".join(render(d, d["answer"], form) + "\n\n" for d in demos)
    kind = "multiple choice questions" if form == "letters" else "questions"
    return [{"role": "user", "content": f"The following are {kind} (with answers) about "
                                        f"{topic(q['domain'])}.\n\n{shots}{render(q, form=form)}"}]


def reply(q: dict, letter: str, form: str = "letters") -> str:
    """A tuned answer's first words: the letter (what the letters probe reads) and its option's
    text; in the texts form the option's text alone (what the texts probe scores)."""
    text = q["options"][LETTERS.index(letter)]
    return text if _form(form) == "texts" else f"{letter}. {text}"
