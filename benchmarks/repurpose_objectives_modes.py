"""Which re-purposing objective gives the toys' ensembles full coverage? Existing pools, other objectives.

For every finished ``study_modes.py`` run of the chosen variants, re-purposes the pool with each
``--objectives`` entry (``ensembler optimize --method cma``, as the study does for ``tvd``) and scores
10k fresh samples of each ensemble with the study's mode metrics. No training: it reads the
study's pools, so it runs in a few minutes after ``study_modes.py``.

    python benchmarks/repurpose_objectives_modes.py --runs runs/study-modes/rings/1000-steps \
        --json runs/study-modes/objectives-rings-1000.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="a study_modes folder of runs: <toy>/<steps>-steps")
    p.add_argument("--variants", nargs="+", default=["b-isolated", "d-lipizzaner", "e-mustangs"])
    p.add_argument("--objectives", nargs="+", default=["tvd", "coverage", "tvd+coverage"])
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("MUSTANGS_OFFLINE", "1")
    import torch

    from ensembler.cli import main as ensembler_main
    from ensembler.ensemble import Ensemble
    from trainer.data import point_modes
    from trainer.metrics import mode_scores, mode_stats

    torch.set_num_threads(1)
    runs = Path(args.runs)
    toy = runs.parent.name
    records = []
    for run in sorted(runs.iterdir()):
        variant, _, seed = run.name.rpartition("-s")
        if variant not in args.variants or not (run / "pool" / "manifest.json").is_file():
            continue
        for objective in args.objectives:
            out = run / f"ensemble-{objective.replace('+', '-')}.json"
            if not out.is_file():
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    rc = ensembler_main(["optimize", str(run / "pool"), "--objective", objective, "--method", "cma",
                                         "--budget", "2000", "--seed", "0", "--samples", "10000",
                                         "--verify-samples", "10000", "--device", "cpu", "--out", str(out)])
                if rc:
                    sys.exit(f"repurpose: {objective} on {run} failed (exit {rc})")
            ens = Ensemble.load(out)
            x = ens.sample(10_000, torch.Generator().manual_seed(10_000 + int(seed)))
            m = mode_scores(mode_stats(x.numpy(), *point_modes(toy)))
            rec = {"toy": toy, "variant": variant, "seed": int(seed), "objective": objective,
                   "size": len(ens.members), **{k.rstrip("0123456789k"): v for k, v in m.items()}}
            records.append(rec)
            print(json.dumps(rec), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    K = point_modes(toy)[0].shape[0]
    print(f"\n| toy | variant | objective | seeds | modes covered | full coverage | high quality | TVD over modes |")
    print("|---|---|---|---|---|---|---|---|")
    groups: dict = {}
    for r in records:
        groups.setdefault((r["variant"], r["objective"]), []).append(r)
    for (variant, objective), rs in sorted(groups.items()):
        mc = [r["modes_covered"] for r in rs]
        hq = [100 * r["high_quality"] for r in rs]
        tv = [r["tvd_modes"] for r in rs]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        print(f"| {toy} | {variant} | {objective} | {len(rs)} | {statistics.mean(mc):.1f} ± {sd(mc):.1f}/{K} | "
              f"{sum(x == K for x in mc)}/{len(rs)} | {statistics.mean(hq):.1f} ± {sd(hq):.1f}% | "
              f"{statistics.mean(tv):.3f} ± {sd(tv):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
