"""Generation time against the number of worker processes, and the cost of the exchange.

Runs the same small grid with ``--workers 1`` and ``--workers N`` side by side (same config,
same seed) and prints seconds per generation, the ratio to one worker, and the bytes and
milliseconds the writer rank spent in collectives per generation (``exchange`` in
metrics.jsonl). Example::

    python benchmarks/bench_distributed.py --workers 1 2 --generations 4
    python benchmarks/bench_distributed.py --workers 1 2 4 8 --grid 4 4   # a bigger machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="configs/quickstart.yaml")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--grid", type=int, nargs=2, default=[2, 2], metavar=("H", "W"))
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--batches", type=int, default=60, help="Adam steps per cell per generation")
    p.add_argument("overrides", nargs="*", help="extra config overrides (key=value)")
    args = p.parse_args()
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
