"""The three CLIs answer ``--help``, ``--version`` and usage errors without importing torch.

Building the parsers must stay cheap (it once took 15-25 s on a busy 2-core machine because a
verb's ``register`` imported torch); each case runs in a fresh interpreter, since this test
process has torch loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

#: (console script, argv) pairs: every verb's --help, the top-level --version, and a usage error.
CASES = {
    "trainer": [["--help"], ["--version"], ["train", "--help"], ["classifier", "train", "--help"],
                ["classifier", "eval", "--help"], ["score", "--help"], ["no-such-verb"]],
    "ensembler": [["--help"], ["--version"], ["optimize", "--help"], ["front", "--help"], ["evaluate", "--help"],
                  ["sample", "--help"], ["import-lipizzaner", "--help"], ["front"]],
    "serving": [["--help"], ["--version"], ["export", "--help"], ["sample", "--help"], ["info", "--help"],
                ["serve", "--help"], ["build", "--help"], ["export"]],
}

PROBE = """
import contextlib, io, json, sys
from {cli}.cli import main
codes, out = [], io.StringIO()
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            codes.append(main(argv))
        except SystemExit as exc:
            codes.append(exc.code)
heavy = sorted(m for m in ("torch", "torchvision", "onnx", "onnxruntime", "bentoml", "matplotlib", "scipy", "cma")
               if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy, "out": out.getvalue()}}))
"""


@pytest.mark.parametrize("cli", sorted(CASES))
def test_help_version_and_usage_errors_import_no_heavy_module(cli):
    cases = CASES[cli]
    proc = subprocess.run([sys.executable, "-c", PROBE.format(cli=cli), json.dumps(cases)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["heavy"] == [], f"{cli} imported {result['heavy']} while parsing arguments"
    assert result["codes"] == [0] * (len(cases) - 1) + [2]  # help/version exit 0, the usage error exits 2
    assert "Traceback" not in result["out"]
    assert f"{cli} (mustangs) " in result["out"]  # --version


def test_version_is_the_package_version():
    """``--version`` shows ``mustangs.__version__``, the single source pyproject reads its version from."""
    import tomllib

    import mustangs

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project.get("dynamic", [])
    attr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "mustangs.__version__"
    proc = subprocess.run([sys.executable, "-m", "trainer", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"trainer (mustangs) {mustangs.__version__}"


def test_help_shows_no_docstring_markup():
    """``--help`` reuses module docstrings; their reStructuredText markup must not leak into it."""
    probe = """
import contextlib, io, json, sys
from ensembler.cli import build_parser as e
from serving.cli import build_parser as s
from trainer.cli import build_parser as t
texts = []
for build, verbs in ((t, [["train"], ["classifier"], ["classifier", "train"], ["score"]]),
                     (e, [["optimize"], ["front"], ["evaluate"], ["sample"]]), (s, [["export"], ["serve"], ["build"]])):
    for argv in [[]] + verbs:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                build().parse_args(argv + ["--help"])
            except SystemExit:
                pass
        texts.append(out.getvalue())
print(json.dumps(texts))
"""
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    texts = json.loads(proc.stdout)
    assert len(texts) == 14 and all(t.startswith("usage:") for t in texts)
    for text in texts:
        assert "``" not in text and "::\n" not in text and ":func:" not in text, text[:300]


def test_wording():
    from ensembler.objectives import describe, parse_objective
    from mustangs.console.formatting import plain_text
    from mustangs.names import count

    assert count(1, "generator") == "1 generator" and count(3, "generator") == "3 generators"
    assert describe(parse_objective("is")) == "-is" and describe(parse_objective("tvd+0.5*is")) == "tvd - 0.5*is"
    assert plain_text("Run ``trainer train``. Examples::\n\n    x") == "Run trainer train. Examples:\n\n    x"


def test_dry_run_names_a_missing_classifier_once(tmp_path, capsys):
    from trainer.cli import main

    assert main(["train", str(ROOT / "configs" / "mnist-3x3.yaml"), "--dry-run", "--out", str(tmp_path / "r"),
                 "data.data_dir=/nonexistent"]) == 0
    scoring = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("# scoring:"))
    if "no evaluation classifier" in scoring:  # unless someone trained one for mnist
        assert scoring.count("no evaluation classifier") == 1 and "trainer classifier train" in scoring


def test_classifier_list_imports_no_heavy_module():
    """``trainer classifier list`` only reads JSON files; it once took 7-9 s importing torch."""
    probe = PROBE.format(cli="trainer")
    proc = subprocess.run([sys.executable, "-c", probe, json.dumps([["classifier", "list"], ["classifier", "list",
                                                                                            "--json"]])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["codes"] == [0, 0] and result["heavy"] == []
    assert "fashion-mnist" in result["out"] and "rings" in result["out"]
