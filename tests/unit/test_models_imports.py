"""adaptlab.models has no import cycle, not even through imports inside functions, and its public
names stay where other code imports them from."""
from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "src" / "adaptlab" / "models"


def _imports(path: Path) -> set[str]:
    """Modules of adaptlab.models that `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                found |= {node.module} if node.module else {a.name for a in node.names}
            elif node.level == 0 and (node.module or "").startswith("adaptlab.models"):
                rest = node.module.removeprefix("adaptlab.models").lstrip(".")
                found |= {rest.split(".")[0]} if rest else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names
                      if a.name.startswith("adaptlab.models.")}
    return {m.split(".")[0] for m in found} & {p.stem for p in MODELS.glob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    def visit(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        for nxt in sorted(graph.get(node, ())):
            if (c := visit(nxt, path + [node])) is not None:
                return c
        return None

    for start in sorted(graph):
        if (c := visit(start, [])) is not None:
            return c
    return None


def test_no_import_cycle_inside_models():
    graph = {p.stem: _imports(p) - {p.stem} for p in MODELS.glob("*.py") if p.stem != "__init__"}
    assert graph["registry"] >= {"convert", "packaged"}  # the walk sees real imports
    assert "registry" not in graph["convert"] and "registry" not in graph["packaged"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_public_names_import_from_models_and_registry():
    import adaptlab.models as models
    import adaptlab.models.registry as registry

    for name in ("PACKAGED", "PackagedModel", "cache_dir", "list_models", "resolve"):
        assert getattr(models, name) is getattr(registry, name)
    for name in ("converted_dir", "source_files", "module_dir", "is_cached", "check_weights"):
        assert callable(getattr(registry, name))
    assert "smollm2-135m-instruct" in registry.PACKAGED
