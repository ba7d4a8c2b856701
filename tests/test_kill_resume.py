"""``kill -9`` at chosen moments of a run, then the same command with ``--resume``: the pool is
bit-identical to an uninterrupted run's (CPU), and no temporary file survives.

The kills come from ``MUSTANGS_TEST_KILL_AT`` (see mustangs/io/faults.py): a real SIGKILL of a real
``python -m trainer train`` process. One chain of processes covers every moment: each process
is killed at the next moment, and the next one has to recover from what the previous left —
a folder without a checkpoint, a half-written first checkpoint (temporary file, tensors without
JSON, JSON without index), a generation without its checkpoint, a pool in its temporary folder,
a pool without its report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import RINGS

ROOT = Path(__file__).resolve().parents[1]
OVER = RINGS + ["coevolution.generations=3", "coevolution.batches_per_generation=3", "mixture.eval_samples=100",
                "eval.fid_samples=100", "output.report=false", "coevolution.mutation_probability=1.0"]

#: (kill point, what the folder holds afterwards) in the order of the chain.
CHAIN = [
    ("setup", "config.yaml and an empty metrics.jsonl, no checkpoint"),
    ("checkpoint-tmp:1", "the first checkpoint's tensors in a temporary file"),
    ("checkpoint-tensors:1", "the first checkpoint's tensors without their JSON"),
    ("checkpoint-json:1", "the first checkpoint's JSON without index.json"),
    ("generation:1", "generation 2's metrics line without its checkpoint"),
    ("pool-tmp", "the complete pool in its temporary folder"),
    ("report", "the pool without the report"),
]


def _train(out: Path, *flags: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MUSTANGS_OFFLINE": "1"}
    env.pop("MUSTANGS_TEST_KILL_AT", None)
    if kill_at:
        env["MUSTANGS_TEST_KILL_AT"] = kill_at
    cfg = out.parent / "cfg.yaml"
    cfg.write_text("# trainer train cfg.yaml\n")
    return subprocess.run([sys.executable, "-m", "trainer", "train", str(cfg), "--out", str(out), "--quiet",
                           *flags, *OVER], env=env, capture_output=True, text=True, timeout=300, cwd=out.parent)


def _pool(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "pool").glob("*.safetensors"))}


def _temp_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


@pytest.mark.slow
def test_kill_9_at_every_moment_then_resume_gives_the_same_pool(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, run = tmp_path / "a" / "run", tmp_path / "b" / "run"   # same name: the manifest records it
    done = _train(straight)
    assert done.returncode == 0, done.stderr

    for i, (point, _leaves) in enumerate(CHAIN):
        proc = _train(run, *([] if i == 0 else ["--resume"]), kill_at=point)
        assert proc.returncode == -signal.SIGKILL, f"{point}: {proc.returncode} {proc.stderr[-500:]}"
        assert "Traceback" not in proc.stderr
    final = _train(run, "--resume")
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in final.stderr

    assert _pool(run) == _pool(straight) and len(_pool(run)) == 4
    m1 = json.loads((run / "pool" / "manifest.json").read_text())
    m2 = json.loads((straight / "pool" / "manifest.json").read_text())
    assert m1["mixtures"] == m2["mixtures"] and m1["generators"] == m2["generators"]
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in lines] == [1, 2, 3]
    assert _temp_files(run) == []


@pytest.mark.slow
def test_a_dead_end_folder_restarts_without_resume(tmp_path):
    """Killed before its first checkpoint, the same command (no --resume) starts the run over."""
    run = tmp_path / "run"
    proc = _train(run, kill_at="checkpoint-tmp:1")
    assert proc.returncode == -signal.SIGKILL
    assert any(p.name.endswith(".tmp") for p in (run / "checkpoints").iterdir())
    again = _train(run)
    assert again.returncode == 0, again.stderr
    assert "stopped before its first checkpoint; starting it over" in again.stderr
    assert len(_pool(run)) == 4 and _temp_files(run) == []
