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

Times cover the generation step without scoring (exchange, fitness, selection, training,
mutation, replacement); data loading and the first (warm-up) generation are excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    ap.add_argument("--table", default=None, metavar="RUN", help="print Markdown tables of a finished run and exit")
    ap.add_argument("--every", type=int, default=5, help="with --table: one row every n generations")
    args = ap.parse_args()
    if args.table:
        print(run_table(args.table, args.every))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset("fashion-mnist", "train")
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
