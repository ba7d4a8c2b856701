"""Multi-process training: --workers, torchrun (single- and multi-node) and recovery from a killed worker.

Cells own their random streams, so the layout of cells over ranks does not change the run.
With ``batching=loop`` (each cell computed on its own) the pools are bit-identical; with
``batching=vmap`` the batched GEMMs group a different number of cells per rank, which
changes float rounding only (checked to 1e-5).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from trainer.distributed import free_port

pytestmark = pytest.mark.slow

SMALL = ["grid.height=2", "grid.width=2", "coevolution.batches_per_generation=5", "threads=1",
         "output.report=false", "mixture.eval_samples=200", "eval.fid_samples=500", "output.sample_every=null"]


def _env() -> dict:
    env = dict(os.environ, MUSTANGS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run"]


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return ["-m", "trainer", "train", "configs/rings-3x3.yaml", "--out", str(out), "--quiet", *SMALL, *extra]


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _pool(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(str(p)) for p in sorted((run / "pool").glob("*.safetensors"))}


def _assert_same_pool(a: Path, b: Path, atol: float = 0.0) -> None:
    pa, pb = _pool(a), _pool(b)
    assert pa.keys() == pb.keys() and len(pa) == 4
    for name in pa:
        for key in pa[name]:
            if atol == 0.0:
                assert torch.equal(pa[name][key], pb[name][key]), (name, key)
            else:
                torch.testing.assert_close(pa[name][key], pb[name][key], atol=atol, rtol=0)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("w1") / "run"
    _run([sys.executable, *_train_cmd(out, "coevolution.generations=3", "batching=loop")])
    return out


def test_two_workers_give_the_one_worker_pool(one_worker, tmp_path):
    _run([sys.executable, *_train_cmd(tmp_path / "loop", "coevolution.generations=3", "batching=loop"),
          "--workers", "2"])
    _assert_same_pool(one_worker, tmp_path / "loop")
    # vmap batches 2 cells per rank instead of 4: same run as one vmap worker up to float rounding
    # (vmap and loop themselves differ by more: Adam magnifies rounding in near-zero gradients).
    _run([sys.executable, *_train_cmd(tmp_path / "vmap1", "coevolution.generations=3", "batching=vmap")])
    _run([sys.executable, *_train_cmd(tmp_path / "vmap", "coevolution.generations=3", "batching=vmap"),
          "--workers", "2"])
    _assert_same_pool(tmp_path / "vmap1", tmp_path / "vmap", atol=1e-5)
    # Only rank 0 wrote the run folder: one metrics line per generation, each with all 4 cells.
    lines = (tmp_path / "loop" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(len(__import__("json").loads(x)["cells"]) == 4 for x in lines)


def test_a_worker_dying_at_teardown_after_the_run_loses_nothing(one_worker, tmp_path):
    """Gloo can abort a process while its threads shut down; once the pool is written that is only a warning."""
    env = dict(_env(), MUSTANGS_TEST_ABORT_AT_EXIT="1")
    res = subprocess.run([sys.executable, *_train_cmd(tmp_path / "run", "coevolution.generations=3", "batching=loop"),
                          "--workers", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "died while shutting down" in res.stderr and "Traceback" not in res.stderr
    _assert_same_pool(one_worker, tmp_path / "run")


def _two_nodes(out: Path, rdzv_id: str, timeout: float) -> tuple[bool, str]:
    """Run two torchrun launchers (--nnodes 2) against one c10d endpoint; (finished, output)."""
    cmd = [*_torchrun(), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", rdzv_id,
           *_train_cmd(out, "coevolution.generations=3", "batching=loop"), "--resume"]
    nodes = []
    for _ in range(2):  # the second launcher joins a moment later, as a second machine would
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))
        time.sleep(1.0)
    outputs, finished = [], True
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            finished = False
            for n in nodes:  # the launchers and their workers
                with __import__("contextlib").suppress(ProcessLookupError):
                    os.killpg(n.pid, signal.SIGKILL)
            outputs.append(node.communicate()[0])
            break
        finished &= node.returncode == 0
    return finished, "\n".join(o[-2000:] for o in outputs)


def test_two_torchrun_nodes_on_loopback(one_worker, tmp_path):
    # A run takes ~15 s. Once, under heavy load, the c10d rendezvous of two launchers on one
    # host hung; that was not reproduced in 8 further trials. A hung attempt is retried once
    # from scratch, and the test fails if that one hangs too.
    ok, log = _two_nodes(tmp_path / "run", "mustangs-test", timeout=60)
    if not ok:
        print(f"first two-node attempt did not finish; retrying. Its output:\n{log}")
        ok, log = _two_nodes(tmp_path / "retry", "mustangs-test-retry", timeout=150)
        assert ok, log
        _assert_same_pool(one_worker, tmp_path / "retry")
        return
    _assert_same_pool(one_worker, tmp_path / "run")


def _latest_generation(run: Path) -> int:
    try:
        return int(__import__("json").loads((run / "checkpoints" / "index.json").read_text())["latest"]["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def test_sigkill_of_a_worker_restarts_from_the_checkpoint(tmp_path):
    longer = ["coevolution.generations=6", "coevolution.batches_per_generation=40", "batching=loop"]
    reference = tmp_path / "reference"
    _run([sys.executable, *_train_cmd(reference, *longer)])
    run = tmp_path / "killed"
    agent = subprocess.Popen([*_torchrun(), "--nproc-per-node", "2", "--max-restarts", "2",
                              "--master-port", str(free_port()), *_train_cmd(run, *longer), "--resume"],
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while _latest_generation(run) < 2 and time.monotonic() < deadline and agent.poll() is None:
        time.sleep(0.2)
    assert _latest_generation(run) >= 2, "no checkpoint appeared"
    workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[-1]), signal.SIGKILL)
    out, _ = agent.communicate(timeout=240)
    assert agent.returncode == 0, out[-3000:]
    assert "resuming" in out and "exitcode: -9" in out
    _assert_same_pool(reference, run)


def test_more_workers_than_cells_is_one_clear_line(tmp_path):
    res = subprocess.run([sys.executable, *_train_cmd(tmp_path / "x", "coevolution.generations=1"), "--workers", "5"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: 5 workers for a grid of 4 cells: every worker needs at least one cell; use --workers 4 or fewer, "
        "or a bigger grid"]
    assert not (tmp_path / "x").exists()
