"""A rank killed while another writes its checkpoint, and an async rank killed mid-run (issues 22, 23).

Two gloo ranks under ``torchrun``. ``MUSTANGS_TEST_HOLD_AT`` (mustangs/io/faults.py) holds rank 0
inside its checkpoint write (the tensors in their temporary file, not yet renamed); the test
SIGKILLs rank 1 at that moment. torchrun's agent then stops rank 0 mid-write (SIGTERM), which
is what a real crash of a neighbour does to a rank that is writing. The folder must
``--resume`` to completion without a temporary file left behind: to the pool of an
uninterrupted run (sync), or to a complete, loadable pool (async, where timing decides the
result).

The kill-and-rejoin test documents what torchrun does with an async run when a rank dies: its
elastic agent restarts *every* rank (the survivor too), and each resumes from its own last
per-rank checkpoint. docs/scale-out.md gives the figures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from mustangs.io.faults import HOLD_ENV
from mustangs.pool.format import read_pool
from test_distributed import _assert_same_pool, _env, _run, _torchrun, _train_cmd
from trainer.distributed import free_port

pytestmark = pytest.mark.slow

GENS = ["coevolution.generations=3", "batching=loop"]
ASYNC = ["distribution.exchange=async"]


def _temp_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


def _workers(agent: subprocess.Popen) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True,
                                           text=True).stdout.split()]


def _wait_for(test, what: str, agent: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if agent.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {agent.communicate()[0][-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _kill_rank1_while_rank0_writes(run: Path, hold: Path, extra: list[str]) -> tuple[str, list[str]]:
    """torchrun, 2 ranks, no restarts: hold rank 0 in its 2nd checkpoint write, SIGKILL rank 1.

    Returns the launcher's output and the temporary files seen while rank 0 was held."""
    env = dict(_env(), **{HOLD_ENV: f"checkpoint-tmp:2@0={hold}"})
    agent = subprocess.Popen([*_torchrun(), "--nproc-per-node", "2", "--max-restarts", "0", "--master-port",
                              str(free_port()), *_train_cmd(run, *GENS, *extra)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: hold.is_file() and hold.read_text().endswith("\n"), "hold at checkpoint-tmp", agent)
        pid, rank = hold.read_text().split()
        assert rank == "0"
        inside = _temp_files(run)   # rank 0 is inside its checkpoint write: its tensors in a temp file
        others = [p for p in _workers(agent) if p != int(pid)]
        assert len(others) == 1, others
        os.kill(others[0], signal.SIGKILL)
        out, _ = agent.communicate(timeout=180)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode != 0, out[-3000:]
    assert "exitcode: -9" in out, out[-3000:]
    return out, inside


def test_rank_killed_while_rank0_writes_its_sync_checkpoint_resumes_to_the_same_pool(tmp_path):
    reference = tmp_path / "reference"
    _run([sys.executable, *_train_cmd(reference, *GENS)])
    run = tmp_path / "run"
    _out, inside = _kill_rank1_while_rank0_writes(run, tmp_path / "hold", [])
    assert any(re.fullmatch(r"checkpoints/\.gen-000002\.safetensors\..*\.tmp", p) for p in inside), inside
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    assert index["latest"]["generation"] == 1   # the interrupted write did not replace the good checkpoint
    res = _run([sys.executable, *_train_cmd(run, *GENS), "--workers", "2", "--resume"])
    assert "resuming" in res.stderr and "Traceback" not in res.stderr
    assert _temp_files(run) == []
    _assert_same_pool(reference, run)


def test_rank_killed_while_rank0_writes_its_async_checkpoint_resumes_to_a_complete_pool(tmp_path):
    run = tmp_path / "run"
    _out, inside = _kill_rank1_while_rank0_writes(run, tmp_path / "hold", ASYNC)
    assert any(re.fullmatch(r"checkpoints/rank-0/\.gen-000002\.safetensors\..*\.tmp", p) for p in inside), inside
    res = _run([sys.executable, *_train_cmd(run, *GENS, *ASYNC), "--workers", "2", "--resume"])
    assert "Traceback" not in res.stderr
    assert _temp_files(run) == []
    pool = read_pool(run / "pool")
    assert len(pool.load_generators()) >= 1 and pool.extra["run"]["generations"] == 3
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["generation"] for x in lines] == [1, 2, 3] and all(len(x["cells"]) == 4 for x in lines)


# --------------------------------------------------------------------------- async: kill one rank mid-run

def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)


