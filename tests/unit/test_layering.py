"""Layering: no import cycles among adaptlab's modules (counting imports inside functions too),
and `import adaptlab` stays light."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node, here: str, is_pkg: bool, known: set[str]) -> set[str]:
    """adaptlab modules an import statement names (a `from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = here if is_pkg else here.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            base = base.rsplit(".", 1)[0]
        mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
        names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
    return {n for n in names if n in known}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    known = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for blk in ast.walk(tree) if isinstance(blk, ast.If)
                       and getattr(blk.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(blk)}
        deps = set()
        for node in ast.walk(tree):  # imports inside functions count; `if TYPE_CHECKING:` does not
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only:
                deps |= _targets(node, name, path.name == "__init__.py", known)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _parent_packages(graph):
    """A package's __init__ importing its own submodules is not a cycle through them: Python
    imports parents first by design; drop submodule -> own-parent-package edges."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles():
    found = cycles(_parent_packages(import_graph()))
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_adaptlab_is_light():
    code = ("import sys, adaptlab, adaptlab.runs, adaptlab.lm.registry, adaptlab.evaluate.stats, "
            "adaptlab.studies.tone, adaptlab.data.corpus; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'sklearn', 'scipy', "
            "'sentence_transformers', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
