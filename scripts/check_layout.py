#!/usr/bin/env python3
"""Check the package layout of README.md ("Layout"): imports flow one way and never in a circle.

Every ``import`` / ``from … import`` of the project's modules is read with :mod:`ast`, at module
level and inside functions alike (a lazy import is still a dependency). It fails on:

- an import circle between modules (any length);
- an import from the foundation (``mustangs``) into a tool (``trainer``, ``ensembler``, ``serving``);
- an import between tools other than ``serving`` → ``ensembler`` (so ``ensembler`` and ``serving``
  never reach into ``trainer``, and ``trainer`` stands on the foundation alone).

Usage: ``python scripts/check_layout.py [ROOT]`` — prints the package graph and the result; exit
code 1 when a rule is broken. ``tests/test_layout.py`` runs it.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

FOUNDATION = "mustangs"
#: Which top-level packages each package may import (besides itself).
ALLOWED = {FOUNDATION: set(), "trainer": {FOUNDATION}, "ensembler": {FOUNDATION},
           "serving": {FOUNDATION, "ensembler"}}


def module_name(root: Path, path: Path) -> str:
    """``mustangs/judge/metrics.py`` → ``mustangs.judge.metrics``; ``x/__init__.py`` → ``x``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the four packages, by dotted name."""
    found = {}
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The project modules ``name`` imports, each with the first line that imports it."""
    is_package = path.name == "__init__.py"
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        # the deepest project module the dotted name names (``a.b.func`` → ``a.b``)
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base, node.lineno)
    return out


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def check(root: Path) -> tuple[list[str], dict[tuple[str, str], int]]:
    """``(problems, package_edges)``: every broken rule as one line, and import counts between packages."""
    modules = project_modules(root)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    problems = []
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for name, targets in sorted(graph.items()):
        src = name.split(".")[0]
        for target, line in sorted(targets.items()):
            dst = target.split(".")[0]
            if dst == src:
                continue
            edges[(src, dst)] += 1
            if dst not in ALLOWED[src]:
                where = modules[name].relative_to(root)
                problems.append(f"{where}:{line}: {name} imports {target} ({src} may import "
                                f"{', '.join(sorted(ALLOWED[src])) or 'no other package'})")
    for cycle in find_cycles(graph):
        problems.append(f"import circle between {', '.join(cycle)}")
    return problems, dict(edges)


def main(argv: list[str] | None = None) -> int:
    """Print the package graph and every broken rule; 0 when the layout holds, 1 otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else Path(__file__).resolve().parent.parent).resolve()
    problems, edges = check(root)
    count = len(project_modules(root))
    print(f"{count} modules in {', '.join(ALLOWED)}; imports between packages (module pairs):")
    for (src, dst), n in sorted(edges.items()):
        print(f"  {src} -> {dst}: {n}")
    for line in problems:
        print(f"FAIL {line}")
    print("layout OK: no circles, imports flow tools -> foundation, serving -> ensembler"
          if not problems else f"{len(problems)} layout problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