def _generations(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def _checkpointed(folder: Path) -> int:
    """The generation of the latest checkpoint in ``folder`` (0: none yet)."""
    try:
        return int(json.loads((folder / "index.json").read_text())["latest"]["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _kill_rank1_mid_run(run: Path, extra: list[str], env: dict, ready) -> tuple[str, dict]:
    """torchrun --max-restarts 1, async, 2 ranks: SIGKILL rank 1 once ``ready()``; (output, figures).

    Figures: rank 0's generation and checkpoint at the kill, how long it went on (seconds, and its
    generation when the agent stopped it)."""
    agent = subprocess.Popen([*_torchrun(), "--nproc-per-node", "2", "--max-restarts", "1", "--master-port",
                              str(free_port()), *_train_cmd(run, *extra, *ASYNC), "--resume"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m0 = run / "metrics" / "rank-0.jsonl"
    try:
        _wait_for(ready, "the moment to kill rank 1", agent)
        pids = {_rank_of(p): p for p in _workers(agent)}
        assert set(pids) == {0, 1}, pids
        t_kill = time.monotonic()
        fig = {"gen0": _generations(m0), "ckpt0": _checkpointed(run / "checkpoints" / "rank-0"),
               "ckpt1": _checkpointed(run / "checkpoints" / "rank-1")}
        os.kill(pids[1], signal.SIGKILL)
        while Path(f"/proc/{pids[0]}").exists() and time.monotonic() - t_kill < 60:   # rank 0 goes on?
            fig["gen0_at_stop"] = _generations(m0)
            time.sleep(0.02)
        fig["survived_s"] = round(time.monotonic() - t_kill, 2)
        out, _ = agent.communicate(timeout=240)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, out[-3000:]
    assert not Path(f"/proc/{pids[0]}").exists()   # the survivor was stopped and restarted too
    print(fig)
    return out, fig


def _complete(run: Path, generations: int) -> None:
    assert _temp_files(run) == []
    pool = read_pool(run / "pool")
    assert len(pool.load_generators()) >= 1 and pool.extra["run"]["generations"] == generations
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["generation"] for x in lines] == list(range(1, generations + 1))
    assert all(len(x["cells"]) == 4 for x in lines)


def test_async_rank_killed_mid_run_under_torchrun_restarts_the_group_and_each_rank_resumes(tmp_path):
    """What torchrun --max-restarts 1 does with an async run when one rank dies (measured, see
    docs/scale-out.md): the agent stops the survivor too and restarts both; each rank resumes from
    its own last checkpoint, so the survivor loses the generations after its last checkpoint."""
    run = tmp_path / "run"
    longer = ["coevolution.generations=6", "coevolution.batches_per_generation=20", "batching=loop"]
    out, fig = _kill_rank1_mid_run(run, longer, _env(), lambda: _checkpointed(run / "checkpoints" / "rank-1") >= 2)
    resumed0 = re.search(r"resuming \S+ from the checkpoint of generation (\d+)", out)
    resumed1 = re.search(r"rank 1 resumes its cells from its checkpoint of generation (\d+)", out)
    assert resumed0 and resumed1, out[-3000:]        # both resumed, each from its own checkpoint
    assert int(resumed1.group(1)) >= 2 and int(resumed0.group(1)) >= fig["gen0_at_stop"] - 1
    _complete(run, 6)


def test_async_rank_killed_before_its_first_checkpoint_starts_over_beside_a_resumed_rank(tmp_path):
    """Rank 1 (slowed 3x) dies before its first checkpoint while rank 0 has one: rank 0 resumes,
    rank 1 starts its cells over, and the run completes. Their tensors then sit in different
    orders (checkpoint file vs network), which once paired different tensors in the final
    gathers (a gloo abort); the gathers now run in sorted key order."""
    from trainer.straggler import ENV

    run = tmp_path / "run"
    extra = ["coevolution.generations=6", "coevolution.batches_per_generation=20", "batching=loop",
             "output.checkpoint_every=3"]
    m0 = run / "metrics" / "rank-0.jsonl"
    out, fig = _kill_rank1_mid_run(run, extra, dict(_env(), **{ENV: "1:slow=3"}), lambda: _generations(m0) >= 4)
    assert fig["ckpt0"] == 3 and fig["ckpt1"] == 0, fig
    assert "rank 1 of" in out and "has no checkpoint yet; its cells start from generation 0" in out
    assert re.search(r"resuming \S+ from the checkpoint of generation 3", out), out[-3000:]
    _complete(run, 6)
