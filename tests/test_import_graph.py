"""The package's import graph: no cycles, and the lower layers never import the upper ones.

Layers, bottom to top: file I/O and shared helpers (``actionkit/*.py`` at the top level, ``actionkit/io``), then
``data``, ``models``, ``evaluation``, then ``engine`` and ``inference``, then ``cli``. Every ``import`` statement
counts, also those inside functions (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "actionkit"
LOWER = ("actionkit.data", "actionkit.models", "actionkit.evaluation")
UPPER = ("actionkit.engine", "actionkit.cli", "actionkit.inference")
MAX_LINES = 600


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the actionkit modules that ``path`` imports (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("actionkit"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("actionkit"):
                continue
            submodules = [a.name for a in node.names
                          if (PACKAGE.parent / (target.replace(".", "/") + f"/{a.name}.py")).exists()
                          or (PACKAGE.parent / (target.replace(".", "/") + f"/{a.name}/__init__.py")).exists()]
            # ``from pkg import module`` depends on the module; other names depend on ``pkg`` itself
            out.update(f"{target}.{m}" for m in submodules)
            if len(submodules) < len(node.names):
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _inside(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_lower_layers_never_import_engine_cli_or_inference():
    bad = sorted(f"{m} imports {t}" for m, ts in _graph().items() if _inside(m, LOWER)
                 for t in ts if _inside(t, UPPER))
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    # package __init__ files that only re-export are edges into their own package: keep them, a cycle through
    # them is still a cycle
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_long_modules_say_why():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES and "Why this module is long:" not in text[:4000]:
            long.append(f"{path.relative_to(PACKAGE.parent)} ({text.count(chr(10))} lines)")
    assert not long, "modules over %d lines without 'Why this module is long:' in their docstring: %s" % (
        MAX_LINES, ", ".join(long))
