"""The SoftSRV study's three domains: their targets (the text a generator learns to write), the
hard-prompt template, how a synthetic sample is parsed into a training record, and how a
student's answer to a test item is scored.

Target texts:
  code          HumanEval prompt + canonical solution (a function with its docstring and body)
  wordproblems  "Question: <question>\\nAnswer: <worked steps> The answer is N."
  boolq         "Passage: <passage>\\nQuestion: <yes/no question>\\nAnswer: yes|no"

Training records (chat, loss on the assistant turn) and test prompts share one shape per domain,
so the tuned student is asked exactly what it was trained on:
  code          user: the function up to the end of its docstring; assistant: the complete
                code in a python fence (a bare body would start with indentation, which the
                tokenizer merges with the chat template's newline: the assistant turn could
                not be masked; a fenced function is also what chat students reply)
  wordproblems  user: the question; assistant: the worked answer
  boolq         user: "Passage: ...\\nQuestion: ..."; assistant: "yes" | "no"
"""
from __future__ import annotations

import ast
import re

from ..evaluate.qa import extract_number

WHAT = {
    "code": "Python functions, each with its signature, a docstring with examples, and its "
            "implementation",
    "wordproblems": "arithmetic word problems, each with a step-by-step answer that ends with "
                    "\"The answer is N.\"",
    "boolq": "reading comprehension items, each a passage, a yes/no question about it, and "
             "the answer",
}
"""What the hard prompt says the examples are."""

MARK = "### Example"

FEWSHOT_TEMPLATE = ("Below are {k} examples of {what}. Write one new example in exactly the "
                    "same format, different from the ones shown.\n\n{examples}"
                    + MARK + " {next}\n")
"""The hard prompt of both fewshot methods (Sec. 4 of the paper: a hand-written template with
target examples in it). {examples} is "### Example i\\n<target text>\\n\\n" for each of the k
fit targets drawn for this sample; the reply is cut at the next "### Example". fewshot feeds it
to the frozen LM as plain text to continue (no chat template); fewshot-teacher sends it as the
one user turn of a chat."""


def fewshot_prompt(domain: str, shots: list[str]) -> str:
    examples = "".join(f"{MARK} {i}\n{t}\n\n" for i, t in enumerate(shots, 1))
    return FEWSHOT_TEMPLATE.format(k=len(shots), what=WHAT[domain], examples=examples,
                                   next=len(shots) + 1)


_PARTIAL_MARK = re.compile(r"\n[ \t]*#{1,3}(?: E[a-z]*)?[ \t]*$")


def cut_reply(text: str) -> str:
    """A fewshot reply up to the next example marker (or the start of one, cut off by the
    token budget: a last line "#", "##", "###" or "### Exa..." is dropped)."""
    text = text.split(MARK, 1)[0].rstrip()
    return _PARTIAL_MARK.sub("", text).strip()


# -- targets --------------------------------------------------------------------------------
def target_text(domain: str, item: dict) -> str:
    if domain == "code":
        return (item["prompt"] + item["canonical_solution"]).strip()
    if domain == "wordproblems":
        return f"Question: {item['question']}\nAnswer: {item['steps']}"
    return f"Passage: {item['passage']}\nQuestion: {item['question']}\nAnswer: {item['answer']}"


def ask(domain: str, item: dict) -> str:
    """The user turn a test item is asked as (the shape the training records have)."""
    if domain == "code":
        return item["prompt"]
    if domain == "wordproblems":
        return item["question"]
    return f"Passage: {item['passage']}\nQuestion: {item['question']}"


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


# -- parsing synthetic samples ----------------------------------------------------------------
_WP = re.compile(r"Question:[ \t]*(?P<q>[^\n]*\S)[ \t]*\n\s*Answer:[ \t]*(?P<a>[^\n]*\S)", re.I)
_BQ = re.compile(r"Passage:[ \t]*(?P<p>.+?)\s*\n\s*Question:[ \t]*(?P<q>[^\n]*\S)[ \t]*\n\s*"
                 r"Answer:[ \t]*(?P<a>[A-Za-z]+)", re.S | re.I)


