"""Explained ListOps: answers and explanations checked against an evaluator written here."""
from __future__ import annotations

import json
import random
import re

import pytest

from adaptlab import cli
from adaptlab.data import validate_record
from adaptlab.data.listops import (LEVELS, OPS, ListOpsConfig, _example, evaluate, generate,
                                   parse_answer, to_record, write_jsonl)

INNERMOST = re.compile(r"\[(MIN|MAX|MED|SM)((?: \d+)+) \]")
MEDIUM = re.compile(r"(\w+), \w+(?: of)? \[([\d ]+)\](?: to \[[\d ]+\])?, (.*)answer is (\d+)")


def ref_median(args: list[int]) -> int:
    """int(numpy.median(args)): the middle value, or int() of the mean of the two middle ones."""
    s, m = sorted(args), len(args) // 2
    return s[m] if len(s) % 2 else int((s[m - 1] + s[m]) / 2)


def ref_steps(expression: str, k: int) -> list[tuple[str, list[int], int]]:
    """(op, operands, result) of each sub-expression: reduce the leftmost innermost bracket."""
    fns = {"MIN": min, "MAX": max, "MED": ref_median, "SM": lambda a: sum(a) % k}
    steps = []
    while (m := INNERMOST.search(expression)):
        args = [int(x) for x in m.group(2).split()]
        value = fns[m.group(1)](args)
        steps.append((m.group(1), args, value))
        expression = expression[:m.start()] + str(value) + expression[m.end():]
    assert re.fullmatch(r"\d+", expression), expression
    return steps


def ref_depth(expression: str) -> int:
    depth = top = 0
    for ch in expression:
        depth += (ch == "[") - (ch == "]")
        top = max(top, depth)
    return top


@pytest.fixture(scope="module")
def batches():
    """(cfg, examples) over depths 1-4 and K in {10, 30}: 3,200 examples."""
    out = []
    for depth in (1, 2, 3, 4):
        for k in (10, 30):
            cfg = ListOpsConfig(n=400, depth=depth, classes=k, seed=depth * 100 + k)
            out.append((cfg, generate(cfg)))
    return out


def test_answers_match_independent_evaluator(batches):
    for cfg, examples in batches:
        assert len(examples) == cfg.n
        for ex in examples:
            steps = ref_steps(ex["expression"], cfg.classes)
            assert ex["answer"] == steps[-1][2] == evaluate(ex["expression"], cfg.classes)
            assert 0 <= ex["answer"] < cfg.classes and ex["classes"] == cfg.classes
            assert ex["depth"] == ref_depth(ex["expression"]) <= cfg.depth
            for op, args, result in steps:
                assert cfg.min_args <= len(args) <= cfg.max_args
                if op == "SM":
                    assert result == sum(args) % cfg.classes < cfg.classes


def test_explanations_follow_evaluation_order(batches):
    for cfg, examples in batches:
        for ex in examples:
            steps = ref_steps(ex["expression"], cfg.classes)
            short = ex["explanation_short"].split(" ; ")
            assert [tuple(s.split(", ")) for s in short] == [(op, str(r)) for op, _, r in steps]
            medium = ex["explanation_medium"].split(" ; ")
            assert len(medium) == len(steps)
            for text, (op, args, result) in zip(medium, steps):
                m = re.fullmatch(MEDIUM, text)
                assert m, text
                assert (m.group(1), m.group(2).split(), int(m.group(4))) == \
                    (op, [str(a) for a in args], result)
                if op == "SM":
                    assert f"sum is {sum(args)}, " in text
                if op == "MED":
                    assert f"to [{' '.join(map(str, sorted(args)))}]" in text
            long = re.split(r"(?<=\.) (?=[A-Z])", ex["explanation_long"])
            assert len(long) == len(steps), ex["explanation_long"]
            for text, (_, _, result) in zip(long, steps):
                assert text.endswith(f" {result}."), text
            if len(steps) > 1:
                assert long[0].startswith("First, ") and long[-1].startswith("Finally, ")
            assert ex["answer"] == steps[-1][2]


