"""Bring-your-own classifier, end to end, on a non-editable install.

A wheel of this source tree is built and installed with ``pip install --no-deps --target SITE``
(the dependencies come from the running interpreter's environment); every command runs through
the console scripts pip wrote, with ``PYTHONPATH=SITE`` and the working directory outside the
repository, so ``import mustangs`` is the installed copy (checked). The test then

1. trains an MNIST classifier on MNIST-format IDX files made from scikit-learn's digits
   (default output: ``$MUSTANGS_CACHE/classifiers/mnist/``);
2. imports ten Lipizzaner-format generators plus a byte-identical copy with
   ``ensembler import-lipizzaner`` (MNIST and Fashion-MNIST pools);
3. optimises TVD against a uniform target with ``--classifier`` pointing at the classifier,
   with no real data anywhere (the merge of the copy is named and recorded);
4. checks that a Fashion-MNIST pool judged by the MNIST classifier, and the MNIST pool judged by
   the shipped Fashion-MNIST classifier, are refused with one line naming both datasets (and
   that ``--force-classifier`` records forced: true);
5. scores and exports with the same classifier by name (cache lookup);

and finally that no file inside the installed package was added or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from digits import digits_28, write_lipizzaner_generators, write_mnist_idx

pytest.importorskip("sklearn")

pytestmark = pytest.mark.slow


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path → digest)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """SITE folder holding a wheel install of this tree; returns (site, env, bin)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("mustangs", "trainer", "ensembler", "serving"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("mustangs-*.whl"))
    site = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                           str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    home = tmp / "home"
    home.mkdir()
    env = {"PATH": f"{site / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}", "PYTHONPATH": str(site),
           "HOME": str(home), "MUSTANGS_CACHE": str(tmp / "cache"), "MUSTANGS_OFFLINE": "1",
           "TORCH_HOME": str(tmp / "torch"), "OMP_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "true",
           "PYTHONDONTWRITEBYTECODE": "1"}
    work = tmp / "work"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import mustangs, trainer, ensembler; print(mustangs.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and where.stdout.strip().startswith(str(site)), where
    return site, env, work, tmp


def run(installed, *argv, ok: bool = True) -> subprocess.CompletedProcess:
    site, env, work, _ = installed
    exe = site / "bin" / argv[0]
    assert exe.is_file(), f"console script {argv[0]} was not installed"
    proc = subprocess.run([str(exe), *map(str, argv[1:])], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def refused_with_one_line(proc, *words) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_bring_your_own_classifier_on_a_fresh_install(installed):
    site, env, work, tmp = installed
    before = _tree_digest(site)
    idx = write_mnist_idx(tmp / "mnist-idx")
    gens = write_lipizzaner_generators(tmp / "lipizzaner")
    cache = Path(env["MUSTANGS_CACHE"])

    # 1. A classifier of the user's own: default output is the cache, never the package.
    proc = run(installed, "trainer", "classifier", "train", "--dataset", "mnist", "--data-dir", idx, "--epochs", 4,
               "--threads", 1)
    clf_dir = cache / "classifiers" / "mnist"
    info = json.loads((clf_dir / "classifier-mnist.json").read_text())
    assert info["dataset"] == "mnist" and info["test_accuracy"] > 0.85, info
    assert str(clf_dir) in proc.stdout

    # 2. Lipizzaner generators in, one of them twice.
    proc = run(installed, "ensembler", "import-lipizzaner", gens, "--out", tmp / "pool-mnist", "--dataset", "mnist")
    assert "generator-3" in proc.stderr and "generator-copy" in proc.stderr and "identical" in proc.stderr
    run(installed, "ensembler", "import-lipizzaner", gens, "--out", tmp / "pool-fashion", "--dataset",
        "fashion-mnist")

    # 3. TVD against a uniform target, judged by that classifier, with no real data present.
    out = tmp / "ensemble.json"
    proc = run(installed, "ensembler", "optimize", tmp / "pool-mnist", "--objective", "tvd", "--classifier", clf_dir,
               "--samples", 2000, "--verify-samples", 2000, "--budget", 300, "--device", "cpu", "--out", out)
    assert "merged identical generators: generator-3, generator-copy" in proc.stderr
    assert "no real mnist test split found" in proc.stderr and "--data-dir DIR again" in proc.stderr
    assert proc.stderr.count("no real mnist test split") == 1   # said once, and short
    ens = json.loads(out.read_text())
    assert ens["classifier"] == {"name": "mnist", "dataset": "mnist", "sha256": info["sha256"], "source": "explicit",
                                 "test_accuracy": info["test_accuracy"], "forced": False}
    assert ens["statistics"]["classifier_sha256"] == info["sha256"]
    assert ens["merged"] == [{"kept": "generator-3", "merged": ["generator-copy"],
                              "sha256": ens["merged"][0]["sha256"]}]
    assert len(ens["members"]) >= 8           # ten digits: the uniform target needs (nearly) all of them
    assert ens["metrics"]["verified"]["tvd_cls2k"] < 0.1
    assert "fid_cls2k" not in ens["metrics"]["verified"]   # no real data, so no fid (and no error)

    # 4. Wrong judges are refused with one line naming both datasets; --force-classifier is recorded.
    refused_with_one_line(run(installed, "ensembler", "optimize", tmp / "pool-fashion", "--classifier", clf_dir,
                              "--out", tmp / "x.json", ok=False), "'mnist'", "fashion-mnist")
    refused_with_one_line(run(installed, "ensembler", "optimize", tmp / "pool-mnist", "--classifier",
                              "fashion-mnist", "--out", tmp / "x.json", ok=False), "'fashion-mnist'", "mnist data")
    assert not (tmp / "x.json").exists()
    forced = tmp / "forced.json"
    run(installed, "ensembler", "optimize", tmp / "pool-fashion", "--classifier", "mnist", "--force-classifier",
        "--samples", 200, "--verify-samples", 0, "--budget", 20, "--device", "cpu", "--out", forced)
    assert json.loads(forced.read_text())["classifier"]["forced"] is True

    # 5. The same classifier by name: scoring samples without data, and with it (--data-dir).
    images, _ = digits_28()
    np.save(tmp / "digits.npy", images[-200:])
    score = json.loads(run(installed, "trainer", "score", "--fake", tmp / "digits.npy", "--classifier", "mnist",
                           "--metrics", "tvd,is", "--json").stdout)
    assert score["classifier"]["sha256"] == info["sha256"] and score["real"] is None and score["tvd_cls200"] < 0.2
    score = json.loads(run(installed, "trainer", "score", "--fake", tmp / "digits.npy", "--classifier", "mnist",
                           "--data-dir", idx, "--json").stdout)
    assert score["real"] == "mnist:test" and score["recall_cls200"] > 0.5 and score["precision_cls200"] > 0.5
    refused_with_one_line(run(installed, "trainer", "score", "--fake", tmp / "digits.npy", "--classifier", "mnist",
                              "--real", "fashion-mnist:test", ok=False), "'mnist'", "fashion-mnist")

    # Nothing was written inside the installed package.
    assert _tree_digest(site) == before
