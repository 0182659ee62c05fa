"""The layers of ``helpers`` (``helpers.LAYERS``, drawn in ``helpers/__init__.py``): parsed, not imported.

Fails on an import of a module of the same or a higher layer, on a cycle, on a ``helpers`` import inside a
function or class, and on a module missing from the table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import helpers

PACKAGE = Path(helpers.__file__).parent


def _top_level(tree: ast.Module) -> set[int]:
    """``id`` of the import nodes that run when the module is imported (module body, ``if`` / ``try`` blocks)."""
    out, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.add(id(node))
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", []) + \
                [n for h in getattr(node, "handlers", []) for n in h.body]
    return out


def helpers_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module imported, line, at top level)`` for every import of a ``helpers`` module in ``path``.

    ``from . import x`` names module ``x`` when ``helpers/x.py`` exists, else the package itself (``__init__``).
    """
    tree = ast.parse(path.read_text(), str(path))
    top = _top_level(tree)
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[1] if "." in a.name else "__init__" for a in node.names
                     if a.name.split(".")[0] == "helpers"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0 and base.split(".")[0] != "helpers":
                continue
            parts = base.split(".")[1:] if node.level == 0 else [p for p in base.split(".") if p]
            if parts:
                names = [parts[0]]
            else:
                names = [a.name if a.name in modules else "__init__" for a in node.names]
        found += [(name, node.lineno, id(node) in top) for name in names]
    return found


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """``module -> modules it imports`` and the function-level imports (``"module.py:line imports x"``)."""
    edges, inner = {}, []
    for path in sorted(PACKAGE.glob("*.py")):
        edges[path.stem] = set()
        for name, line, top in helpers_imports(path):
            if name != path.stem:
                edges[path.stem].add(name)
            if not top:
                inner.append(f"{path.name}:{line} imports {name} inside a function or class")
    return edges, inner


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once per back edge)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def table(edges: dict[str, set[str]]) -> str:
    """The layer table: layer, module, lines, what it imports from ``helpers``."""
    rows = sorted(helpers.LAYERS.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    lines = [f"{'layer':5}  {'module':10} {'lines':>5}  imports"]
    for module, layer in rows:
        n = len((PACKAGE / f"{module}.py").read_text().splitlines())
        deps = sorted(edges.get(module, ()), key=lambda m: (helpers.LAYERS.get(m, "?"), m))
        lines.append(f"{layer:5}  {module:10} {n:5}  {', '.join(deps)}")
    return "\n".join(lines)


def test_layers_have_no_cycles_no_upward_imports_and_no_function_level_imports():
    edges, inner = graph()
    layers = {"__init__": "", **helpers.LAYERS}
    missing = sorted(set(edges) - set(layers))
    assert not missing, f"modules missing from helpers.LAYERS: {missing}"
    assert not sorted(set(helpers.LAYERS) - set(edges)), "helpers.LAYERS names modules that do not exist"
    assert not edges["__init__"], "helpers/__init__.py imports helpers modules"
    upward = [f"{m} (layer {layers[m]}) imports {t} (layer {layers[t]})" for m, ts in edges.items() for t in ts
              if layers[t] >= layers[m] and m != "__init__"]
    found = cycles(edges)
    print("\n" + table(edges))
    assert not inner, "helpers imports inside functions:\n" + "\n".join(inner)
    assert not upward, "imports of the same or a higher layer:\n" + "\n".join(sorted(upward))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checker_sees_what_it_must(tmp_path):
    """The parser finds relative, absolute and function-level imports, and the cycle search finds a cycle."""
    src = tmp_path / "m.py"
    src.write_text("from . import data, __version__\nfrom .models import load\nimport helpers.metrics\n"
                   "def f():\n    from .runs import x\n")
    assert sorted(helpers_imports(src)) == [("__init__", 1, True), ("data", 1, True), ("metrics", 3, True),
                                            ("models", 2, True), ("runs", 5, False)]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