def test_explanation_formats():
    ex = _example("[MAX 2 9 [MIN 4 7 ] 0 ]", 10)
    assert ex["answer"] == 9 and ex["depth"] == 2
    assert ex["explanation_short"] == "MIN, 4 ; MAX, 9"
    assert ex["explanation_medium"] == ("MIN, min of [4 7], answer is 4 ; "
                                        "MAX, max of [2 9 4 0], answer is 9")
    assert ex["explanation_long"] == ("First, the minimum of 4 and 7 is 4. "
                                      "Finally, the maximum of 2, 9, 4 and 0 is 9.")
    sm = _example("[SM 15 27 1 ]", 30)
    assert sm["explanation_medium"] == "SM, add [15 27 1], sum is 43, answer is 13"
    assert sm["explanation_long"] == "The sum of 15, 27 and 1 is 43, and 43 mod 30 is 13."
    med = _example("[MED 7 1 4 [MED 2 1 ] ]", 10)
    assert med["explanation_medium"] == ("MED, sort [2 1] to [1 2], median is 1.5, answer is 1 ; "
                                         "MED, sort [7 1 4 1] to [1 1 4 7], median is 2.5, "
                                         "answer is 2")
    assert "median of 2 and 1 (in order: 1 and 2) is 1.5, rounded down to 1." in \
        med["explanation_long"]


def test_median_equals_numpy():
    np = pytest.importorskip("numpy")
    rng = random.Random(0)
    for _ in range(500):
        args = [rng.randrange(30) for _ in range(rng.randint(1, 6))]
        expr = "[MED " + " ".join(map(str, args)) + " ]"
        assert evaluate(expr, 10) == int(np.median(args)) == ref_median(args)


def test_deterministic_in_seed():
    cfg = ListOpsConfig(n=50, depth=3, seed=7)
    assert generate(cfg) == generate(ListOpsConfig(n=50, depth=3, seed=7))
    assert generate(cfg) != generate(ListOpsConfig(n=50, depth=3, seed=8))


def test_depth_bounds_and_exact_depth():
    loose = generate(ListOpsConfig(n=300, depth=3, seed=1))
    assert {ex["depth"] for ex in loose} == {1, 2, 3}
    exact = generate(ListOpsConfig(n=300, depth=4, seed=1, exact_depth=True))
    assert all(ex["depth"] == 4 == ref_depth(ex["expression"]) for ex in exact)


def test_only_allowed_ops_and_digits_below_k():
    for ex in generate(ListOpsConfig(n=200, depth=3, classes=5, ops=("MIN", "SM"), seed=2)):
        assert set(re.findall(r"\[(\w+)", ex["expression"])) <= {"MIN", "SM"}
        assert all(int(d) < 5 for d in re.findall(r"\d+", ex["expression"]))
        assert 0 <= ex["answer"] < 5


def test_no_duplicates_and_exhausted_space():
    examples = generate(ListOpsConfig(n=200, depth=3, seed=3))
    assert len({ex["expression"] for ex in examples}) == 200
    small = generate(ListOpsConfig(n=100, depth=1, max_args=2, ops=["MIN"]))  # 100 possible
    assert len({ex["expression"] for ex in small}) == 100
    tiny = generate(ListOpsConfig(n=30, depth=1, min_args=1, max_args=1, ops=["MIN"]))
    assert len(tiny) == 30 and len({ex["expression"] for ex in tiny[:10]}) == 10  # then repeats


