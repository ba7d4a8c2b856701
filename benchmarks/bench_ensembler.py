"""Benchmark: ensembler objective evaluations per second, statistics-based vs sampling-based.

    .venv/bin/python benchmarks/bench_ensembler.py                 # 25 random MLP generators, 10k samples each
    .venv/bin/python benchmarks/bench_ensembler.py --samples 2000  # quicker statistics
    .venv/bin/python benchmarks/bench_ensembler.py --pool runs/x/pool  # a trained pool instead

Measures, on a K-generator pool (25 random MLP generators by default — the evaluation speed
does not depend on what the generators learned):

1. statistics-based evaluations/s for ``tvd``, ``fid``, ``is`` — one weight vector at a time
   and as CMA-ES populations (one batched call per population); ``fid`` also through the
   shared pytorch-fid path (mix the statistics, scipy ``sqrtm``) for comparison;
2. sampling-based evaluations/s for the same weights (draw ``--verify-samples`` fresh samples of
   the mixture, run the classifier, compute the metric) and the speed-up;
3. the gap between estimated and verified metrics against the sampling noise (bootstrap
   standard deviation of the verified metric) for several weight vectors.

Uses the shipped evaluation classifier when present (else an untrained CNN of the same size,
which costs the same). Prints a Markdown report; ``--json`` also writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rate(fn, min_seconds: float = 1.0, per_call: int = 1) -> float:
    """Calls of ``fn`` per second (× ``per_call`` evaluations per call), timed for ≥ ``min_seconds``."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n * per_call / elapsed


def make_evaluator(device):
    from mustangs.judge.evaluation import module_hash, real_stats

    from ensembler.stats import Evaluator

    try:
        from mustangs.judge.classifier_store import load_classifier

        clf = load_classifier("fashion-mnist", device)
        which = f"shipped fashion-mnist CNN (sha256 {clf.sha256[:12]}…, feature_dim {clf.feature_dim})"
    except Exception as exc:  # no shipped weights: same architecture, random weights, same cost
        from mustangs.judge.classifier import EvalClassifier

        torch.manual_seed(0)
        clf = EvalClassifier().to(device).eval()
        which = f"untrained EvalClassifier (no shipped weights: {exc})"
    real = real_stats("fashion-mnist", "test", clf)
    return Evaluator(clf, module_hash(clf), real, "fashion-mnist", torch.device(device)), which


