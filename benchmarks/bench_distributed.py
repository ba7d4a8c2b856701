"""Generation time against the number of worker processes, and the cost of the exchange.

Runs the same small grid with ``--workers 1`` and ``--workers N`` side by side (same config,
same seed) and prints seconds per generation, the ratio to one worker, and the bytes and
milliseconds the writer rank spent in collectives per generation (``exchange`` in
metrics.jsonl). Example::

    python benchmarks/bench_distributed.py --workers 1 2 --generations 4
    python benchmarks/bench_distributed.py --workers 1 2 4 8 --grid 4 4   # a bigger machine

``--straggler`` compares the two exchanges (``distribution.exchange``, docs/scale-out.md) instead:
4 gloo ranks on one machine, the last one slowed ``--slow`` times (MUSTANGS_TEST_STRAGGLER), one
cell per rank on a 2x2 rings grid, and prints the generations/s of the ranks that are *not* slowed,
sync vs async, for each seed::

    nice -n 10 python benchmarks/bench_distributed.py --straggler --seeds 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(workers: int, args, out: Path) -> dict:
    """Train once with ``workers`` processes; summarise its metrics.jsonl."""
    cmd = [sys.executable, "-m", "trainer", "train", args.config, "--out", str(out), "--quiet",
           "--workers", str(workers), f"grid.height={args.grid[0]}", f"grid.width={args.grid[1]}",
           f"coevolution.generations={args.generations}", f"coevolution.batches_per_generation={args.batches}",
           "output.report=false", "output.sample_every=null", "eval.fid_samples=500", *args.overrides]
    env = dict(os.environ, MUSTANGS_OFFLINE="1")
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"workers={workers} failed:\n{res.stderr[-2000:]}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steady = lines[1:] or lines  # the first generation pays for warm-up
    ex = [x.get("exchange", {}) for x in steady]
    return {"workers": workers, "s_per_gen": statistics.median(x["seconds"] for x in steady),
            "exchange_mb": statistics.median(e.get("bytes", 0) for e in ex) / 1e6,
            "exchange_ms": statistics.median(e.get("ms", 0.0) for e in ex),
            "collectives": statistics.median(e.get("collectives", 0) for e in ex)}


def straggler_run(exchange: str, seed: int, args, out: Path) -> dict:
    """One 4-rank run with rank ``ranks-1`` slowed ``args.slow`` times; generations/s per rank.

    A rank's rate is (generations - 1) / the sum of its own per-generation seconds after the first
    (warm-up); in sync the fast ranks' seconds include waiting for the straggler, in async they do not.
    """
    ranks = args.ranks
    slow = ranks - 1
    cmd = [sys.executable, "-m", "trainer", "train", args.straggler_config, "--out", str(out), "--quiet",
           "--workers", str(ranks), "grid.height=2", "grid.width=2", "threads=1", "batching=loop",
           f"seed={seed}", f"coevolution.generations={args.generations}",
           f"coevolution.batches_per_generation={args.batches}", "output.report=false",
           "output.sample_every=null", "mixture.eval_samples=200", "eval.fid_samples=500",
           f"distribution.exchange={exchange}", *args.overrides]
    env = dict(os.environ, MUSTANGS_OFFLINE="1", OMP_NUM_THREADS="1",
               MUSTANGS_TEST_STRAGGLER=f"{slow}:slow={args.slow}")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        sys.exit(f"exchange={exchange} seed={seed} failed:\n{res.stderr[-2000:]}")
    if exchange == "async":
        per_rank = {r: [json.loads(x)["seconds"] for x in (out / "metrics" / f"rank-{r}.jsonl").read_text().splitlines()]
                    for r in range(ranks)}
    else:   # sync: one line per generation, timed on rank 0 (a fast rank: it waits for the straggler)
        secs = [json.loads(x)["seconds"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        per_rank = {0: secs}
    rate = {r: (len(v) - 1) / sum(v[1:]) for r, v in per_rank.items() if len(v) > 1 and sum(v[1:]) > 0}
    fast = [g for r, g in rate.items() if r != slow]
    stale = []
    if exchange == "async":
        for x in (out / "metrics.jsonl").read_text().splitlines():
            stale += [lag for c in json.loads(x)["cells"] for lag in c.get("staleness", [])]
    return {"exchange": exchange, "seed": seed, "fast_gens_per_s": statistics.median(fast),
            "slow_gens_per_s": rate.get(slow), "wall_s": wall,
            "per_rank_s": {r: [round(x, 2) for x in v] for r, v in per_rank.items()},
            "staleness_max": max(stale) if stale else None, "staleness_min": min(stale) if stale else None}


def straggler(args) -> None:
    """``--straggler``: sync vs async with one slowed rank (see the module docstring)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for exchange in ("sync", "async"):
                rows.append(straggler_run(exchange, seed, args, Path(tmp) / f"{exchange}-{seed}"))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{args.ranks} gloo ranks, 2x2 grid, rank {args.ranks - 1} slowed {args.slow}x, {args.generations} "
          f"generations x {args.batches} batches, config {args.straggler_config}, load {os.getloadavg()[0]:.2f}")
    print("| exchange | seed | fast ranks gen/s (median) | slowed rank gen/s | wall s (whole run) | staleness min..max |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        slow = "-" if r["slow_gens_per_s"] is None else f"{r['slow_gens_per_s']:.2f}"
        st = "-" if r["staleness_max"] is None else f"{r['staleness_min']}..{r['staleness_max']}"
        print(f"| {r['exchange']} | {r['seed']} | {r['fast_gens_per_s']:.2f} | {slow} | {r['wall_s']:.0f} | {st} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--grid", type=int, nargs=2, default=[2, 2], metavar=("H", "W"))
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--batches", type=int, default=60, help="Adam steps per cell per generation")
    p.add_argument("--straggler", action="store_true", help="sync vs async with one slowed rank (4 gloo ranks)")
    p.add_argument("--straggler-config", default="configs/rings-3x3.yaml", help="--straggler: the config")
    p.add_argument("--ranks", type=int, default=4, help="--straggler: gloo ranks, one cell each (2x2 grid)")
    p.add_argument("--slow", type=float, default=2.0, help="--straggler: the last rank is this many times slower")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="--straggler: one sync and one async run each")
    p.add_argument("overrides", nargs="*", help="extra config overrides (key=value)")
    args = p.parse_args()
    if args.straggler:
        return straggler(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            rows.append(run(w, args, Path(tmp) / f"w{w}"))
    base = rows[0]["s_per_gen"]
    print(f"grid {args.grid[0]}x{args.grid[1]}, {args.batches} batches/generation, config {args.config}")
    print("| workers | s / generation | ratio to first | exchange MB / gen (rank 0 sent) | exchange ms / gen | collectives / gen |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['s_per_gen']:.2f} | {r['s_per_gen'] / base:.2f} | {r['exchange_mb']:.2f} | "
              f"{r['exchange_ms']:.0f} | {r['collectives']:.0f} |")


if __name__ == "__main__":
    main()
