"""Serving benchmarks: ONNX ensemble cost, /sample latency and throughput, schemathesis, load.

    .venv/bin/python benchmarks/bench_serving.py                      # random dcgan28 + mlp ensembles, K = 5
    .venv/bin/python benchmarks/bench_serving.py --ensemble runs/quickstart/ensemble.json
    .venv/bin/python benchmarks/bench_serving.py --quick              # fewer requests (a smoke run)

What it measures (all traffic goes to 127.0.0.1 only, every loop is bounded):

1. Graph cost: onnxruntime time of the exported ensemble graph at N = 1000 ÷ the time of one of
   its generators exported alone (target ≤ 1.3×), plus the naive "run all K, then gather" graph
   for context. Random generators cost the same as trained ones, so no training is needed.
2. Latency/throughput of ``POST /sample`` on a local ``serving serve`` (format npy and png)
   against a bare ``session.run`` on pre-drawn inputs, for n = 1, 64, 1024 at concurrency 1
   and 16 (threads; a keep-alive connection per thread).
3. Schemathesis over the service's OpenAPI spec (``/docs.json``): the gate is 0 server errors
   (``not_a_server_error``); a second run with all checks lists spec-conformance findings.
4. Load: 2,000 requests at concurrency 16 (n = 16, png and npy); the gate is 0 failures.

Writes a Markdown section (``--out``) and the raw figures as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------------- set-up
def make_random_ensemble(folder: Path, arch: str, k: int, seed: int = 0) -> Path:
    """A pool of ``k`` randomly initialised generators and a uniform ensemble.json over it."""
    import torch

    from ensembler.ensemble import Ensemble
    from mustangs.pool.format import write_pool
    from mustangs.pool.networks import ARCH_SHAPES, NetSpec, build_generator

    spec = NetSpec(arch, 64 if arch != "dcgan64" else 100, ARCH_SHAPES[arch])
    torch.manual_seed(seed)
    pool = write_pool(folder / f"pool-{arch}", spec, "random", [(f"{arch}-{i}", build_generator(spec), {})
                                                               for i in range(k)])
    Ensemble.from_pool(pool, np.ones(k) / k, meta={"method": "uniform (benchmark)"}).save(folder / f"{arch}.json")
    return folder / f"{arch}.json"


def export_single(ensemble, out: Path) -> Path:
    """Export the ensemble's first generator alone (same exporter, dynamic batch) as the cost yardstick."""
    import contextlib
    import io
    import warnings

    import torch

    g = ensemble.generators[0].eval()
    z = torch.randn(4, ensemble.latent_dim)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(g, (z,), dynamo=True, external_data=False, input_names=["z"],
                                 dynamic_shapes={"z": {0: torch.export.Dim("N", min=1, max=1 << 24)}})
    prog.save(str(out), external_data=False)
    return out