def random_pool(root: Path, K: int):
    from mustangs.pool.format import write_pool
    from mustangs.pool.networks import MLPGenerator, NetSpec

    gens = []
    for k in range(K):
        torch.manual_seed(1000 + k)
        g = MLPGenerator(64, (1, 28, 28))
        with torch.no_grad():  # vary the output statistics a little between generators
            g.net[4].bias.add_(torch.randn(784) * 0.5)
        gens.append((f"g{k:02d}", g.eval(), {}))
    return write_pool(root, NetSpec("mlp", 64, (1, 28, 28)), "fashion-mnist", gens).root


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pool", default=None, help="pool folder (None: 25 random MLP generators)")
    p.add_argument("--generators", type=int, default=25, help="generators in the random pool")
    p.add_argument("--samples", type=int, default=10_000, help="samples per generator for statistics")
    p.add_argument("--verify-samples", type=int, default=10_000, help="samples per sampling-based evaluation")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the goal is stated for 2 CPU cores)")
    p.add_argument("--seconds", type=float, default=2.0, help="timing window per figure")
    p.add_argument("--cache-dir", default=None, help="statistics cache (None: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the raw figures here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from ensembler.methods import decode
    from ensembler.objectives import MixtureObjective, parse_objective, single_threaded_blas
    from ensembler.optimize import sources_of, verify
    from ensembler.pools import open_pools
    from ensembler.stats import StatsCache, pool_stats
    from mustangs.judge.metrics import FeatureStats, score

    device = "cuda" if torch.cuda.is_available() else "cpu"
    evaluator, which = make_evaluator(device)
    tmp = tempfile.TemporaryDirectory()
    pool_path = args.pool or random_pool(Path(tmp.name) / "pool", args.generators)
    pools = open_pools([pool_path])
    K = len(pools)
    cache = StatsCache(args.cache_dir or Path(tmp.name) / "cache")

    t = time.perf_counter()
    stats = pool_stats(sources_of(pools), evaluator, args.samples, 0, cache=cache, progress=None)
    t_stats = time.perf_counter() - t

    rng = np.random.default_rng(0)
    w1 = rng.dirichlet(np.ones(K))
    pop = decode(rng.standard_normal((4 + int(3 * np.log(K)), K)) / K + 1 / K, "clip")
    res: dict = {"K": K, "feature_dim": evaluator.feature_dim, "samples": args.samples,
                 "verify_samples": args.verify_samples, "threads": args.threads, "device": device,
                 "classifier": which, "stats_seconds": round(t_stats, 2), "popsize": len(pop)}
    fast = {}
    blas1 = single_threaded_blas()  # as ensembler.optimize.search does
    blas1.__enter__()
    for name in ("tvd", "fid", "is"):
        obj = MixtureObjective(stats, evaluator.real, parse_objective(name))
        fast[name] = {"single": rate(lambda: obj(w1), args.seconds),
                      "population": rate(lambda: obj.batch(pop), args.seconds, per_call=len(pop))}
    fast["fid"]["pytorch_fid_on_mixed_stats"] = rate(
        lambda: score(FeatureStats.mix(stats, w1), evaluator.real, metrics=("fid",)), args.seconds)
    blas1.__exit__(None, None, None)
    res["statistics_based_per_s"] = fast

    # Sampling-based: the same weights, fresh samples through generators and classifier.
    ens = pools.ensemble(w1)
    t = time.perf_counter()
    reps = 2
    for r in range(reps):
        verify(ens, evaluator, args.verify_samples, r, None, progress=False, noise=False)
    sampling = reps / (time.perf_counter() - t)
    res["sampling_based_per_s"] = sampling
    res["speedup_single"] = {k: v["single"] / sampling for k, v in fast.items()}

    # Estimated vs verified, against the sampling noise.
    gaps = []
    weights = {"uniform": np.full(K, 1 / K), "dirichlet(1)": w1, "sparse(3)": decode(w1, "clip", 3),
               "single best-tvd": np.eye(K)[int(np.argmin([MixtureObjective(stats, evaluator.real,
                                                                            parse_objective("tvd"))(np.eye(K)[k])
                                                           for k in range(K)]))]}
    obj = MixtureObjective(stats, evaluator.real, parse_objective("tvd+fid+is"))
    for label, w in weights.items():
        est = obj.report(w)
        ver, std = verify(pools.ensemble(w), evaluator, args.verify_samples, 7, None, progress=False)
        for m in ver:  # names carry the sample counts (e.g. fid_cls10k vs fid_cls5k): match on the metric
            e = next(v for k, v in est.items() if k.split("_")[0] == m.split("_")[0])
            gaps.append({"weights": label, "metric": m, "estimated": e, "verified": ver[m], "std": std[m],
                         "gap_in_std": abs(e - ver[m]) / max(std[m], 1e-12)})
    res["gaps"] = gaps

    # Report.
    f = fast
    print(f"## Ensembler objective evaluations — {K} generators, d={evaluator.feature_dim}, "
          f"{args.threads} threads, {device}\n")
    print(f"Classifier: {which}. Statistics: {args.samples} samples/generator, {t_stats:.1f} s for {K} generators "
          "(0 s when cached).\n")
    print("| objective | stats-based, one w (/s) | stats-based, CMA population (/s) | sampling-based (/s) | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name in ("tvd", "fid", "is"):
        print(f"| {name} | {f[name]['single']:,.0f} | {f[name]['population']:,.0f} | {sampling:.3f} | "
              f"{f[name]['single'] / sampling:,.0f}× |")
    print(f"| fid via mix + pytorch-fid sqrtm | {f['fid']['pytorch_fid_on_mixed_stats']:,.2f} | | | |\n")
    print(f"Sampling-based = {args.verify_samples} fresh samples through the generators and the classifier.\n")
    print(f"Estimated from {args.samples} samples/generator; verified from {args.verify_samples} fresh samples.\n")
    print("| weights | metric | estimated | verified | bootstrap std | gap / std |")
    print("|---|---|---:|---:|---:|---:|")
    for g in gaps:
        print(f"| {g['weights']} | {g['metric']} | {g['estimated']:.4f} | {g['verified']:.4f} | {g['std']:.4f} | "
              f"{g['gap_in_std']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