def parse(domain: str, text: str) -> tuple[dict | None, str | None]:
    """(training record, None), or (None, why the sample does not parse)."""
    return {"code": parse_code, "wordproblems": parse_wordproblem, "boolq": parse_boolq}[domain](text)


def parse_wordproblem(text: str) -> tuple[dict | None, str | None]:
    """The first "Question: ..." line followed by an "Answer: ..." line (one line each, as the
    targets; the labels in any case); the answer must hold a number (the last one is the one
    scored)."""
    m = _WP.search(text)
    if m is None:
        return None, "no Question:/Answer: lines"
    q, a = m["q"].strip(), m["a"].strip()
    if extract_number(a) is None:
        return None, "answer without a number"
    return chat(q, a), None


def parse_boolq(text: str) -> tuple[dict | None, str | None]:
    """"Passage: ..." (one or more lines), then a "Question: ..." line, then "Answer: yes|no"."""
    m = _BQ.search(text)
    if m is None:
        return None, "no Passage:/Question:/Answer: lines"
    a = m["a"].lower()
    if a not in ("yes", "no"):
        return None, "answer is not yes/no"
    return chat(f"Passage: {' '.join(m['p'].split())}\nQuestion: {m['q'].strip()}", a), None


MAX_DROP = 12
"""Lines a code sample may lose at its end to parse (a sample cut off by the token budget)."""


def parse_code(text: str) -> tuple[dict | None, str | None]:
    """The code (a fenced block if there is one, else the text), split at the end of the
    docstring of its last top-level function that has a docstring and a body after it:
    prompt = everything up to the docstring's closing line; the reply = the whole code in a
    python fence (the test runs it as the function, `evaluate.code.completion_program`). A
    sample that does not parse as Python loses unfinished lines at its end (at most MAX_DROP)
    first."""
    from ..evaluate.code import extract_code

    lines = extract_code(text).strip("\n").splitlines()
    tree, keep = None, len(lines)
    while keep > 0 and len(lines) - keep <= MAX_DROP:
        try:
            tree = ast.parse("\n".join(lines[:keep]))
            break
        except (SyntaxError, ValueError):
            keep -= 1
    if tree is None:
        return None, "not Python"
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and ast.get_docstring(n) is not None and len(n.body) > 1]
    if not funcs:
        return None, "no function with a docstring and a body"
    f = funcs[-1]
    end = f.body[0].end_lineno
    prompt = "\n".join(lines[:end]) + "\n"
    if not "\n".join(lines[end:keep]).strip():
        return None, "empty body"
    code = "\n".join(lines[:keep]).rstrip()
    return chat(prompt, f"```python\n{code}\n```"), None


# -- scoring the student ----------------------------------------------------------------------
_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def yes_no(reply: str) -> str | None:
    m = _YES_NO.search(reply or "")
    return m.group(1).lower() if m else None


def correct(domain: str, item: dict, reply: str) -> bool:
    """wordproblems: the reply's last number is the answer; boolq: its first yes/no is the
    answer. (code is scored in the sandbox: `code_outcomes`.)"""
    if domain == "wordproblems":
        return extract_number(reply) == item["answer_int"]
    if domain == "boolq":
        return yes_no(reply) == item["answer"]
    raise ValueError(f"{domain}: scored in the sandbox")


def code_outcomes(items: list[dict], replies: list[str], workers: int = 2) -> tuple[list[bool], list[dict]]:
    """pass/fail of each reply (the code extracted from it, as a body or the whole function)
    against its problem's tests, in the sandbox; and the check results."""
    from ..evaluate.code import evaluate_completions, extract_code

    completions = [extract_code(r, it["entry_point"]) for it, r in zip(items, replies)]
    results = evaluate_completions(items, completions, workers=workers)
    return [bool(r["passed"]) for r in results], results
