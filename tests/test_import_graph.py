"""The import structure docs/ARCHITECTURE.md promises, beyond the layer contract that import-linter
checks in ``make test``: no two modules import each other (directly or around a loop), and a module
imports inside a function only what is expensive to import."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import cnnlab

SRC = Path(cnnlab.__file__).parent

#: What may be imported inside a function, outside the CLI: modules that take longer to import than the
#: code that needs them is worth to everyone else (torch ~1.5 s, torchvision's models ~1.5 s on top,
#: matplotlib ~0.4 s; captum is imported at the top of viz, whose every use needs it).
EXPENSIVE = {"torch", "torchvision", "matplotlib"}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_around_a_loop():
    graph = grimp.build_graph("cnnlab", cache_dir=None)  # function-level imports count too
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(edges) == []


def _function_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found += [(node.lineno, a.name) for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def test_function_level_imports_are_only_the_expensive_ones():
    """A CLI module imports the package its command runs inside ``run()``: each command loads only its own
    package (``cnnlab conv`` never loads viz's captum or the compression methods). Elsewhere only
    :data:`EXPENSIVE` modules wait for the function that needs them."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        in_cli = path.relative_to(SRC).parts[0] == "cli"
        for line, module in _function_imports(path):
            top = module.split(".")[0]
            if top in EXPENSIVE or (in_cli and top == "cnnlab"):
                continue
            wrong.append(f"{path.relative_to(SRC)}:{line}: {module}")
    assert wrong == []

