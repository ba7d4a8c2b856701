"""Thread defaults for shared machines (mustangs/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from mustangs import threads


def _env_without_omp():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_passive_openmp_is_set_before_torch_loads_and_never_overrides_the_user():
    code = ("from mustangs.threads import prefer_passive_openmp as p; import os; a = p(); import torch; "
            "print(a, os.environ.get('OMP_WAIT_POLICY'), p())")
    out = subprocess.run([sys.executable, "-c", code], env=_env_without_omp(), capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "PASSIVE", "False"]   # set before torch; too late (and said so) after
    env = {**_env_without_omp(), "OMP_WAIT_POLICY": "ACTIVE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == "ACTIVE"


def test_console_scripts_ask_for_passive_openmp(monkeypatch):
    # the shared console entry point calls it before parsing (and so before any verb imports torch)
    import mustangs.console.formatting as formatting
    import trainer.cli as cli

    calls = []
    monkeypatch.setattr(formatting, "prefer_passive_openmp", lambda: calls.append(1) or False)
    assert cli.main(["train", "configs/quickstart.yaml", "--dry-run"]) == 0
    assert calls == [1]


def test_auto_threads_follow_the_cpu_affinity_and_share_it_between_ranks(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert threads.available_cores() == 6
    assert threads.auto_threads() == 6 and threads.auto_threads(4) == 1 and threads.auto_threads(2) == 3
    assert threads.auto_threads(16) == 1
