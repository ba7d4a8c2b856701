"""The package layout of README.md ("Layout") holds: scripts/check_layout.py finds no circle and no
import against the direction tools → foundation, serving → ensembler."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_tree_has_the_documented_layout():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_layout.py")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "layout OK" in proc.stdout


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in ("mustangs", "trainer", "ensembler", "serving"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "check_layout.py"), str(root)],
                          capture_output=True, text=True, timeout=60)


def test_a_circle_through_lazy_imports_is_found(tmp_path):
    root = _tree(tmp_path, {"mustangs/a.py": "from mustangs.b import x\n",
                            "mustangs/b.py": "def f():\n    from mustangs import a\n",
                            "mustangs/c.py": "from . import a\n"})
    proc = _check(root)
    assert proc.returncode == 1
    assert "import circle between mustangs.a, mustangs.b" in proc.stdout
    assert "mustangs.c" not in proc.stdout.split("FAIL", 1)[1]


def test_imports_against_the_direction_are_found(tmp_path):
    root = _tree(tmp_path, {"mustangs/core.py": "import trainer\n",
                            "ensembler/opt.py": "from trainer.run import go\n",
                            "serving/api.py": "from ensembler.opt import x\nfrom mustangs.core import y\n",
                            "trainer/run.py": "import serving\n"})
    out = _check(root).stdout
    assert "mustangs/core.py:1: mustangs.core imports trainer" in out
    assert "ensembler/opt.py:1: ensembler.opt imports trainer.run" in out
    assert "trainer/run.py:1: trainer.run imports serving" in out
    assert "serving/api.py" not in out          # serving -> ensembler and -> foundation are allowed
    assert "3 layout problem(s)" in out
