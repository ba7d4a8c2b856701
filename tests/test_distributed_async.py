"""The async exchange (``distribution.exchange: async``, issue 22): the store exchange in one
process, the straggler switch, the config checks, and 2-rank loopback runs (a straggler, bounded
staleness, a per-rank resume). Sync runs stay bit-identical: tests/test_distributed.py, unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mustangs.errors import ConfigError, UserError
from mustangs.pool.format import read_pool
from test_distributed import _env, _run, _train_cmd
from trainer.config import load_train_config
from trainer.exchange import StoreExchange
from trainer.grid import Grid
from trainer.straggler import ENV, Straggle, parse, straggle


# --------------------------------------------------------------------------- in one process

def _pair(store, height=2, width=2, ranks=2):
    nbr = Grid(height, width).neighbour_table(True)
    from trainer.distributed import split_cells

    blocks = split_cells(height * width, ranks)
    return [StoreExchange(store, r, blocks, nbr, poll=0.001) for r in range(ranks)], blocks


def test_store_exchange_reads_the_freshest_copy_and_its_lag():
    store = dist.HashStore()
    (a, b), blocks = _pair(store, 3, 3, 2)        # cells 0..4 on rank 0, 5..8 on rank 1
    assert a.boundary and b.boundary and set(a.sources) == {1} and set(b.sources) == {0}
    rows = lambda r, v: {"w": torch.full((blocks[r][1] - blocks[r][0], 2), float(v))}  # noqa: E731
    b.publish("centres", 0, rows(1, 0))
    b.publish("centres", 3, rows(1, 3))         # overwrites: readers see generation 3 only
    full, lags = a.gather("centres", 5, rows(0, -1))
    assert full["w"].shape == (9, 2) and torch.all(full["w"][:5] == -1)
    need = a.sources[1]
    assert torch.all(full["w"][need] == 3) and lags == {c: 2 for c in need}
    unused = sorted(set(range(5, 9)) - set(need))
    assert all(torch.all(full["w"][c] == 0) for c in unused)   # cells no neighbourhood of rank 0 reads
    # a neighbour ahead of us gives a negative lag; counters feed metrics.jsonl
    assert a.gather("centres", 1, rows(0, -1))[1] == {c: -2 for c in need}
    took = a.take()
    assert took["bytes"] > 0 and took["waited_s"] == 0.0 and a.take()["bytes"] == 0


def test_max_staleness_waits_for_a_fresh_enough_copy():
    import threading

    store = dist.HashStore()
    (a, b), blocks = _pair(store)
    b.publish("centres", 0, {"w": torch.zeros(2, 1)})
    later = threading.Timer(0.2, lambda: b.publish("centres", 4, {"w": torch.ones(2, 1)}))
    later.start()
    full, lags = a.gather("centres", 5, {"w": torch.zeros(2, 1)}, max_staleness=1)
    later.join()
    assert set(lags.values()) == {1} and torch.all(full["w"][2:] == 1)
    assert a.take()["waited_s"] >= 0.1


def test_a_rank_that_stops_beating_is_reported_lost_and_a_beating_one_is_not():
    import time

    from trainer.exchange import Heartbeat, RankLost, Watch

    store = dist.TCPStore("127.0.0.1", 0, None, True, wait_for_workers=False)
    beat = Heartbeat(store, 1, every=0.05)
    watch = Watch(store, lost_after=0.4)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:          # alive: its beat keeps moving, however long we wait
        watch.check(1, "a test")
        time.sleep(0.05)
    beat.stop()
    time.sleep(0.2)                              # let the last beat land
    with pytest.raises(RankLost, match="rank 1 has shown no sign of life for 0 s while this rank waited for x"):
        while time.monotonic() - t0 < 5.0:
            watch.check(1, "x")
            time.sleep(0.05)
    assert time.monotonic() - t0 < 2.5
    never = Watch(store, lost_after=0.2)         # a rank that never beat gets the same grace from the first look
    never.check(2, "y")
    time.sleep(0.3)
    with pytest.raises(RankLost):
        never.check(2, "y")


def test_done_marks():
    store = dist.HashStore()
    (a, b), _ = _pair(store)
    a.mark_done(3)
    b.mark_done(3)
    b.mark_done(3)   # a restarted rank says it again
    assert a.wait_all_done() < 1.0


def test_straggler_switch(monkeypatch):
    assert parse("3:slow=2, 1:pause=30@4") == [Straggle(3, factor=2.0), Straggle(1, pause=30.0, at=4)]
    slept: list[float] = []
    monkeypatch.delenv(ENV, raising=False)
    assert straggle(0, 1, 1.0, sleep=slept.append) == 0.0
    monkeypatch.setenv(ENV, "1:slow=3,0:pause=5@2")
    assert straggle(1, 1, 0.5, sleep=slept.append) == pytest.approx(1.0)   # (3 - 1) x 0.5 s
    assert straggle(0, 1, 0.5, sleep=slept.append) == 0.0                   # pauses after generation 2 only
    assert straggle(0, 2, 0.5, sleep=slept.append) == 5.0
    assert straggle(2, 2, 0.5, sleep=slept.append) == 0.0
    assert slept == [pytest.approx(1.0), 5.0]
    for bad in ("x:slow=2", "1:slow=0.5", "1:fast=2", "1:pause=3@0"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(UserError, match="RANK:slow=FACTOR"):
            straggle(1, 1, 0.1)


@pytest.mark.parametrize("overrides,words", [
    (["distribution.exchange=async", "coevolution.adversary=neighbour"], "set distribution.exchange=sync"),
    (["distribution.max_staleness=2"], "set distribution.exchange=async"),
    (["distribution.lost_after=30"], "set distribution.exchange=async"),
    (["distribution.exchange=async", "distribution.lost_after=0"], "lost_after"),
    (["distribution.exchange=maybe"], "legal values: sync, async"),
])
def test_impossible_async_configs_are_refused(overrides, words):
    with pytest.raises(ConfigError, match=words):
        load_train_config("configs/rings-3x3.yaml", overrides)


# --------------------------------------------------------------------------- 2 ranks on loopback

ASYNC = ["batching=loop", "distribution.exchange=async"]


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_async_run_with_a_straggler_writes_a_loadable_pool(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    run = tmp_path / "run"
    env = dict(_env(), **{ENV: "1:slow=3"})
    res = subprocess.run([sys.executable, *_train_cmd(run, "coevolution.generations=4", *ASYNC), "--workers", "2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    pool = read_pool(run / "pool")
    assert len(pool.load_generators()) >= 1 and pool.extra["run"]["generations"] == 4
    lines = _lines(run)
    assert [x["generation"] for x in lines] == [1, 2, 3, 4]
    for x in lines:   # every cell, and for each neighbourhood member how old its copy was
        assert len(x["cells"]) == 4 and len(x["ranks"]) == 2
        for rec in x["cells"]:
            assert len(rec["staleness"]) == 3 and rec["staleness"][0] == 0
            assert all(-4 <= lag <= 4 for lag in rec["staleness"])
        assert x["ranks"][0]["exchange"]["collectives"] == 0   # nothing waited on a collective
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["rank-0", "rank-1"]
    assert (run / "samples" / "gen-000004.png").is_file()


@pytest.mark.slow
def test_bounded_staleness_and_per_rank_resume(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    run = tmp_path / "run"
    bounded = [*ASYNC, "distribution.max_staleness=1"]
    env = dict(_env(), **{ENV: "0:slow=3"})
    res = subprocess.run([sys.executable, *_train_cmd(run, "coevolution.generations=2", *bounded), "--workers", "2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # more generations, resumed: each rank from its own checkpoint
    _run([sys.executable, *_train_cmd(run, "coevolution.generations=4", *bounded), "--workers", "2", "--resume"])
    lines = _lines(run)
    assert [x["generation"] for x in lines] == [1, 2, 3, 4]
    assert all(lag <= 1 for x in lines for rec in x["cells"] for lag in rec["staleness"])
    assert read_pool(run / "pool").extra["run"]["generations"] == 4
    # the other exchange cannot resume it, and says how
    res = subprocess.run([sys.executable, *_train_cmd(run, "coevolution.generations=5", "batching=loop"),
                          "--workers", "2", "--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "distribution.exchange=async" in res.stderr


def test_dry_run_shows_the_exchange():
    from trainer.commands.train import dry_run_text

    cfg = load_train_config("configs/rings-3x3.yaml", ["distribution.exchange=async", "distribution.max_staleness=2"])
    text = dry_run_text(cfg, Path("runs/x"), ranks=2)
    assert "exchange: async" in text and "max_staleness: 2" in text
    assert "# ranks: 2 ranks, distribution.exchange=async" in text and "> 2 generations old" in text
    sync = dry_run_text(load_train_config("configs/rings-3x3.yaml", []), Path("runs/x"), ranks=2)
    assert "distribution.exchange=sync" in sync and "bit-identical" in sync