def export_all_k(ensemble, out: Path) -> Path:
    """The naive ensemble graph (every generator on every row, then a gather), for context only."""
    import contextlib
    import io
    import warnings

    import torch
    from torch import nn

    class AllK(nn.Module):
        def __init__(self, gens):
            super().__init__()
            self.gens = nn.ModuleList(gens)

        def forward(self, z, k):
            ys = torch.stack([g(z) for g in self.gens])            # [K, N, ...]
            idx = k.view(1, -1, *([1] * (ys.dim() - 2))).expand(1, *ys.shape[1:])
            return ys.gather(0, idx).squeeze(0)

    m = AllK([g.eval() for g in ensemble.generators]).eval()
    z, k = torch.randn(4, ensemble.latent_dim), torch.zeros(4, dtype=torch.int64)
    dim = torch.export.Dim("N", min=1, max=1 << 24)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(m, (z, k), dynamo=True, external_data=False, input_names=["z", "k"],
                                 dynamic_shapes={"z": {0: dim}, "k": {0: dim}})
    prog.save(str(out), external_data=False)
    return out


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- 1. graph cost
def graph_cost(ens_json: Path, work: Path, threads: int, n: int, repeats: int) -> dict:
    from ensembler.ensemble import Ensemble
    from serving.export import export_ensemble
    from serving.sampler import OnnxSampler

    ens = Ensemble.load(ens_json)
    name = ens_json.stem
    model = work / f"{name}.onnx"
    single, allk = work / f"{name}-single.onnx", work / f"{name}-allk.onnx"
    if not model.exists():  # exported once per ensemble, timed once per thread count
        export_ensemble(ens_json, model)
        export_single(ens, single)
        export_all_k(ens, allk)
    sampler = OnnxSampler(model, threads=threads)
    z, k = sampler.draw(n, np.random.default_rng(0))
    s_ens, s_one, s_all = session(model, threads), session(single, threads), session(allk, threads)
    run_ens = lambda: s_ens.run(None, {"z": z, "k": k})  # noqa: E731
    run_one = lambda: s_one.run(None, {"z": z})  # noqa: E731
    for _ in range(2):
        run_ens(), run_one()
    # Interleaved, so that load from other jobs on the shared cores hits both alike.
    t_ens, t_one = [], []
    for _ in range(repeats):
        t_ens.append(timed(run_ens, 1, warmup=0))
        t_one.append(timed(run_one, 1, warmup=0))
    t_ens, t_one = statistics.median(t_ens), statistics.median(t_one)
    t_all = timed(lambda: s_all.run(None, {"z": z, "k": k}), max(1, repeats // 4), warmup=1)  # context only
    return {"arch": ens.spec.arch, "K": len(ens.generators), "N": n, "threads": threads,
            "ensemble_ms": t_ens * 1e3, "one_generator_ms": t_one * 1e3, "all_k_gather_ms": t_all * 1e3,
            "ratio": t_ens / t_one, "ratio_all_k": t_all / t_one, "model": str(model)}


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``serving serve MODEL`` on 127.0.0.1 in its own process group; stopped with SIGTERM."""

    def __init__(self, model: Path, work: Path, threads: int | None):
        self.port = free_port()
        env = {**os.environ, "BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        env.pop("MUSTANGS_MODEL", None)
        cmd = [sys.executable, "-c", "import sys; from serving.cli import main; sys.exit(main())", "serve",
               str(model), "--host", "127.0.0.1", "--port", str(self.port)]
        if threads:
            cmd += ["--threads", str(threads)]
        self.log = open(work / "server.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(work / 'server.log').read_text()[-2000:]}")
            try:
                if request(self.port, "GET", "/readyz", None, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not become ready in 120 s")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this script started, nothing else
                self.proc.wait(timeout=10)
        self.log.close()


def request(port: int, method: str, path: str, body: dict | None, timeout: float = 120,
            conn: http.client.HTTPConnection | None = None):
    """One HTTP request to 127.0.0.1:port; returns (status, body bytes)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def run_clients(fn, total: int, concurrency: int) -> dict:
    """Run ``fn(i, conn_state)`` ``total`` times over ``concurrency`` threads; latencies and failures."""
    lat, failures = [], []

    def worker(ids):
        state: dict = {}
        for i in ids:
            t = time.perf_counter()
            try:
                ok = fn(i, state)
            except Exception as exc:  # noqa: BLE001 - a benchmark counts every failure
                ok, state = repr(exc), {}
            lat.append(time.perf_counter() - t)
            if ok is not True:
                failures.append(ok)
        if state.get("conn") is not None:
            state["conn"].close()

    chunks = [list(range(total))[j::concurrency] for j in range(concurrency)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, chunks))
    wall = time.perf_counter() - t0
    lat_ms = np.array(lat) * 1e3
    return {"requests": total, "concurrency": concurrency, "wall_s": wall, "rps": total / wall,
            "p50_ms": float(np.percentile(lat_ms, 50)), "p95_ms": float(np.percentile(lat_ms, 95)),
            "p99_ms": float(np.percentile(lat_ms, 99)), "failures": len(failures),
            "first_failures": [str(f)[:200] for f in failures[:3]]}


def http_sampler(port: int, n: int, fmt: str, seeded: bool = True):
    def fn(i, state):
        if state.get("conn") is None:
            state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = {"n": n, "format": fmt, **({"seed": i} if seeded else {})}
        status, data = request(port, "POST", "/sample", body, conn=state["conn"])
        if status != 200:
            return f"HTTP {status}: {data[:120]!r}"
        ok = data[:8] == b"\x89PNG\r\n\x1a\n" if fmt == "png" else data[:6] == b"\x93NUMPY"
        return True if ok else "bad payload"
    return fn


# ---------------------------------------------------------------------------------------------- 3. schemathesis
def schemathesis(port: int, work: Path, checks: str, max_examples: int) -> dict:
    exe = Path(sys.executable).parent / "schemathesis"
    if not exe.exists():
        exe = shutil.which("schemathesis")
    if not exe:
        return {"skipped": "schemathesis is not installed (.venv/bin/pip install -e '.[bench]')"}
    report = work / f"schemathesis-{checks.replace(',', '_')}.json"
    cmd = [str(exe), "run", f"http://127.0.0.1:{port}/docs.json", "--checks", checks,
           "--max-examples", str(max_examples), "--seed", "0", "--workers", "1", "--request-timeout", "60",
           "--generation-database", "none", "--no-color", "--report", "json", "--report-json-path", str(report)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work)
    wall = time.perf_counter() - t
    if not report.exists():
        return {"error": (proc.stdout + proc.stderr)[-1500:], "exit_code": proc.returncode}
    data = json.loads(report.read_text())
    failures = data.get("failures", [])
    server_errors = sum(f.get("count", 1) for f in failures if f.get("type") == "ServerError"
                        or "server error" in f.get("title", "").lower())
    return {"checks": checks, "max_examples": max_examples, "exit_code": proc.returncode, "wall_s": wall,
            "operations": data.get("operations", {}).get("tested"), "test_cases": data["test_cases"]["generated"],
            "server_errors": server_errors, "errors": len(data.get("errors", [])),
            "findings": [f"{f['code']} {f['title']} ({', '.join(f.get('operations', []))})" for f in failures],
            "version": data.get("schemathesis_version")}


# ---------------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [
        "## Serving (ONNX ensemble + BentoML)",
        "",
        f"Measured {res['date']} with `benchmarks/bench_serving.py{res['args']}` on {env['cpu']} — "
        f"**2 shared CPU cores** (other jobs were running; load average {env['load_before']} before, "
        f"{env['load_after']} after), no GPU, onnxruntime {env['onnxruntime']} (CPUExecutionProvider), "
        f"bentoml {env['bentoml']}, {res['threads']} onnxruntime thread(s). The HTTP client ran on the same "
        "cores as the server. Figures are indicative; re-measure on an idle machine before quoting them.",
        "",
        "### ONNX ensemble graph cost (N = 1000, onnxruntime, median of interleaved runs)",
        "",
        "The ratio is the ensemble graph's time ÷ one of its generators exported alone, on the same "
        "inputs. With one onnxruntime thread it measures the work; with two, other jobs on the shared "
        "cores make it noisy (a lone 1000-row GEMM also parallelises better than five 200-row ones).",
        "",
        "| arch | K | ORT threads | one generator | ensemble graph | ratio (target ≤ 1.3×) | naive all-K + gather |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in res["graph_cost"]:
        lines.append(f"| {c['arch']} | {c['K']} | {c['threads']} | {c['one_generator_ms']:.1f} ms | {c['ensemble_ms']:.1f} ms | "
                     f"**{c['ratio']:.2f}×** | {c['all_k_gather_ms']:.1f} ms ({c['ratio_all_k']:.2f}×) |")
    lines += ["", f"### `POST /sample` vs bare onnxruntime ({res['server_arch']}, K = {res['server_K']})", "",
              "Throughput in requests/s (samples/s); latency p50 / p95. \"bare\" = `session.run` on pre-drawn "
              "inputs in-process; \"npy\"/\"png\" = HTTP round trip including host-side draws and encoding.", "",
              "| n | concurrency | bare ORT | HTTP npy | HTTP png |", "|---|---|---|---|---|"]
    for row in res["latency"]:
        cells = []
        for key in ("bare", "npy", "png"):
            r = row[key]
            cells.append(f"{r['rps']:.1f} req/s ({r['rps'] * row['n']:.0f} samples/s); "
                         f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} ms" + (f"; {r['failures']} failed" if r['failures'] else ""))
        lines.append(f"| {row['n']} | {row['concurrency']} | " + " | ".join(cells) + " |")
    st, st_all, load = res["schemathesis"], res.get("schemathesis_all", {}), res["load"]
    lines += ["", "### Robustness", ""]
    if "server_errors" in st:
        lines.append(f"- Schemathesis {st['version']} over `/docs.json` ({st['operations']} operations, "
                     f"{st['test_cases']} generated cases, positive and negative, `--checks not_a_server_error`): "
                     f"**{st['server_errors']} server errors**.")
    else:
        lines.append(f"- Schemathesis: {st}")
    if st_all.get("findings") is not None:
        found = "; ".join(st_all["findings"]) or "none"
        lines.append(f"- Schemathesis with all checks ({st_all['test_cases']} cases): {st_all['server_errors']} "
                     f"server errors; spec-conformance findings: {found}. (BentoML documents one response type per API, "
                     "so /sample documents image/png and its .npy answers are \"undocumented\"; BentoML's own 400 "
                     "schema says `detail` is a string while it sends pydantic's list of errors.)")
    lines.append(f"- Load: {load['requests']} requests at concurrency {load['concurrency']} (n = 16, png/npy "
                 f"alternating, distinct seeds): **{load['failures']} failed**, {load['rps']:.1f} req/s, "
                 f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, {load['wall_s']:.1f} s in all.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the serving benchmarks and write the results section."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ensemble", default=None, help="an ensemble.json to serve (default: random K-generator ones)")
    p.add_argument("--archs", default="dcgan28,mlp", help="random ensembles' archs; the first one is served")
    p.add_argument("--k", type=int, default=5, help="generators per random ensemble")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (bare and server)")
    p.add_argument("--quick", action="store_true", help="fewer requests and examples (smoke run)")
    p.add_argument("--load-requests", type=int, default=2000, help="requests in the load test")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS-serving.md"), help="Markdown section")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "serving_results.json"), help="raw figures")
    args = p.parse_args(argv)

    import bentoml
    import onnxruntime as ort

    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    work = Path(tempfile.mkdtemp(prefix="mustangs-bench-serving-"))
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads,
                 "args": "".join(" " + a for a in (sys.argv[1:] if argv is None else argv)),
                 "environment": {"cpu": f"{platform.machine()} ({os.cpu_count()} logical CPUs)",
                                 "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                                 "onnxruntime": ort.__version__, "bentoml": bentoml.__version__}}
    try:
        import torch

        torch.set_num_threads(args.threads)
        # 1. Graph cost --------------------------------------------------------------------------
        archs = [a for a in args.archs.split(",") if a]
        sources = [Path(args.ensemble)] if args.ensemble else [make_random_ensemble(work, a, args.k) for a in archs]
        res["graph_cost"] = []
        for src in sources:
            # One thread first: the work ratio, least disturbed by other jobs on shared cores.
            for threads in sorted({1, args.threads}):
                c = graph_cost(src, work, threads, 1000, 5 if args.quick else 20)
                res["graph_cost"].append(c)
                print(f"[graph] {c['arch']} K={c['K']} threads={threads}: ensemble {c['ensemble_ms']:.1f} ms / one {c['one_generator_ms']:.1f} ms"
                      f" = {c['ratio']:.2f}x (all-K {c['ratio_all_k']:.2f}x)", flush=True)
        model = Path(res["graph_cost"][0]["model"])  # the first arch's ensemble is served
        res["server_arch"], res["server_K"] = res["graph_cost"][0]["arch"], res["graph_cost"][0]["K"]

        # 2. Latency and throughput --------------------------------------------------------------
        from serving.sampler import OnnxSampler

        sampler = OnnxSampler(model, threads=args.threads)
        counts = {1: 40, 64: 20, 1024: 4} if args.quick else {1: 200, 64: 100, 1024: 16}
        server = Server(model, work, args.threads)
        try:
            res["latency"] = []
            for n, total in counts.items():
                z, k = sampler.draw(n, np.random.default_rng(0))
                for conc in (1, 16):
                    tot = max(total, conc)
                    row = {"n": n, "concurrency": conc,
                           "bare": run_clients(lambda i, s: sampler.run(z, k) is not None, tot, conc),
                           "npy": run_clients(http_sampler(server.port, n, "npy"), tot, conc),
                           "png": run_clients(http_sampler(server.port, n, "png"), tot, conc)}
                    res["latency"].append(row)
                    print(f"[latency] n={n} c={conc}: bare {row['bare']['rps']:.1f} req/s, npy {row['npy']['rps']:.1f}, "
                          f"png {row['png']['rps']:.1f} (failures {row['npy']['failures'] + row['png']['failures']})",
                          flush=True)

            # 3. Schemathesis ---------------------------------------------------------------------
            res["schemathesis"] = schemathesis(server.port, work, "not_a_server_error", 30 if args.quick else 150)
            print(f"[schemathesis] {res['schemathesis']}", flush=True)
            res["schemathesis_all"] = schemathesis(server.port, work, "all", 20 if args.quick else 50)
            print(f"[schemathesis all] {res['schemathesis_all']}", flush=True)

            # 4. Load ------------------------------------------------------------------------------
            load_n = 200 if args.quick else args.load_requests
            png, npy = http_sampler(server.port, 16, "png"), http_sampler(server.port, 16, "npy")
            res["load"] = run_clients(lambda i, s: (png if i % 2 else npy)(i, s), load_n, 16)
            print(f"[load] {res['load']}", flush=True)
            # The server still answers correctly after all that.
            status, body = request(server.port, "POST", "/sample", {"n": 4, "seed": 1, "format": "npy"})
            res["after_load_ok"] = status == 200
        finally:
            server.stop()
        res["environment"]["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    section = markdown(res)
    Path(args.out).write_text(section)
    for c in res["graph_cost"]:
        c.pop("model", None)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(section)
    ok = (res["load"]["failures"] == 0 and res["schemathesis"].get("server_errors", 1) == 0
          and res.get("after_load_ok", False))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
