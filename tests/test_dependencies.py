"""Declared dependencies match the imports: per extra in pyproject.toml, and for the Bento.

Imports are read from the source (``ast``), including those inside functions; an import inside
``try: ... except ImportError``, ``pytest.importorskip("x")`` and ``importlib.util.find_spec("x")``
are optional uses: they need no declaration, but they count as uses of a declared extra. A third-party module is
mapped to its distribution through ``importlib.metadata.packages_distributions()`` (so the
dev install must be present, as it is wherever the tests run).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

FIRST_PARTY = ("mustangs", "trainer", "ensembler", "serving")

#: Which extras (besides the core dependencies and an onnxruntime extra) code under a path may rely on.
EXTRAS_FOR = {"serving/service.py": {"serve"}, "serving/cli.py": {"serve"}, "tests/": {"serve", "dev"}, "benchmarks/": {"serve", "dev", "bench"}}

#: Declared but never imported by name, and why they are declared anyway.
NOT_IMPORTED = {
    "onnxscript": "torch.onnx.export(dynamo=True) needs it at run time",
    "httpx": "starlette.testclient.TestClient (tests) imports it",
    "pytest-timeout": "a pytest plugin (@pytest.mark.timeout)",
    "onnxruntime-gpu": "provides the same module as onnxruntime (the gpu extra replaces the cpu one)",
    "schemathesis": "benchmarks/bench_serving.py runs it as a command",
    "mkdocs-material": "the docs site's theme (mkdocs.yml: theme.name material); mkdocs loads it",
    "mkdocstrings-python": "mkdocstrings' Python handler (mkdocs.yml: default_handler python); mkdocs loads it",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(requirement: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _is_optional(node: ast.AST, parents: dict) -> bool:
    """Inside a ``try`` whose handlers catch ImportError (or a base of it)?"""
    child, node = node, parents.get(node)
    while node is not None:
        if isinstance(node, ast.Try) and child in node.body:
            for h in node.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if h.type is None or any(isinstance(n, ast.Name) and n.id in
                                         ("ImportError", "ModuleNotFoundError", "Exception") for n in names):
                    return True
        child, node = node, parents.get(node)
    return False


def _in_lazy_getattr(node: ast.AST, parents: dict) -> bool:
    """Inside a module-level ``__getattr__`` (PEP 562 lazy exports: imported only when asked for)?"""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and isinstance(parents.get(node),
                                                                                           ast.Module):
            return True
    return False


@functools.lru_cache(maxsize=None)
def imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, optional)`` for every absolute import in ``path`` (``from a import b`` gives ``a.b`` too).

    Imports in a module-level ``__getattr__`` are left out: they run only when that name is used.
    """
    tree = ast.parse(path.read_text(), str(path))
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    out = []
    for node in ast.walk(tree):
        if _in_lazy_getattr(node, parents):
            continue
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("importorskip", "find_spec") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.args[0].value, True))  # pytest.importorskip("x") / find_spec("x"): optional uses
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, _is_optional(node, parents)) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            opt = _is_optional(node, parents)
            out.append((node.module, opt))
            out += [(f"{node.module}.{a.name}", opt) for a in node.names]
    return out


def _local_modules(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py")}


def third_party(path: Path) -> tuple[set[str], set[str]]:
    """Top-level third-party modules ``path`` imports: (required, optional-only)."""
    # tests/ and benchmarks/ import their own modules (and tests import benchmarks/ ones) by bare name
    local = (_local_modules(ROOT / "tests") | _local_modules(ROOT / "benchmarks")
             if path.parent.name in ("tests", "benchmarks") else set())
    required, optional = set(), set()
    for mod, opt in imports(path):
        top = mod.split(".")[0]
        if top in FIRST_PARTY or top in sys.stdlib_module_names or top in local or top == "__future__":
            continue
        (optional if opt else required).add(top)
    return required, optional - required


@functools.lru_cache(maxsize=None)
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def distribution(module: str) -> str:
    """The (normalised) distribution that provides top-level ``module``."""
    dists = _packages_distributions().get(module)
    assert dists, f"no installed distribution provides the module '{module}'"
    return _norm(dists[0])


def _sources() -> list[Path]:
    files = []
    for folder in (*FIRST_PARTY, "tests", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def _extras_for(rel: str) -> set[str]:
    return set().union(*(v for k, v in EXTRAS_FOR.items() if rel.startswith(k)))


def test_every_third_party_import_is_declared_in_the_right_extra():
    project = _project()
    core = {_req_name(r) for r in project["dependencies"]}
    extras = {k: {_req_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    # The two onnxruntime extras are alternatives: each must provide what the other does.
    assert extras["cpu"] == {"onnxruntime"} and extras["gpu"] == {"onnxruntime-gpu"}
    problems = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        allowed = core | extras["cpu"] | set().union(*(extras[e] for e in _extras_for(rel)))
        required, _ = third_party(path)
        for module in sorted(required):
            dist = distribution(module)
            if dist not in allowed:
                where = next((e for e, names in extras.items() if dist in names), None)
                problems.append(f"{rel} imports {module} ({dist}): " + (
                    f"declared only in the '{where}' extra" if where else "not declared"))
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_imported():
    project = _project()
    imported = set()
    for path in _sources():
        required, optional = third_party(path)
        imported |= {distribution(m) for m in required | optional}
    declared = {_req_name(r) for r in project["dependencies"]}
    for reqs in project["optional-dependencies"].values():
        declared |= {_req_name(r) for r in reqs}
    unused = sorted(declared - imported - set(NOT_IMPORTED))
    assert not unused, f"declared but never imported: {unused} (remove them, or say why in NOT_IMPORTED)"
    assert set(NOT_IMPORTED) <= declared  # the exceptions list stays current


def _bento() -> dict:
    return yaml.safe_load((ROOT / "serving" / "bentofile.yaml").read_text())


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def service_closure() -> set[Path]:
    """Every first-party file ``serving/service.py`` imports, directly or not, with its packages' ``__init__``."""
    todo, seen = [ROOT / "serving" / "service.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for mod, _ in imports(path):
            parts = mod.split(".")
            if parts[0] not in FIRST_PARTY:
                continue
            for i in range(1, len(parts) + 1):  # the packages on the way in are imported too
                f = _module_file(".".join(parts[:i]))
                if f is not None:
                    todo.append(f)
    return seen


def test_bento_carries_every_module_its_service_imports():
    """The bug this guards against: the Bento lacked mustangs/io/images.py, which serving/sampler.py imports."""
    include = {ROOT / p for p in _bento()["include"]}
    closure = service_closure()
    assert ROOT / "mustangs" / "io" / "images.py" in closure
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure - include)
    extra = sorted(p.relative_to(ROOT).as_posix() for p in include - closure)
    assert not missing, f"serving/bentofile.yaml must include {missing} (serving/service.py imports them)"
    assert not extra, f"serving/bentofile.yaml includes {extra}, which the service never imports"


def test_bento_requirements_cover_its_imports():
    packages = {_req_name(p) for p in _bento()["python"]["packages"]}
    needed = set()
    for path in service_closure():
        required, _ = third_party(path)
        needed |= {distribution(m) for m in required}
    assert "torch" not in needed
    assert needed - {"bentoml"} == packages, "the Bento's python packages must be exactly what its modules import"


def test_pip_check_is_clean():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