@pytest.mark.parametrize("expression, problem", [
    ("", "empty expression"), ("[MAX ]", "MAX has no operands"),
    ("[FOO 1 ]", "got 'FOO'"), ("[", "got the end"), ("[MAX 1 2", "missing ']'"),
    ("[MAX 1 ] 3", "after the end"), ("7", "outside"), ("]", "unmatched ']'"),
    ("[MAX 1 x ]", "unexpected 'x'"), ("[MIN 1.5 2 ]", "unexpected '1.5'"),
])
def test_evaluate_refuses_malformed(expression, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        evaluate(expression, 10)


def test_evaluate_known_values():
    assert evaluate("[MAX 2 9 [MIN 4 7 ] 0 ]", 10) == 9
    assert evaluate("[MED 1 2 ]", 10) == 1 and evaluate("[MED 7 1 4 ]", 10) == 4
    assert evaluate("[SM 15 27 1 ]", 30) == 13 and evaluate("[SM [SM 9 9 ] 5 ]", 10) == 3
    with pytest.raises(ValueError, match="classes"):
        evaluate("[SM 1 2 ]", 1)


@pytest.mark.parametrize("text, answer", [
    ("MIN, 4 ; MAX, 9\nThe answer is 9.", 9), ("the answer is 12", 12), (" 7\n", 7),
    ("The answer is 3. Wait, the answer is 5.", 5), ("THE ANSWER IS 4", 4),
    ("nine", None), ("", None), ("The answer is 1.5", None), ("4 5", None),
])
def test_parse_answer(text, answer):
    assert parse_answer(text) == answer


def test_to_record_levels():
    ex = _example("[SM 8 [MAX 3 9 ] ]", 30)
    for level in LEVELS:
        rec = to_record(ex, level)
        user, reply = rec["messages"]
        assert user["role"] == "user" and user["content"].endswith(" [SM 8 [MAX 3 9 ] ]")
        assert "sum mod 30" in user["content"]
        assert reply == {"role": "assistant", "content": "17"}
        assert rec["answer"] == 17 and rec["depth"] == 2
        assert ("explanation" in rec) == (level != "none")
        if level != "none":
            assert rec["explanation"] == ex[f"explanation_{level}"]
        validate_record(rec, "listops.jsonl", 1)
    with pytest.raises(ValueError, match="unknown explanation level 'full'"):
        to_record(ex, "full")


@pytest.mark.parametrize("kwargs, problem", [
    ({"n": 0}, "n must be at least 1"), ({"depth": 0}, "depth must be at least 1"),
    ({"classes": 1}, "classes must be at least 2"), ({"min_args": 0}, "min_args must be"),
    ({"min_args": 3, "max_args": 2}, "max_args (2) must be at least min_args (3)"),
    ({"ops": ()}, "at least one operator"), ({"ops": ("MIN", "POW")}, "unknown operator 'POW'"),
    ({"ops": "MIN"}, "list of operators"), ({"depth": 2.5}, "depth must be an integer"),
])
def test_config_validation(kwargs, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        ListOpsConfig(**{"n": 5, **kwargs})


def test_write_jsonl(tmp_path):
    examples = generate(ListOpsConfig(n=3))
    path = write_jsonl(tmp_path / "sub" / "x.jsonl", examples)
    assert [json.loads(line) for line in path.read_text().splitlines()] == examples


def test_cli_writes_file(tmp_path, capsys):
    out = tmp_path / "lo.jsonl"
    rc = cli.main(["listops", "--n", "20", "--depth", "2", "--classes", "30", "--seed", "4",
                   "--out", str(out), "--ops", "MIN", "SM", "--exact-depth"])
    assert rc == 0 and capsys.readouterr().out == f"wrote 20 examples to {out}\n"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == generate(ListOpsConfig(n=20, depth=2, classes=30, seed=4, ops=("MIN", "SM"),
                                          exact_depth=True))


@pytest.mark.parametrize("argv, problem", [
    (["--classes", "1"], "classes must be at least 2"), (["--ops", "MIN", "FOO"], "'FOO'"),
    (["--min-args", "5"], "max_args (4) must be at least min_args (5)"),
])
def test_cli_bad_value(tmp_path, capsys, argv, problem):
    out = tmp_path / "lo.jsonl"
    rc = cli.main(["listops", "--n", "5", "--out", str(out), *argv])
    stdout, err = capsys.readouterr()
    assert rc != 0 and stdout == "" and not out.exists() and list(tmp_path.iterdir()) == []
    assert len(err.splitlines()) == 1 and err.startswith("adaptlab: error: ") and problem in err
