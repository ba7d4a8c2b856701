"""Re-purposing benchmark: target solve time, and served samples/s with and without a target.

    python benchmarks/bench_repurpose.py                                   # solve times only (synthetic)
    python benchmarks/bench_repurpose.py --model runs/out/qs-pool.onnx     # + HTTP throughput + schemathesis

1. Solve time (one core: BLAS limited to 1 thread, CPU seconds by ``time.process_time``) of
   :func:`ensembler.mixture_math.solve_target` through the serving :class:`Repurposer`, for
   K = 4, 25, 100 generators with synthetic statistics (C = 10 classes, d = 128 features, random
   histograms and PSD moments), over 30 random targets (uniform, one class, two classes, Dirichlet):
   median / max of a fresh solve, the cached repeat, and a solve with ``fid_weight``; plus the one-off
   build of the FID matrices (model load time). The gate is a fresh TVD solve ≤ 50 ms at K = 100.
   Given ``--model``, also the model's own statistics.
2. With ``--model``: ``serving serve`` on 127.0.0.1, ``--requests`` sequential ``POST /sample``
   (format npy, ``--n`` samples, distinct seeds) with no target, with one repeated target (cached)
   and with a new target each request (solved each time): samples/s and p50 latency.
3. With ``--model``: schemathesis over the new schema (``not_a_server_error``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")   # "one core": set before numpy loads its BLAS

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def synthetic_stats(K: int, C: int = 10, d: int = 128, seed: int = 0):
    """Random but well-formed statistics: Dirichlet histograms, Wishart-like second moments."""
    from serving.repurpose import RepurposeStats

    rng = np.random.default_rng(seed)
    hist = rng.dirichlet(np.full(C, 0.3), size=K)
    mu = rng.normal(size=(K, d))
    base = rng.normal(size=(d, d)) / np.sqrt(d)
    second = np.empty((K, d, d))
    for k in range(K):
        a = base + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
        second[k] = a @ a.T + np.outer(mu[k], mu[k])
    real = rng.normal(size=(4 * d, d)) @ base.T
    info = {"classifier": {"name": "synthetic"}, "class_names": [f"c{i}" for i in range(C)],
            "samples_per_generator": 10_000, "seed": 0}
    return RepurposeStats(hist, mu, second, np.full(K, 10_000), real.mean(0), np.cov(real.T),
                          np.full(C, 1 / C), info)


def targets(C: int, count: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    out: list = ["uniform"]
    for i in range(count - 1):
        kind = i % 3
        if kind == 0:
            out.append({str(i % C): 1.0})
        elif kind == 1:
            out.append({str(i % C): 0.5, str((i + 3) % C): 0.5})
        else:
            out.append([float(x) for x in rng.dirichlet(np.full(C, 0.5))])
    return out


def time_solves(stats, label: str, count: int = 30, fid_weight: float = 0.01) -> dict:
    """CPU-seconds of fresh, cached and fid-weighted solves over ``count`` targets."""
    from serving.repurpose import Repurposer

    r = Repurposer(stats, np.full(stats.K, 1 / stats.K))
    t = time.process_time()
    r.fid_terms                                             # one-off, at model load
    build = time.process_time() - t
    fresh, cached, fid, tvds, sizes = [], [], [], [], []
    for spec in targets(len(stats.class_names), count):
        t = time.process_time()
        plan = r.plan(target=spec)
        fresh.append(time.process_time() - t)
        t = time.process_time()
        again = r.plan(target=spec)
        cached.append(time.process_time() - t)
        assert again.cached and np.array_equal(again.weights, plan.weights)
        tvds.append(plan.estimated_tvd)
        sizes.append(int(np.count_nonzero(plan.weights)))
    for spec in targets(len(stats.class_names), max(3, count // 3), seed=2):
        t = time.process_time()
        r.plan(target=spec, fid_weight=fid_weight)
        fid.append(time.process_time() - t)
    ms = lambda xs: (round(1e3 * statistics.median(xs), 3), round(1e3 * max(xs), 3))  # noqa: E731
    return {"label": label, "K": stats.K, "d": int(stats.mu.shape[1]), "targets": count,
            "fid_terms_build_ms": round(1e3 * build, 1), "fresh_ms": ms(fresh), "cached_ms": ms(cached),
            "fid_weighted_ms": ms(fid), "fid_weight": fid_weight, "median_tvd": round(statistics.median(tvds), 4),
            "median_size": int(statistics.median(sizes))}


# ---------------------------------------------------------------------------------------------- HTTP
def http_throughput(model: Path, n: int, requests: int, work: Path) -> dict:
    import http.client

    from bench_serving import Server
    from serving.sampler import OnnxSampler

    names = OnnxSampler(model, threads=1).repurpose.class_names
    server = Server(model, work, threads=1)
    out = {}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)

        def run(make_body) -> dict:
            lat = []
            t0 = time.perf_counter()
            for i in range(requests):
                body = json.dumps(make_body(i)).encode()
                t = time.perf_counter()
                conn.request("POST", "/sample", body, {"content-type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                lat.append(time.perf_counter() - t)
                if resp.status != 200:
                    raise SystemExit(f"HTTP {resp.status}: {data[:300]!r}")
            wall = time.perf_counter() - t0
            return {"samples_per_s": round(n * requests / wall, 1), "p50_ms": round(1e3 * statistics.median(lat), 1)}

        run(lambda i: {"n": n, "seed": i, "format": "npy"})                     # warm-up
        rng = np.random.default_rng(0)
        fresh_targets = [[float(x) for x in rng.dirichlet(np.full(len(names), 0.5))] for _ in range(requests)]
        out["no target"] = run(lambda i: {"n": n, "seed": i, "format": "npy"})
        out["same target (cached)"] = run(lambda i: {"n": n, "seed": i, "format": "npy",
                                                     "target": {names[0]: 0.5, names[1]: 0.5}})
        out["new target each request"] = run(lambda i: {"n": n, "seed": i, "format": "npy",
                                                        "target": fresh_targets[i]})
        out["no target (again)"] = run(lambda i: {"n": n, "seed": i + requests, "format": "npy"})
        conn.close()
        if os.environ.get("BENCH_SCHEMATHESIS", "1") == "1":
            from bench_serving import schemathesis

            out["schemathesis"] = schemathesis(server.port, work, "not_a_server_error", 150)
    finally:
        server.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="an exported pool model (repeatable)")
    ap.add_argument("--n", type=int, default=256, help="samples per HTTP request")
    ap.add_argument("--requests", type=int, default=40, help="requests per HTTP series")
    ap.add_argument("--targets", type=int, default=30, help="targets per solve-time series")
    ap.add_argument("--json", default=None, help="write the raw figures here")
    args = ap.parse_args()
    res: dict = {"load_before": os.getloadavg(), "solve": [], "http": {}}
    print(f"load average before: {res['load_before']}")
    print(f"{'statistics':<28} {'K':>4} {'fresh tvd solve (median/max)':>30} {'cached':>16} "
          f"{'tvd+0.01*fid':>20} {'FID build':>10}")
    rows = [(f"synthetic K={K}", synthetic_stats(K)) for K in (4, 25, 100)]
    from serving.sampler import OnnxSampler

    for m in args.model:
        s = OnnxSampler(m, threads=1)
        if s.repurpose is not None:
            rows.append((Path(m).name, s.repurpose.stats))
    for label, stats in rows:
        r = time_solves(stats, label, args.targets)
        res["solve"].append(r)
        print(f"{label:<28} {r['K']:>4} {r['fresh_ms'][0]:>16.2f} / {r['fresh_ms'][1]:>6.2f} ms "
              f"{r['cached_ms'][0]:>8.3f} ms     {r['fid_weighted_ms'][0]:>8.1f} / {r['fid_weighted_ms'][1]:>6.1f} ms "
              f"{r['fid_terms_build_ms']:>7.0f} ms")
    gate = next(r for r in res["solve"] if r["label"] == "synthetic K=100")["fresh_ms"][1] <= 50
    print(f"gate: fresh TVD solve at K = 100 <= 50 ms on one core (max over targets): {'PASS' if gate else 'FAIL'}")
    for m in args.model:
        with tempfile.TemporaryDirectory() as work:
            out = http_throughput(Path(m), args.n, args.requests, Path(work))
        res["http"][m] = out
        print(f"\nPOST /sample on {m} (n = {args.n}, npy, {args.requests} sequential requests per series):")
        for k, v in out.items():
            if k != "schemathesis":
                print(f"  {k:<26} {v['samples_per_s']:>9.1f} samples/s   p50 {v['p50_ms']:.1f} ms")
        if "schemathesis" in out:
            print(f"  schemathesis: {out['schemathesis']}")
    res["load_after"] = os.getloadavg()
    print(f"load average after: {res['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0 if gate else 1


if __name__ == "__main__":
    sys.exit(main())
