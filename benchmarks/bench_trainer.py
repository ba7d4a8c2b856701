"""Wall time of one coevolution generation: batched (vmap) cells vs a per-cell loop, and grid sizes.

    # 2x2 MLP grid, batch 100, one full epoch of Fashion-MNIST per generation, CPU:
    python benchmarks/bench_trainer.py
    # quicker: time 50 batches and extrapolate to the epoch
    python benchmarks/bench_trainer.py --batches 50
    # Adam: PyTorch's fused kernel vs the same formula op by op (2x2 vmap)
    python benchmarks/bench_trainer.py --adam --batches 50
    # GPU: 1x1 vs 3x3 vs 5x5 generation time (vmap)
    python benchmarks/bench_trainer.py --grid-sizes 1 3 5 --device cuda
    # a finished run as Markdown: per-cell fid_cls over generations, final mixture vs best cell
    python benchmarks/bench_trainer.py --table runs/fashion-mnist-3x3-mustangs
    # the matmul floor: CPU-s of one generation of the reference work (2x2 MLP, batch 400,
    # 150 batches, BCE) next to CPU-s of its bare GEMMs, 1 thread, alternating, 3 rounds
    python benchmarks/bench_trainer.py --floor --repeats 3

Times cover the generation step without scoring (exchange, fitness, selection, training,
mutation, replacement); data loading and the first (warm-up) generation are excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from trainer.coevolution import Coevolution
from trainer.config import load_train_config
from trainer.data import load_dataset


def machine() -> str:
    """One line describing the machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"


def time_generation(size: int, engine: str, batches: int | None, device: str, batch_size: int,
                    repeats: int, dataset, adam: str = "ops") -> dict:
    """Seconds per generation (mean of ``repeats``) for a ``size``×``size`` MLP grid, with the
    fused Adam kernel (``adam="fused"``, where the build has it) or the op-by-op one."""
    over = [f"grid.height={size}", f"grid.width={size}", f"data.batch_size={batch_size}", "data.sampling_ratio=1.0",
            f"device={device}", f"adam={adam}"]
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
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        co.step(block, score=False)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    sec = sum(times) / len(times)
    epoch_batches = len(dataset) // batch_size
    return {"grid": f"{size}x{size}", "engine": engine, "adam": adam, "device": str(dev), "batches": full,
            "seconds_per_generation": sec, "seconds_per_batch": sec / full,
            "seconds_per_epoch_generation": sec / full * epoch_batches}


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


def run_table(run: str, every: int) -> str:
    """Markdown tables of a finished run: per-cell generator fid over generations, then the
    pool's final scores (best single cell vs every cell's neighbourhood mixture)."""
    from pathlib import Path

    from trainer.report import fid_key, read_metrics

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid-sizes", type=int, nargs="*", default=None,
                    help="time these square grid sizes with vmap (e.g. 1 3 5); default: 2x2 vmap vs loop")
    ap.add_argument("--batches", type=int, default=None, help="batches per generation (default: one epoch)")
    ap.add_argument("--batch-size", type=int, default=100, help="mini-batch size")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="device")
    ap.add_argument("--adam", action="store_true",
                    help="2x2 vmap with the fused Adam kernel vs the same formula op by op")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=1, help="timed generations per setting")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--floor", action="store_true",
                    help="reference work (2x2, batch 400, 150 batches, BCE) vs its bare GEMMs, 1 thread")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="with --floor: config overrides (e.g. adam=ops batching=vmap)")
    ap.add_argument("--table", default=None, metavar="RUN", help="print Markdown tables of a finished run and exit")
    ap.add_argument("--every", type=int, default=5, help="with --table: one row every n generations")
    args = ap.parse_args()
    if args.table:
        print(run_table(args.table, args.every))
        return
    if args.threads or args.floor:
        torch.set_num_threads(args.threads or 1)
    ds = load_dataset("fashion-mnist", "train")
    if args.floor:
        r = floor_compare(ds, args.repeats, args.batches, args.set)
        print(f"machine: {machine()}; {load_line()}")
        print(f"work: 2x2 MLP, batch 400, {r['batches']} batches ({r['d_steps']} D steps), BCE, selected; "
              f"engine {r['engine']}, adam {r['adam']}, {r['threads']} thread(s); GEMMs {r['tflop']:.3f} TFLOP")
        print(f"generation: {r['generation_cpu_s']:.2f} CPU-s ({r['generation_gflops']:.0f} GFLOP/s)")
        print(f"matmul floor: {r['floor_cpu_s']:.2f} CPU-s ({r['floor_gflops']:.0f} GFLOP/s)")
        print(f"ratio generation / floor: {r['ratio']:.2f}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"machine": machine(), "load": load_line(), **r}, fh, indent=1)
        return
    rows = []
    if args.adam:
        for adam in ("fused", "ops"):
            rows.append(time_generation(2, "vmap", args.batches, args.device, args.batch_size, args.repeats, ds, adam))
    elif args.grid_sizes:
        for s in args.grid_sizes:
            rows.append(time_generation(s, "vmap", args.batches, args.device, args.batch_size, args.repeats, ds))
    else:
        for engine in ("vmap", "loop"):
            rows.append(time_generation(2, engine, args.batches, args.device, args.batch_size, args.repeats, ds))
    print(f"machine: {machine()}")
    print("| grid | engine | adam | device | batches timed | s / generation | s / batch | s / epoch-generation |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['grid']} | {r['engine']} | {r['adam']} | {r['device']} | {r['batches']} | {r['seconds_per_generation']:.2f} "
              f"| {r['seconds_per_batch']:.4f} | {r['seconds_per_epoch_generation']:.1f} |")
    if args.adam:
        print(f"\nops / fused Adam time ratio: {rows[1]['seconds_per_generation'] / rows[0]['seconds_per_generation']:.2f}")
    elif not args.grid_sizes:
        print(f"\nloop / vmap time ratio: {rows[1]['seconds_per_generation'] / rows[0]['seconds_per_generation']:.2f}")
    else:
        base = rows[0]["seconds_per_generation"]
        print("\n" + ", ".join(f"{r['grid']}: {r['seconds_per_generation'] / base:.2f}x of {rows[0]['grid']}"
                               for r in rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
