"""Generation time against the number of worker processes, and the cost of the exchange.

Runs the same small grid with ``--workers 1`` and ``--workers N`` side by side (same config,
same seed) and prints seconds per generation, the ratio to one worker, and the bytes and
milliseconds the writer rank spent in collectives per generation (``exchange`` in
metrics.jsonl). Example::

    python benchmarks/bench_distributed.py --workers 1 2 --generations 4
    python benchmarks/bench_distributed.py --workers 1 2 4 8 --grid 4 4   # a bigger machine

``--straggler`` compares the two exchanges (``distribution.exchange``, docs/scale-out.md) instead:
``--ranks`` ranks on one machine (4 by default, one cell each on a 2x2 rings grid), each exchange
run twice per seed, with the last rank slowed ``--slow`` times (MUSTANGS_TEST_STRAGGLER) and
without; it prints the generations/s of the ranks that are *not* slowed in both runs and their
ratio (what they keep), and the pool's quality at equal generations (best mixture, re-purposed
TVD) per exchange, mean ± sd over the seeds::

    python benchmarks/bench_distributed.py --straggler --seeds 1 2 3 --generations 10 --batches 40
    python benchmarks/bench_distributed.py --straggler --ranks 2 --seeds 1 2 3   # one rank per core on 2 cores
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


def straggler_run(exchange: str, seed: int, args, out: Path, slow: float) -> dict:
    """One run with rank ``ranks-1`` slowed ``slow`` times (1 = not slowed); generations/s per rank
    and the pool's quality.

    A rank's rate is (generations - 1) / the wall time between the ends of its generations 1 and G
    (when its metrics lines appear); in sync rank 0 stands for the fast ranks (it waits for every
    rank each generation), in async every rank writes its own lines.
    Quality: the pool's best mixture (trainer's final scores) and the re-purposed ensemble's verified
    TVD (``ensembler optimize --objective tvd``), the same for every exchange.
    """
    ranks = args.ranks
    last = ranks - 1
    cmd = [sys.executable, "-m", "trainer", "train", args.straggler_config, "--out", str(out), "--quiet",
           "--workers", str(ranks), "grid.height=2", "grid.width=2", "threads=1", "batching=loop",
           f"seed={seed}", f"coevolution.generations={args.generations}",
           f"coevolution.batches_per_generation={args.batches}", "output.report=false",
           "output.sample_every=null", "mixture.eval_samples=200", "eval.fid_samples=2000",
           f"distribution.exchange={exchange}", *args.overrides]
    env = dict(os.environ, MUSTANGS_OFFLINE="1", OMP_NUM_THREADS="1")
    if slow != 1:
        env["MUSTANGS_TEST_STRAGGLER"] = f"{last}:slow={slow}"
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    t0 = time.perf_counter()
    seen = _watch_generations(cmd, env, out, ranks if exchange == "async" else 1, exchange)
    wall = time.perf_counter() - t0
    # a rank's rate: generations 2..G over the wall time between the ends of generation 1 and G, as
    # seen by polling its metrics file (so checkpoints, scoring and waits between generations count)
    per_rank = {r: [round(b - a, 3) for a, b in zip(ts, ts[1:])] for r, ts in seen.items()}
    rate = {r: (len(ts) - 1) / (ts[-1] - ts[0]) for r, ts in seen.items() if len(ts) > 1 and ts[-1] > ts[0]}
    fast = [g for r, g in rate.items() if r != last]
    stale = []
    if exchange == "async":
        for x in (out / "metrics.jsonl").read_text().splitlines():
            stale += [lag for c in json.loads(x)["cells"] for lag in c.get("staleness", [])]
    best = json.loads((out / "pool" / "manifest.json").read_text())["summary"]["best_mixture"]
    ens = out / "ensemble.json"
    opt = subprocess.run([sys.executable, "-m", "ensembler", "optimize", str(out / "pool"), "--objective", "tvd",
                          "--diversity-samples", "0", "--out", str(ens)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if opt.returncode:
        sys.exit(f"ensembler optimize failed:\n{opt.stderr[-2000:]}")
    verified = json.loads(ens.read_text())["metrics"]["verified"]
    fid_key = next(k for k in best if k.startswith("fid_"))
    return {"exchange": exchange, "seed": seed, "slow": slow, "fast_gens_per_s": statistics.median(fast),
            "slow_gens_per_s": rate.get(last), "wall_s": wall,
            "per_rank_s": {r: [round(x, 2) for x in v] for r, v in per_rank.items()},
            "staleness_max": max(stale) if stale else None, "staleness_min": min(stale) if stale else None,
            "best_mixture_fid": best[fid_key], "best_mixture_modes": best.get("modes_covered5k",
                                                                                best.get("modes_covered2k")),
            "best_mixture_hq": best.get("high_quality5k", best.get("high_quality2k")),
            "repurposed_tvd": verified["tvd_cls10k"]}


def _watch_generations(cmd: list[str], env: dict, out: Path, files: int, exchange: str) -> dict[int, list[float]]:
    """Run ``cmd``; per rank, the wall-clock moment each of its metrics lines appeared (20 ms polling).

    Sync runs write one ``metrics.jsonl`` (rank 0, which waits for every rank each generation);
    async ranks each write ``metrics/rank-R.jsonl``.
    """
    paths = {r: out / "metrics" / f"rank-{r}.jsonl" for r in range(files)} if exchange == "async" else \
        {0: out / "metrics.jsonl"}
    seen: dict[int, list[float]] = {r: [] for r in paths}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        done = proc.poll() is not None
        now = time.perf_counter()
        for r, path in paths.items():
            try:
                n = path.read_bytes().count(b"\n")
            except OSError:
                continue
            seen[r] += [now] * max(0, n - len(seen[r]))
        if done:
            break
        time.sleep(0.02)
    err = proc.stderr.read()
    if proc.returncode:
        sys.exit(f"exchange={exchange} failed:\n{err[-2000:]}")
    return seen


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def straggler(args) -> None:
    """``--straggler``: sync vs async, each with and without one slowed rank (see the module docstring)."""
    rows = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for exchange in ("sync", "async"):
                for slow in (1.0, args.slow):
                    rows.append(straggler_run(exchange, seed, args, Path(tmp) / f"{exchange}-{seed}-{slow}", slow))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{args.ranks} gloo ranks, 2x2 grid, rank {args.ranks - 1} slowed {args.slow}x or not, {args.generations} "
          f"generations x {args.batches} batches, config {args.straggler_config}, seeds {args.seeds}, "
          f"load {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    print()
    print("| exchange | seed | fast ranks gen/s, none slowed | fast ranks gen/s, one slowed | kept | slowed rank gen/s "
          "| staleness min..max | wall s (slowed run) |")
    print("|---|---|---|---|---|---|---|---|")
    kept: dict[str, list[float]] = {"sync": [], "async": []}
    for seed in args.seeds:
        for exchange in ("sync", "async"):
            base = next(r for r in rows if r["seed"] == seed and r["exchange"] == exchange and r["slow"] == 1.0)
            hit = next(r for r in rows if r["seed"] == seed and r["exchange"] == exchange and r["slow"] != 1.0)
            k = hit["fast_gens_per_s"] / base["fast_gens_per_s"]
            kept[exchange].append(k)
            slow = "-" if hit["slow_gens_per_s"] is None else f"{hit['slow_gens_per_s']:.2f}"
            st = "-" if hit["staleness_max"] is None else f"{hit['staleness_min']}..{hit['staleness_max']}"
            print(f"| {exchange} | {seed} | {base['fast_gens_per_s']:.2f} | {hit['fast_gens_per_s']:.2f} | "
                  f"**{k:.0%}** | {slow} | {st} | {hit['wall_s']:.0f} |")
    print()
    for exchange in ("sync", "async"):
        print(f"{exchange}: the fast ranks keep {_mean_sd(kept[exchange])} of their rate when one rank is slowed")
    print()
    print("Pool quality at equal generations (mean ± sd over seeds):")
    print()
    print("| exchange | straggler | best mixture fid | best mixture modes | best mixture high-quality | re-purposed tvd |")
    print("|---|---|---|---|---|---|")
    for exchange in ("sync", "async"):
        for slow in (1.0, args.slow):
            sel = [r for r in rows if r["exchange"] == exchange and r["slow"] == slow]
            print(f"| {exchange} | {'none' if slow == 1.0 else f'{slow}x'} | "
                  f"{_mean_sd([r['best_mixture_fid'] for r in sel])} | {_mean_sd([r['best_mixture_modes'] for r in sel])} | "
                  f"{_mean_sd([r['best_mixture_hq'] for r in sel])} | {_mean_sd([r['repurposed_tvd'] for r in sel])} |")


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
    p.add_argument("--ranks", type=int, default=4, help="--straggler: ranks (2x2 grid: 4 = one cell each)")
    p.add_argument("--slow", type=float, default=2.0, help="--straggler: the last rank is this many times slower")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="--straggler: per seed, each exchange with and without the straggler")
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
