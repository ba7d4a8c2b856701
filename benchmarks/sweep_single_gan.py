"""One GAN (1×1 grid, BCE) on a 2-D toy under recipe variants: what buys sample quality?

Each variant × seed trains ``configs/<toy>-3x3.yaml`` as a single GAN (the study's variant (a)) with a
few overrides and prints one JSON line with its mode metrics (10k samples) and CPU-seconds. Used to
check the reference's details (D on every other batch, lower learning rate) and how quality grows
with batch size and steps, before spending a whole study on them (benchmarks/RESULTS-studies.md).

    python benchmarks/sweep_single_gan.py --toy rings --seeds 0 1 --out runs/sweep-single > runs/sweep-single.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path

from study_modes import CONFIGS, VARIANTS as STUDY_VARIANTS, cpu_seconds, modes_of

VARIANTS = {
    "b100": ["data.batch_size=100"],
    "b200": ["data.batch_size=200"],
    "b400": [],
    "b400-lr3e-4": ["coevolution.lr_g=0.0003", "coevolution.lr_d=0.0003"],
    "b400-lr2e-4-4k": ["coevolution.lr_g=0.0002", "coevolution.lr_d=0.0002", "coevolution.generations=40"],
    "b400-dskip2": ["coevolution.d_skip_every=2"],       # the reference's D on every other mini-batch
    "b200-4k": ["data.batch_size=200", "coevolution.generations=40"],
    "b400-4k": ["coevolution.generations=40"],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toy", default="rings", choices=list(CONFIGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default="runs/sweep-single")
    args = p.parse_args()
    os.environ.setdefault("MUSTANGS_OFFLINE", "1")
    import torch

    from trainer.cli import main as trainer_main

    torch.set_num_threads(1)
    for seed in args.seeds:
        for name in args.variants:
            run = Path(args.out) / args.toy / f"{name}-s{seed}"
            c0 = cpu_seconds()
            if not (run / "pool" / "manifest.json").is_file():
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    rc = trainer_main([
                        "train", CONFIGS[args.toy], "--out", str(run), "--quiet", "--resume", f"seed={seed}",
                        "threads=1", *STUDY_VARIANTS["a-single"], "eval.fid_samples=10000", "output.report=false",
                        "output.sample_every=null", "output.checkpoint_every=100", *VARIANTS[name]])
                if rc:
                    sys.exit(f"sweep: {name} seed {seed} failed (exit {rc})")
            scores = json.loads((run / "pool" / "manifest.json").read_text())["generators"][0]["scores"]
            print(json.dumps({"toy": args.toy, "variant": name, "seed": seed, "overrides": VARIANTS[name],
                              "cpu_s": round(cpu_seconds() - c0, 1), **modes_of(scores)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
