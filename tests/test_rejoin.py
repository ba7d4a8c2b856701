"""An async rank that dies is restarted alone and rejoins while the other ranks keep training (issue 22).

Two launchers restart one rank without stopping the others:

- ``trainer train --workers 2 --max-restarts 1`` (its launcher holds the store);
- ``torchrun`` with one agent per rank (``--nnodes 2 --nproc-per-node 1 --rdzv-backend static
  --max-restarts 1``): a static rendezvous never restarts a healthy agent's worker, and agent 0
  holds the store for both.

``MUSTANGS_TEST_HOLD_AT=generation:3@1=PATH`` holds rank 1 after its 3rd generation (metrics
written, checkpoint of generation 3 not yet), the test waits until rank 0 has trained two
generations more, then SIGKILLs rank 1. Rank 1's restart finds the hold file and goes on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT
from mustangs.io.faults import HOLD_ENV
from mustangs.pool.format import read_pool
from test_distributed import _env, _torchrun, _train_cmd
from trainer.distributed import free_port

pytestmark = pytest.mark.slow

GENERATIONS = 7
ASYNC = [f"coevolution.generations={GENERATIONS}", "coevolution.batches_per_generation=10", "batching=loop",
         "distribution.exchange=async", "output.checkpoint_every=1"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _kill_held_rank1(procs: list[subprocess.Popen], run: Path, hold: Path) -> int:
    """Wait for rank 1 to hold, let rank 0 train 2 more generations, SIGKILL rank 1; rank 0's generation then."""
    deadline = time.monotonic() + 240
    while not (hold.exists() and hold.read_text().strip()):
        assert all(p.poll() is None for p in procs), "a launcher ended before rank 1 held"
        assert time.monotonic() < deadline, "rank 1 never reached its hold point"
        time.sleep(0.05)
    pid = int(hold.read_text().split()[0])
    while len(_lines(run / "metrics" / "rank-0.jsonl")) < 5:   # rank 0 goes on while rank 1 is stuck
        assert time.monotonic() < deadline, "rank 0 stopped training while rank 1 was held"
        time.sleep(0.05)
    at_kill = len(_lines(run / "metrics" / "rank-0.jsonl"))
    os.kill(pid, signal.SIGKILL)
    return at_kill


def _check_rejoined(run: Path, out: str, at_kill: int) -> None:
    assert "rank 1 resumes its cells from its checkpoint of generation 2" in out, out[-3000:]
    assert not re.search(r"resuming \S+ from the checkpoint", out), out[-3000:]   # rank 0 never restarted
    assert [x["generation"] for x in _lines(run / "metrics" / "rank-1.jsonl")] == list(range(1, GENERATIONS + 1))
    merged = _lines(run / "metrics.jsonl")
    assert [x["generation"] for x in merged] == list(range(1, GENERATIONS + 1))
    assert all(len(x["cells"]) == 4 for x in merged)
    rank0 = _lines(run / "metrics" / "rank-0.jsonl")
    # after the kill, rank 0 trained against rank 1's last published copy, which lagged behind it
    lags = [max(c["staleness"]) for x in rank0[at_kill - 1:] for c in x["cells"]]
    assert max(lags) >= 2, lags
    pool = read_pool(run / "pool")
    assert len(pool.load_generators()) == 4 and pool.extra["run"]["generations"] == GENERATIONS


def test_workers_launcher_restarts_a_dead_async_rank_alone(tmp_path):
    run, hold = tmp_path / "run", tmp_path / "hold"
    env = dict(_env(), **{HOLD_ENV: f"generation:3@1={hold}"})
    proc = subprocess.Popen([os.sys.executable, *_train_cmd(run, *ASYNC), "--workers", "2", "--max-restarts", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        at_kill = _kill_held_rank1([proc], run, hold)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"rank 1 died \(exit -9\); restarting it from its last checkpoint \(restart 1 of 1\)", out), out
    _check_rejoined(run, out, at_kill)


def test_torchrun_with_one_agent_per_rank_restarts_a_dead_async_rank_alone(tmp_path):
    run, hold = tmp_path / "run", tmp_path / "hold"
    env = dict(_env(), **{HOLD_ENV: f"generation:3@1={hold}"})
    port = str(free_port())
    agents = [subprocess.Popen([*_torchrun(), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(n),
                                "--rdzv-backend", "static", "--master-addr", "127.0.0.1", "--master-port", port,
                                "--max-restarts", "1", "--monitor-interval", "0.1", *_train_cmd(run, *ASYNC),
                                "--resume"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for n in (0, 1)]
    try:
        at_kill = _kill_held_rank1(agents, run, hold)
        outs = [a.communicate(timeout=240)[0] for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
    assert [a.returncode for a in agents] == [0, 0], "\n".join(o[-2000:] for o in outs)
    _check_rejoined(run, "\n".join(outs), at_kill)


def test_max_restarts_is_refused_where_a_rank_cannot_rejoin(tmp_path):
    for extra, words in ((["--workers", "2"], "distribution.exchange=async"),
                         (["--workers", "1", "distribution.exchange=async"], "--workers 2 or more")):
        res = subprocess.run([os.sys.executable, *_train_cmd(tmp_path / "r", *extra), "--max-restarts", "1"],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "r").exists()


def test_a_rank_lost_for_good_ends_the_others_with_one_line_instead_of_a_hang(tmp_path):
    """torchrun with one agent per rank and no restarts left: rank 1 dies, nothing restarts it; rank 0
    trains to its end, sees rank 1's heartbeat stand still for ``distribution.lost_after`` seconds,
    and stops with a one-line error (exit 1) instead of waiting for it forever."""
    run, hold = tmp_path / "run", tmp_path / "hold"
    env = dict(_env(), **{HOLD_ENV: f"generation:3@1={hold}"})
    port = str(free_port())
    agents = [subprocess.Popen([*_torchrun(), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(n),
                                "--rdzv-backend", "static", "--master-addr", "127.0.0.1", "--master-port", port,
                                "--max-restarts", "0", "--monitor-interval", "0.1",
                                *_train_cmd(run, *ASYNC, "distribution.lost_after=3")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for n in (0, 1)]
    try:
        _kill_held_rank1(agents, run, hold)
        outs = [a.communicate(timeout=240)[0] for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
    assert agents[0].returncode != 0 and agents[1].returncode != 0
    assert re.search(r"error: rank 0: rank 1 has shown no sign of life for 3 s while this rank waited for "
                     r"the end of its last generation, and no restart replaced it; .* --resume", outs[0]), outs[0][-3000:]
    assert 'exchange.py", line' not in outs[0]   # our one line; torchrun's agent adds its own traceback
    assert not (run / "pool").exists()
