"""A command that needs an extra that is not installed says which one, in one line, exit 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Hides the named top-level modules from this process, as if their extra were not installed.
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from adaptlab.cli import main
sys.exit(main({argv!r}))
"""


def run_blocked(blocked: set[str], argv: list[str], cwd) -> subprocess.CompletedProcess:
    code = BLOCK.format(blocked=sorted(blocked), argv=argv)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}]}) + "\n")
    return p


CASES = [
    ({"transformers"}, ["tune", "--data", "d.jsonl", "--out", "OUT"], "transformers", "train"),
    ({"torch"}, ["generate", "--input", "d.jsonl", "--out", "a.jsonl"], "torch", "train"),
    ({"peft"}, ["tune", "--data", "d.jsonl", "--out", "OUT"], "peft", "train"),
    ({"sklearn"}, ["run", "RECIPE"], "sklearn", "eval"),
    ({"matplotlib"}, ["run", "RECIPE"], "matplotlib", "eval"),
    ({"sentence_transformers"}, ["run", "RECIPE"], "sentence_transformers", "eval"),
]


@pytest.mark.parametrize("blocked,argv,module,extra", CASES, ids=[c[2] + "-" + c[1][0] for c in CASES])
def test_missing_extra_is_one_line_with_the_install_hint(tmp_path, data, blocked, argv, module, extra):
    import shutil

    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "corpora", tmp_path / "corpora")
    argv = [str(root / "recipes" / "tone.yaml") if a == "RECIPE" else a for a in argv]
    p = run_blocked(blocked, argv, tmp_path)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert p.stderr.splitlines() == [
        f"adaptlab: error: {module} is not installed; install it with: pip install 'adaptlab[{extra}]'"]
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "runs").exists()


def test_an_unrelated_import_error_is_not_disguised_as_a_missing_extra():
    from adaptlab.errors import missing_extra

    assert missing_extra(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    hint = missing_extra(ModuleNotFoundError("x", name="sklearn.linear_model"))
    assert "adaptlab[eval]" in str(hint) and hint.exit_code == 2
