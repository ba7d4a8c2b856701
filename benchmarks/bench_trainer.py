"""Trainer speed: generation time per engine, Adam kernel and grid size, the matmul floor, busy machines.

    # 2x2 MLP grid, batch 100, one full epoch of Fashion-MNIST per generation: bmm vs vmap vs loop engines
    python benchmarks/bench_trainer.py --batches 50
    # Adam: PyTorch's fused kernel vs the same formula op by op (2x2)
    python benchmarks/bench_trainer.py --adam --batches 50
    # cost growth at equal work per cell: 1x1 .. 5x5 grids, CPU-s per generation at 1 thread, slope fit
    python benchmarks/bench_trainer.py --grid-sizes 1 2 3 4 5 --batches 20 --threads 1
    # GPU: 1x1 vs 3x3 vs 5x5 generation time
    python benchmarks/bench_trainer.py --grid-sizes 1 3 5 --device cuda
    # the matmul floor: CPU-s of one generation of the reference work (2x2 MLP, batch 400,
    # 150 batches, BCE) next to CPU-s of its bare GEMMs, 1 thread, alternating, 3 rounds
    python benchmarks/bench_trainer.py --floor --repeats 3
    # the convolution floor (issue 20 item 3): a 3x3 dcgan28 generation (batching=grouped, batch 100)
    # next to its bare grouped convolutions + Adam, and next to 9x one 1x1 cell; 1 thread, 3 rounds
    python benchmarks/bench_trainer.py --floor --arch dcgan28 --batches 10 --repeats 3
    # busy machine: a quickstart generation idle, then with 3 busy-loop processes, then idle again
    python benchmarks/bench_trainer.py --busy --repeats 3
    # a finished run as Markdown: per-cell fid_cls over generations, final mixture vs best cell
    python benchmarks/bench_trainer.py --table runs/fashion-mnist-3x3-mustangs

Times cover the generation step without scoring (exchange, fitness, selection, training,
mutation, replacement); data loading and the first (warm-up) generation are excluded.
CPU-seconds (``time.process_time``) are what to compare on a shared machine; wall seconds
only mean something with the load printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from mustangs.threads import auto_threads, prefer_passive_openmp

prefer_passive_openmp()   # as the console scripts do, before torch loads OpenMP

import torch  # noqa: E402

from mustangs.data.datasets import load_dataset  # noqa: E402
from trainer.coevolution import Coevolution  # noqa: E402
from trainer.config import load_train_config  # noqa: E402


def machine() -> str:
    """One line describing the machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), {gpu}")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_generation(size: int, engine: str | None, batches: int | None, device: str, batch_size: int,
                    repeats: int, dataset, adam: str = "fused", arch: str = "mlp", overrides=()) -> dict:
    """Seconds per generation (wall and CPU, mean of ``repeats``) for a ``size``×``size`` grid of
    ``arch`` networks with ``engine`` (None: what ``batching: auto`` picks) and Adam kernel ``adam``;
    on CUDA also the peak GPU memory."""
    over = [f"grid.height={size}", f"grid.width={size}", f"data.batch_size={batch_size}", "data.sampling_ratio=1.0",
            f"device={device}", f"adam={adam}", f"network.arch={arch}", *overrides]
    if size == 1:
        over.append("coevolution.tournament_size=1")   # a 1x1 sub-population has one member
    if batches:
        over.append(f"coevolution.batches_per_generation={batches}")
    cfg = load_train_config(None, over)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    co = Coevolution(cfg, dataset, dev, engine=engine)
    block = co.init_block()
    full = co.batches
    co.batches = min(5, full)          # warm-up generation
    co.step(block, score=False)
    co.batches = full
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    walls, cpus = [], []
    for _ in range(repeats):
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        co.step(block, score=False)
        _sync(dev)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    sec, cpu = sum(walls) / len(walls), sum(cpus) / len(cpus)
    epoch_batches = len(dataset) // batch_size
    row = {"grid": f"{size}x{size}", "cells": size * size, "arch": arch, "engine": co.engine, "adam": adam,
           "device": str(dev), "threads": torch.get_num_threads(), "batches": full, "batch_size": batch_size,
           "seconds_per_generation": sec, "cpu_seconds_per_generation": cpu, "seconds_per_batch": sec / full,
           "seconds_per_epoch_generation": sec / full * epoch_batches}
    if dev.type == "cuda":
        row["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return row


def growth_fit(rows: list[dict], key: str) -> dict:
    """Least-squares line ``t = a + b·cells`` through the rows, and each row's excess over it."""
    xs = [r["cells"] for r in rows]
    ys = [r[key] for r in rows]
    if len(rows) < 2:
        return {"intercept": ys[0] if ys else 0.0, "per_cell": 0.0, "excess": [0.0] * len(rows)}
    b, a = statistics.linear_regression(xs, ys)
    return {"intercept": a, "per_cell": b, "excess": [y - (a + b * x) for x, y in zip(xs, ys)]}


#: The reference work of issue 10: the Lipizzaner quickstart's generation (2x2 MLP grid, batch 400,
#: 150 mini-batches = one epoch of the 60k set per cell, BCE, selected G vs selected D).
REFERENCE_WORK = ["grid.height=2", "grid.width=2", "data.batch_size=400", "data.sampling_ratio=1.0",
                  "coevolution.batches_per_generation=150", "coevolution.loss=bce",
                  "coevolution.adversary=selected", "device=cpu"]


def load_line() -> str:
    """The 1/5/15-minute load averages (other processes on the machine)."""
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


def floor_compare(dataset, repeats: int, batches: int | None, overrides=(), log=print) -> dict:
    """CPU-seconds of one generation of the reference work next to CPU-seconds of its bare
    GEMMs (benchmarks/floor.py), alternating ``repeats`` times in this process at the current
    thread count; the ratio of the medians is the step's distance from the matmul floor."""
    from floor import Floor, generation_gemms, linear_dims

    over = REFERENCE_WORK + (["coevolution.batches_per_generation=%d" % batches] if batches else []) + list(overrides)
    cfg = load_train_config(None, over)
    co = Coevolution(cfg, dataset, torch.device("cpu"))
    block = co.init_block()
    full = co.batches
    skip = cfg.coevolution.d_skip_every
    d_steps = sum(1 for b in range(full) if skip is None or (b + 1) % skip != 0)
    floor = Floor(generation_gemms(linear_dims(co.Gnet._train), linear_dims(co.Dnet._train), len(block), co.S,
                                   cfg.data.batch_size, full, d_steps, cfg.coevolution.selection))
    co.batches = min(5, full)   # warm-up (allocator, first-call costs) for both
    co.step(block, score=False)
    co.batches = full
    floor.run()
    gen, flo = [], []
    for r in range(repeats):
        t0 = time.process_time()
        co.step(block, score=False)
        gen.append(time.process_time() - t0)
        flo.append(floor.run())
        log(f"round {r + 1}/{repeats}: generation {gen[-1]:.2f} CPU-s, floor {flo[-1]:.2f} CPU-s, "
            f"ratio {gen[-1] / flo[-1]:.2f} ({load_line()})")
    g, f = statistics.median(gen), statistics.median(flo)
    return {"engine": co.engine, "adam": cfg.adam, "threads": torch.get_num_threads(), "batches": full,
            "d_steps": d_steps, "tflop": floor.flop / 1e12, "generation_cpu_s": g, "floor_cpu_s": f,
            "ratio": g / f, "generation_gflops": floor.flop / g / 1e9, "floor_gflops": floor.flop / f / 1e9,
            "rounds": [[a, b] for a, b in zip(gen, flo)]}


def conv_floor_compare(dataset, repeats: int, batches: int | None, size: int = 3, batch_size: int = 100,
                       arch: str = "dcgan28", overrides=(), log=print) -> dict:
    """CPU-seconds of one generation of a ``size``×``size`` DCGAN grid (``batching`` from
    ``overrides``, else grouped) next to its bare grouped convolutions, GEMMs and Adam calls
    (benchmarks/conv_floor.py), next to ``size²`` times one 1x1 cell's generation (a 1x1 cell has a
    sub-population of 1, so its fitness work is far smaller than a 3x3 cell's 5 G x 5 D), and next
    to the same grid on the ``loop`` engine (the same work, cell after cell), alternating ``repeats`` times at the current thread count."""
    from conv_floor import ConvFloor, layers_of

    from mustangs.pool.networks import build_discriminator, build_generator

    def coev(n, engine="grouped"):
        over = [f"grid.height={n}", f"grid.width={n}", f"network.arch={arch}", f"data.batch_size={batch_size}",
                "data.sampling_ratio=1.0", "coevolution.adversary=selected", "device=cpu", f"batching={engine}",
                *(["coevolution.batches_per_generation=%d" % batches] if batches else []),
                *(["coevolution.tournament_size=1"] if n == 1 else []), *overrides]
        cfg = load_train_config(None, over)
        co = Coevolution(cfg, dataset, torch.device("cpu"))
        block = co.init_block()
        full = co.batches
        co.batches = min(2, full)   # warm-up
        co.step(block, score=False)
        co.batches = full
        return cfg, co, block

    cfg, co, block = coev(size)
    _, co1, block1 = coev(1)
    _, col, blockl = coev(size, "loop")
    full = co.batches
    skip = cfg.coevolution.d_skip_every
    d_steps = sum(1 for b in range(full) if skip is None or (b + 1) % skip != 0)
    g_t, d_t = build_generator(co.spec), build_discriminator(co.spec)
    g_layers = layers_of(g_t, torch.randn(2, co.spec.latent_dim))
    d_layers = layers_of(d_t, torch.randn(2, *co.spec.sample_shape))
    floor = ConvFloor(g_layers, d_layers, len(block), co.S, batch_size, full, d_steps, cfg.coevolution.selection)
    floor.run()
    gen, flo, one, loop = [], [], [], []
    for r in range(repeats):
        t0 = time.process_time()
        co.step(block, score=False)
        gen.append(time.process_time() - t0)
        flo.append(floor.run())
        t0 = time.process_time()
        co1.step(block1, score=False)
        one.append(time.process_time() - t0)
        t0 = time.process_time()
        col.step(blockl, score=False)
        loop.append(time.process_time() - t0)
        log(f"round {r + 1}/{repeats}: generation {gen[-1]:.2f} CPU-s, floor {flo[-1]:.2f} CPU-s, 1x1 {one[-1]:.2f} "
            f"CPU-s, same grid on the loop engine {loop[-1]:.2f} CPU-s; generation / floor {gen[-1] / flo[-1]:.2f}, generation / ({len(block)} x 1x1) "
            f"{gen[-1] / (len(block) * one[-1]):.2f} ({load_line()})")
    g, f, o, lo = (statistics.median(x) for x in (gen, flo, one, loop))
    return {"engine": co.engine, "engine_1x1": co1.engine, "arch": arch, "grid": f"{size}x{size}",
            "cells": len(block), "adam": cfg.adam, "threads": torch.get_num_threads(), "batches": full,
            "batch_size": batch_size, "d_steps": d_steps, "generation_cpu_s": g, "floor_cpu_s": f,
            "one_cell_cpu_s": o, "loop_cpu_s": lo, "ratio": g / f, "ratio_vs_cells_one_by_one": g / (len(block) * o),
            "ratio_vs_loop": g / lo, "rounds": [list(x) for x in zip(gen, flo, one, loop)]}


BUSY_LOOP = "while True:\n    pass"


def busy_compare(dataset, repeats: int, batches: int | None, loops: int = 3, overrides=(), log=print) -> dict:
    """Wall seconds of a quickstart generation (configs/quickstart.yaml, no scoring) with this
    process's threads: idle, then while ``loops`` busy-loop processes compete for the cores,
    then idle again. The ratio busy / idle (best idle phase) says how gracefully the thread
    choice shares a machine; a fair share of 2 cores among 1 + 3 jobs would give ~2 for a
    single-thread job. Busy loops run at this process's nice level and are always stopped."""
    over = ["device=cpu"] + (["coevolution.batches_per_generation=%d" % batches] if batches else []) + list(overrides)
    cfg = load_train_config("configs/quickstart.yaml", over)
    co = Coevolution(cfg, dataset, torch.device("cpu"))
    block = co.init_block()
    co.step(block, score=False)   # warm-up
    phases = {}
    for phase in ("idle", "busy", "idle again"):
        procs = []
        try:
            if phase == "busy":
                procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(loops)]
                time.sleep(0.5)
            runs = []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                co.step(block, score=False)
                runs.append((time.perf_counter() - t0, time.process_time() - c0))
        finally:
            for p in procs:
                p.kill()
                p.wait()
        phases[phase] = {"wall_s": min(r[0] for r in runs), "cpu_s": min(r[1] for r in runs)}
        log(f"{phase}: {phases[phase]['wall_s']:.2f} s wall, {phases[phase]['cpu_s']:.2f} CPU-s ({load_line()})")
    idle = min(phases["idle"]["wall_s"], phases["idle again"]["wall_s"])
    return {"threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "batches": co.batches, "loops": loops, "phases": phases, "ratio": phases["busy"]["wall_s"] / idle}


def run_table(run: str, every: int) -> str:
    """Markdown tables of a finished run: per-cell generator fid over generations, then the
    pool's final scores (best single cell vs every cell's neighbourhood mixture)."""
    from pathlib import Path

    from mustangs.report import fid_key, read_metrics

    records = read_metrics(run)
    key = fid_key(records)
    cells = [tuple(c["cell"]) for c in records[0]["cells"]]
    out = [f"Per-cell generator {key} (centre generators; best neighbourhood mixture in the last column)", "",
           "| gen | " + " | ".join(f"({r},{c})" for r, c in cells) + " | best mixture | s/gen |",
           "|---" * (len(cells) + 3) + "|"]
    for rec in records:
        if rec["generation"] % every and rec is not records[-1] and rec is not records[0]:
            continue
        vals = {tuple(c["cell"]): c.get("scores", {}).get(key) for c in rec["cells"]}
        mix = min(c.get("mixture_scores", {}).get(key, float("inf")) for c in rec["cells"])
        out.append(f"| {rec['generation']} | " + " | ".join(f"{vals[c]:.4g}" if vals[c] is not None else "-"
                                                         for c in cells) + f" | {mix:.4g} | {rec['seconds']:.1f} |")
    manifest = json.loads((Path(run) / "pool" / "manifest.json").read_text())
    out += ["", "Final scores (pool manifest, eval.fid_samples per generator; mixtures from exact mixed statistics)",
            "", "| what | fid | tvd | is |", "|---|---|---|---|"]
    rows = [(f"generator {g['id']}", g["scores"]) for g in manifest["generators"]]
    rows += [(f"mixture of cell {tuple(m['cell'])}", m["scores"]) for m in manifest["mixtures"]]
    for name, sc in rows:
        f = next((v for k, v in sc.items() if k.startswith("fid_")), float("nan"))
        t = next((v for k, v in sc.items() if k.startswith("tvd_")), float("nan"))
        i = next((v for k, v in sc.items() if k.startswith("is_")), float("nan"))
        out.append(f"| {name} | {f:.4g} | {t:.3f} | {i:.3g} |")
    out += ["", f"summary: {json.dumps(manifest.get('summary'))}"]
    return "\n".join(out)


def _print_rows(rows: list[dict]) -> None:
    print("| grid | arch | engine | adam | device | threads | batches | s / generation | CPU-s / generation | s / batch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['grid']} | {r['arch']} | {r['engine']} | {r['adam']} | {r['device']} | {r['threads']} | {r['batches']} "
              f"| {r['seconds_per_generation']:.2f} | {r['cpu_seconds_per_generation']:.2f} | {r['seconds_per_batch']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid-sizes", type=int, nargs="*", default=None,
                    help="time these square grid sizes at equal work per cell (e.g. 1 2 3 4 5) and fit t = a + b*cells")
    ap.add_argument("--engine", default=None, choices=("bmm", "grouped", "vmap", "loop"),
                    help="with --grid-sizes/--adam: engine (default: what batching=auto picks)")
    ap.add_argument("--arch", default="mlp", choices=("mlp", "dcgan28", "dcgan64"), help="network architecture")
    ap.add_argument("--batches", type=int, default=None, help="batches per generation (default: one epoch)")
    ap.add_argument("--batch-size", type=int, default=100, help="mini-batch size")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="device")
    ap.add_argument("--adam", action="store_true", help="2x2 with the fused Adam kernel vs the same formula op by op")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: every available core; --floor: 1)")
    ap.add_argument("--repeats", type=int, default=1, help="timed generations (rounds) per setting")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--floor", action="store_true",
                    help="reference work (2x2, batch 400, 150 batches, BCE) vs its bare GEMMs, 1 thread; with "
                         "--arch dcgan28: a --size grid vs its bare grouped convolutions and vs size^2 x one 1x1 cell")
    ap.add_argument("--size", type=int, default=3, help="with --floor --arch dcgan28: grid side")
    ap.add_argument("--busy", action="store_true",
                    help="quickstart generation idle, with 3 busy-loop processes, idle again; prints busy / idle")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="with --floor/--busy: config overrides (e.g. adam=ops batching=vmap)")
    ap.add_argument("--table", default=None, metavar="RUN", help="print Markdown tables of a finished run and exit")
    ap.add_argument("--every", type=int, default=5, help="with --table: one row every n generations")
    args = ap.parse_args()
    if args.table:
        print(run_table(args.table, args.every))
        return
    torch.set_num_threads(args.threads or (1 if args.floor else auto_threads()))
    ds = load_dataset("fashion-mnist", "train")
    result: dict = {"machine": machine(), "load_before": load_line()}
    if args.floor and args.arch != "mlp":
        r = conv_floor_compare(ds, args.repeats, args.batches, args.size, args.batch_size, args.arch, args.set)
        print(f"machine: {machine()}; {load_line()}")
        print(f"work: {r['grid']} {r['arch']}, batch {r['batch_size']}, {r['batches']} batches ({r['d_steps']} D steps), "
              f"selected; engine {r['engine']} (1x1: {r['engine_1x1']}), adam {r['adam']}, {r['threads']} thread(s)")
        print(f"generation: {r['generation_cpu_s']:.2f} CPU-s; conv floor: {r['floor_cpu_s']:.2f} CPU-s; "
              f"1x1 generation: {r['one_cell_cpu_s']:.2f} CPU-s")
        print(f"ratio generation / floor: {r['ratio']:.2f}")
        print(f"ratio generation / ({r['cells']} x 1x1): {r['ratio_vs_cells_one_by_one']:.2f}")
        print(f"ratio generation / same grid on the loop engine ({r['loop_cpu_s']:.2f} CPU-s): {r['ratio_vs_loop']:.2f}")
        result.update(r)
    elif args.floor:
        r = floor_compare(ds, args.repeats, args.batches, args.set)
        print(f"machine: {machine()}; {load_line()}")
        print(f"work: 2x2 MLP, batch 400, {r['batches']} batches ({r['d_steps']} D steps), BCE, selected; "
              f"engine {r['engine']}, adam {r['adam']}, {r['threads']} thread(s); GEMMs {r['tflop']:.3f} TFLOP")
        print(f"generation: {r['generation_cpu_s']:.2f} CPU-s ({r['generation_gflops']:.0f} GFLOP/s)")
        print(f"matmul floor: {r['floor_cpu_s']:.2f} CPU-s ({r['floor_gflops']:.0f} GFLOP/s)")
        print(f"ratio generation / floor: {r['ratio']:.2f}")
        result.update(r)
    elif args.busy:
        r = busy_compare(ds, args.repeats, args.batches, overrides=args.set)
        print(f"machine: {machine()}; {load_line()}")
        print(f"quickstart generation ({r['batches']} batches), {r['threads']} thread(s), "
              f"OMP_WAIT_POLICY={r['omp_wait_policy']}: busy / idle = {r['ratio']:.2f}")
        result.update(r)
    else:
        rows = []
        if args.adam:
            for adam in ("fused", "ops"):
                rows.append(time_generation(2, args.engine, args.batches, args.device, args.batch_size, args.repeats,
                                            ds, adam, args.arch))
        elif args.grid_sizes:
            for size in args.grid_sizes:
                rows.append(time_generation(size, args.engine, args.batches, args.device, args.batch_size,
                                            args.repeats, ds, arch=args.arch))
        else:
            for engine in ("bmm", "vmap", "loop") if args.arch == "mlp" else ("grouped", "vmap", "loop"):
                rows.append(time_generation(2, engine, args.batches, args.device, args.batch_size, args.repeats, ds,
                                            arch=args.arch))
        print(f"machine: {machine()}; {load_line()}")
        _print_rows(rows)
        result["rows"] = rows
        if args.adam:
            print(f"\nops / fused Adam CPU-s ratio: "
                  f"{rows[1]['cpu_seconds_per_generation'] / rows[0]['cpu_seconds_per_generation']:.2f}")
        elif args.grid_sizes:
            key = "seconds_per_generation" if args.device != "cpu" else "cpu_seconds_per_generation"
            fit = growth_fit(rows, key)
            result["fit"] = {"key": key, **fit}
            print(f"\nfit ({key}): {fit['intercept']:.3f} + {fit['per_cell']:.3f} x cells; excess over the line: "
                  + ", ".join(f"{r['grid']} {e:+.3f} ({e / r[key]:+.0%})" for r, e in zip(rows, fit["excess"])))
            print("per cell: " + ", ".join(f"{r['grid']} {r[key] / r['cells']:.3f}" for r in rows))
        else:
            base = rows[0]["cpu_seconds_per_generation"]
            print("\nCPU-s relative to " + rows[0]["engine"] + ": "
                  + ", ".join(f"{r['engine']} {r['cpu_seconds_per_generation'] / base:.2f}" for r in rows))
    result["load_after"] = load_line()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
