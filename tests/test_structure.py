"""The structure docs/ARCHITECTURE.md promises, beyond the layer contract that import-linter checks in
``make test``: no two modules import each other (directly or around a loop), a module imports inside a
function only what is expensive to import, and a public function of more than four parameters takes them
by name."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import cnnlab

SRC = Path(cnnlab.__file__).parent

#: What may be imported inside a function, outside the CLI: modules that take longer to import than the
#: code that needs them is worth to everyone else (torch ~1.5 s, torchvision's models ~1.5 s on top,
#: matplotlib ~0.4 s; captum is imported at the top of viz, whose every use needs it).
#: pytorch_grad_cam imports scikit-learn and OpenCV (about 2 s), scipy.stats about 0.3 s: `import cnnlab.viz` waits
#: for neither.
EXPENSIVE = {"torch", "torchvision", "matplotlib", "pytorch_grad_cam", "scipy"}


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



#: Public functions that keep a positional signature beyond four parameters: the reference ops mirror
#: ``torch.nn.functional`` (``F.conv2d(input, weight, bias, stride, padding, dilation, groups)``, ...), so
#: they take their arguments as PyTorch's do; what PyTorch does not have (``padding_mode``, ``value``) is
#: keyword-only there too.
LIKE_TORCH = {"conv1d", "conv2d", "conv3d", "conv_nd", "conv1d_backward", "conv2d_backward", "conv3d_backward",
              "conv_nd_backward", "max_pool2d", "avg_pool2d", "avg_pool2d_backward", "reference_conv2d",
              "reference_max_pool2d", "reference_avg_pool2d"}


def test_public_functions_with_more_than_four_parameters_take_them_by_name():
    """Beyond four parameters, a call reads only with names (``visualize_run(run, out, methods=..., ...)``)."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        if any(part.startswith("_") and part != "__init__.py" for part in path.relative_to(SRC).parts):
            continue  # private modules
        tree = ast.parse(path.read_text())
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        functions += [m for c in tree.body if isinstance(c, ast.ClassDef) and not c.name.startswith("_")
                      for m in c.body if isinstance(m, ast.FunctionDef) and m.name != "__init__"]
        for fn in functions:
            positional = [a.arg for a in fn.args.posonlyargs + fn.args.args if a.arg not in ("self", "cls")]
            if not fn.name.startswith("_") and fn.name not in LIKE_TORCH and len(positional) > 4:
                wrong.append(f"{path.relative_to(SRC)}:{fn.lineno}: {fn.name}({', '.join(positional)})")
    assert wrong == []
