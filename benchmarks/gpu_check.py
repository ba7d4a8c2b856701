"""One-command GPU check (run by benchmarks/gpu_check.sh): trainer generation times per grid and
engine, peak GPU memory, and the exported ONNX ensemble on onnxruntime's CUDA provider.

    python benchmarks/gpu_check.py --device cuda --out gpu_check.json        # the real check (≤ 8 min)
    python benchmarks/gpu_check.py --device cpu --small --out /tmp/check.json  # the same code, tiny, on CPU

Writes one JSON: ``machine``, ``generation`` (one row per grid × arch × engine: wall seconds
per generation, seconds per batch, peak GPU memory), ``onnx`` (providers actually active,
max |torch − onnxruntime| on the same latents and components, samples per second) and the
total wall time. Each part is independent: a failing part records its error line and the
rest still runs, so one run shows everything that works.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_trainer import load_line, machine, time_generation  # noqa: E402  (sets the OpenMP policy first)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mustangs.data.datasets import load_dataset  # noqa: E402

#: (grid side, arch, engines) timed by the check.
FULL = [(1, "mlp", ("bmm", "vmap", "loop")), (3, "mlp", ("bmm", "vmap", "loop")), (5, "mlp", ("bmm", "vmap", "loop")),
        (3, "dcgan28", ("vmap", "loop"))]
SMALL = [(1, "mlp", ("bmm", "vmap", "loop")), (2, "mlp", ("bmm", "loop")), (2, "dcgan28", ("vmap", "loop"))]


def generation_rows(device: str, grids, batches: int, batch_size: int, repeats: int, dataset, log) -> list[dict]:
    """Time every (grid, arch, engine); a failure becomes a row with its error."""
    rows = []
    for size, arch, engines in grids:
        for engine in engines:
            try:
                row = time_generation(size, engine, batches, device, batch_size, repeats, dataset, arch=arch)
            except Exception as exc:  # noqa: BLE001 - recorded, the check goes on
                row = {"grid": f"{size}x{size}", "arch": arch, "engine": engine, "error": _line(exc)}
            log(json.dumps(row))
            rows.append(row)
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def onnx_check(device: str, n: int, work: Path, log) -> dict:
    """Export a 3-generator MLP ensemble to ONNX and run it on onnxruntime with the CUDA
    provider (``device=cuda``) or the CPU one: parity with torch and samples per second."""
    from ensembler.ensemble import Ensemble
    from mustangs.pool.format import read_pool, write_pool
    from mustangs.pool.networks import NetSpec, build_generator
    from serving.export import export_ensemble
    from serving.sampler import CPU, CUDA, OnnxSampler

    spec = NetSpec("mlp", 64, (1, 28, 28))
    gens = []
    for i in range(3):
        torch.manual_seed(i)
        gens.append((f"g{i}", build_generator(spec), {"origin": {"cell": [0, i]}, "scores": {}}))
    pool = read_pool(write_pool(work / "pool", spec, "fashion-mnist", gens).root)
    ens = Ensemble.from_pool(pool, [0.5, 0.3, 0.2])
    ens.save(work / "ensemble.json")
    export_ensemble(work / "ensemble.json", work / "ensemble.onnx", check_parity=True)
    providers = [CUDA, CPU] if device == "cuda" else [CPU]
    sampler = OnnxSampler(work / "ensemble.onnx", providers=providers)
    gen = torch.Generator().manual_seed(0)
    z, k = ens.draw(min(n, 2000), gen)
    want = ens.generate(z, k).numpy()
    got = sampler.run(z.numpy(), k.numpy())
    out = {"providers_asked": providers, "providers_active": sampler.active_providers,
           "max_abs_diff_vs_torch": float(np.abs(got - want).max()), "n": n}
    sampler.sample(min(n, 256), seed=1)   # warm-up (CUDA context, kernels)
    times = []
    for r in range(3):
        t0 = time.perf_counter()
        sampler.sample(n, seed=r)
        times.append(time.perf_counter() - t0)
    out["samples_per_second"] = n / min(times)
    log(json.dumps(out))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where to run the check")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--small", action="store_true", help="tiny sizes (a CPU smoke test of the same code)")
    ap.add_argument("--batches", type=int, default=None, help="batches per generation (default 100; small: 2)")
    ap.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default 100; small: 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed generations per row (default 2; small: 1)")
    ap.add_argument("--onnx-samples", type=int, default=None, help="samples per ONNX timing (default 20000; small: 64)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device visible to torch; run with --device cpu for the CPU smoke test", file=sys.stderr)
        return 2
    small = args.small
    batches = args.batches or (2 if small else 100)
    batch_size = args.batch_size or (8 if small else 100)
    repeats = args.repeats or (1 if small else 2)
    n_onnx = args.onnx_samples or (64 if small else 20000)
    t0 = time.perf_counter()
    result = {"machine": machine(), "load_before": load_line(), "device": args.device, "batches": batches,
              "batch_size": batch_size, "repeats": repeats}
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    dataset = load_dataset("fashion-mnist", "train")
    result["generation"] = generation_rows(args.device, SMALL if small else FULL, batches, batch_size, repeats,
                                           dataset, log)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result["onnx"] = onnx_check(args.device, n_onnx, Path(tmp), log)
        except Exception as exc:  # noqa: BLE001 - recorded, the JSON is still written
            traceback.print_exc()
            result["onnx"] = {"error": _line(exc)}
    result["total_seconds"] = time.perf_counter() - t0
    result["load_after"] = load_line()
    from mustangs.io.atomic import write_text_atomic

    write_text_atomic(Path(args.out), json.dumps(result, indent=1))
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s)")
    failed = [r for r in result["generation"] if "error" in r] + ([result["onnx"]] if "error" in result["onnx"] else [])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
