"""Time to quality (issue 20, item 4): ``fid_cls10k`` and ``recall_cls10k`` against training CPU-seconds.

For each recipe and seed the run is trained in segments, ``trainer train ... --resume
coevolution.generations=G`` for each G of ``--checkpoints`` (a resume may raise the generations),
and the training CPU-seconds of each segment are read with ``resource.getrusage(RUSAGE_CHILDREN)``
around it (cumulative over segments; each segment pays the trainer's start-up: data, judge,
checkpoint). After each segment the pool is judged, and that CPU is **not** counted as training:

* ``single``: ``ensembler evaluate`` — the pool's best generator by fid (its fid and recall);
* ``ensemble``: ``ensembler optimize --objective tvd`` (CMA-ES) — the re-purposed ensemble's
  verified metrics on fresh samples (pools of one generator have no ensemble: shown as ``–``).

Recipes (``--recipes``; each a config plus overrides, all on ``--arch``, ``--batches`` mini-batches
of the config's batch size per generation, ``threads=1``):

* ``plain``: the textbook loop of ``benchmarks/baseline_gan.py`` (imported, not copied; the DCGAN
  initialisation for ``dcgan28``), the whole train split, judged at the same Adam steps per network
  (G × batches) through a one-generator pool, so every recipe is judged by the same commands;
* ``1x1-bce``, ``2x2-bce``, ``3x3-bce``: the Lipizzaner reference recipe
  (``configs/fashion-mnist-3x3-bce.yaml``: loss bce, selection, exchange, data dieting 25%);
* ``1x1-mustangs``, ``2x2-mustangs``, ``3x3-mustangs``: the same with ``coevolution.loss=mustangs``;
* ``3x3-isolated``: nine isolated GANs (``coevolution.exchange=false``, no selection: the PaGAN
  config, loss mustangs).

In every grid recipe the trainer's own per-generation scoring and mixture ES are off
(``eval.every=null``, ``mixture.enabled=false``): they score and weight generators, they do not
train them, and the re-purposed ensemble takes the mixture's place. Its end-of-run scores use 16
samples (``eval.fid_samples=16``), since the ensembler judges the pool.

    python benchmarks/time_to_quality.py --arch dcgan28 --checkpoints 2 5 10 20 --batches 100 \\
        --seeds 0 1 2 --json benchmarks/studies/time-to-quality-dcgan28.json --picture benchmarks/studies/time-to-quality-dcgan28.png
    python benchmarks/time_to_quality.py --arch mlp --recipes 1x1-bce 2x2-bce --checkpoints 1 2 --batches 10 \\
        --seeds 0 --samples 500 --diversity-samples 200 --budget 50 --out /tmp/ttq   # a tiny smoke run

A finished (recipe, seed, checkpoint) record in ``--json`` is not redone (the run folders keep
their checkpoints), so a stopped study restarts where it stopped; ``plain`` is redone whole unless
all its checkpoints are recorded.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "benchmarks"))

BCE, MUSTANGS, PAGAN = ("configs/fashion-mnist-3x3-bce.yaml", "configs/fashion-mnist-3x3-mustangs.yaml",
                        "configs/fashion-mnist-3x3-pagan.yaml")
ONE = ["grid.height=1", "grid.width=1", "coevolution.tournament_size=1"]   # a 1x1 sub-population holds one pair
TWO = ["grid.height=2", "grid.width=2"]
#: recipe -> (config, overrides); ``plain`` is baseline_gan.py's loop (None).
RECIPES: dict[str, tuple[str, list[str]] | None] = {
    "plain": None,
    "1x1-bce": (BCE, ONE), "2x2-bce": (BCE, TWO), "3x3-bce": (BCE, []),
    "1x1-mustangs": (MUSTANGS, ONE), "2x2-mustangs": (MUSTANGS, TWO), "3x3-mustangs": (MUSTANGS, []),
    "3x3-isolated": (PAGAN, []),
}
#: Overrides every grid recipe gets: the ensembler judges the pool, so the trainer scores nothing it needs not.
QUIET = ["eval.every=null", "mixture.enabled=false", "eval.fid_samples=16", "eval.diversity_samples=null",
         "output.report=false", "output.sample_every=null", "output.tensorboard=false",
         "output.checkpoint_every=1000000", "threads=1"]


def children_cpu() -> float:
    """CPU-seconds (user + system) of the finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    """CPU-seconds (user + system, all threads) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_env() -> dict:
    """One thread per child (the machine is shared) and no network."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MUSTANGS_OFFLINE": "1"}


def call(cmd: list[str], log: Path, capture: bool = False) -> str:
    """Run one CLI command, its stderr (and stdout unless ``capture``) appended to ``log``; stop on failure."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        done = subprocess.run(cmd, stdout=subprocess.PIPE if capture else f, stderr=f, cwd=ROOT, env=child_env(),
                              text=True)
    if done.returncode:
        sys.exit(f"time_to_quality: command failed (exit {done.returncode}): {' '.join(cmd)}; see {log}")
    return done.stdout if capture else ""


def metric(scores: dict, prefix: str) -> float | None:
    """The value of the first key starting with ``prefix`` (``fid_cls``, ``recall_cls``), else None."""
    return next((float(v) for k, v in scores.items() if k.startswith(prefix)), None)


def judge(pool: Path, tag: str, args, log: Path) -> dict:
    """Best single generator (``ensembler evaluate``) and the tvd ensemble (``ensembler optimize``)."""
    common = ["--device", "cpu", "--cache-dir", str(Path(args.out) / "stats-cache"),
              "--diversity-samples", str(args.diversity_samples)] + (["--data-dir", args.data_dir] if args.data_dir else [])
    doc = json.loads(call([str(BIN / "ensembler"), "evaluate", str(pool), "-n", str(args.samples), "--json", *common],
                          log, capture=True))
    singles = [r for r in doc["rows"] if r["kind"] == "single"]
    best = min(singles, key=lambda r: metric(r, "fid_cls"))
    out = {"generators": len(singles), "single_name": best["name"], "single_fid": metric(best, "fid_cls"),
           "single_recall": metric(best, "recall_cls"), "ensemble_fid": None, "ensemble_recall": None,
           "fid_key": next(k for k in best if k.startswith("fid_cls")),
           "recall_key": next((k for k in best if k.startswith("recall_cls")), None)}
    if len(singles) > 1:
        ens = pool.parent / f"ensemble-tvd-{tag}.json"
        call([str(BIN / "ensembler"), "optimize", str(pool), "--objective", "tvd", "--method", "cma", "--budget",
              str(args.budget), "--seed", "0", "--samples", str(args.samples), "--verify-samples", str(args.samples),
              "--no-held-out", "--out", str(ens), *common], log)
        ver = json.loads(ens.read_text())["metrics"]["verified"]
        out.update(ensemble_fid=metric(ver, "fid_cls"), ensemble_recall=metric(ver, "recall_cls"),
                   ensemble_size=len(json.loads(ens.read_text())["members"]))
    return out


def grid_recipe(recipe: str, seed: int, args, done: dict, emit) -> None:
    """Train one grid recipe in segments (one per checkpoint), judging the pool after each."""
    config, over = RECIPES[recipe]
    run = Path(args.out) / f"{recipe}-{args.arch}-s{seed}"
    run.mkdir(parents=True, exist_ok=True)
    log = run.parent / f"{run.name}.log"
    extra = [f"network.arch={args.arch}", f"seed={seed}", f"coevolution.batches_per_generation={args.batches}"]
    extra += [f"network.init={args.init}"] if args.init else []
    extra += [f"data.data_dir={args.data_dir}"] if args.data_dir else []
    cpu = 0.0
    for G in args.checkpoints:
        if (recipe, seed, G) in done:   # recorded: its checkpoint is on disk, the next segment resumes from it
            cpu = done[(recipe, seed, G)]["train_cpu_s"]
            continue
        c0 = children_cpu()
        call([str(BIN / "trainer"), "train", config, "--out", str(run), "--resume", "--quiet", *over, *QUIET, *extra,
              f"coevolution.generations={G}"], log)
        cpu += children_cpu() - c0
        emit({"recipe": recipe, "seed": seed, "generations": G, "steps_per_network": G * args.batches,
              "train_cpu_s": round(cpu, 1), **judge(run / "pool", f"g{G}", args, log)})


def plain_recipe(seed: int, args, done: dict, emit) -> None:
    """baseline_gan.py's loop in this process, judged at the grid recipes' steps per network."""
    if all(("plain", seed, G) in done for G in args.checkpoints):
        return
    import torch

    from baseline_gan import LATENT, train_plain
    from mustangs.pool.format import write_pool
    from mustangs.pool.networks import NetSpec

    torch.set_num_threads(1)
    run = Path(args.out) / f"plain-{args.arch}-s{seed}"
    run.mkdir(parents=True, exist_ok=True)
    log = run.parent / f"{run.name}.log"
    steps = {G * args.batches: G for G in args.checkpoints}
    c0, skipped = self_cpu(), [0.0]

    def on_step(step: int, G_net) -> None:
        t = self_cpu()
        train = t - c0 - skipped[0]
        G = steps[step]
        pool = run / f"pool-g{G}"
        write_pool(pool, NetSpec(args.arch, LATENT, (1, 28, 28)), "fashion-mnist",
                   [("plain", copy.deepcopy(G_net), {"origin": {"recipe": "plain", "step": step}})])
        skipped[0] += self_cpu() - t   # the judging runs in children; only the pool writing is here
        emit({"recipe": "plain", "seed": seed, "generations": G, "steps_per_network": step,
              "train_cpu_s": round(train, 1), **judge(pool, f"g{G}", args, log)})

    train_plain(args.arch, max(steps), seed, args.batch_size, args.data_dir, True, on_step=on_step, at=steps)


def fmt(x: float | None, digits: str = ".4g") -> str:
    return "–" if x is None else format(x, digits)


def table(records: list[dict]) -> str:
    """One markdown row per record."""
    lines = ["| recipe | seed | generations | steps/network | train CPU-s | single fid | single recall | "
             "ensemble fid | ensemble recall |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: (list(RECIPES).index(r["recipe"]), r["seed"], r["generations"])):
        lines.append(f"| {r['recipe']} | {r['seed']} | {r['generations']} | {r['steps_per_network']} | "
                     f"{r['train_cpu_s']:.0f} | {fmt(r['single_fid'])} | {fmt(r['single_recall'], '.3f')} | "
                     f"{fmt(r['ensemble_fid'])} | {fmt(r['ensemble_recall'], '.3f')} |")
    return "\n".join(lines)


def picture(records: list[dict], path: str) -> None:
    """fid and recall against training CPU-seconds: one line per recipe (mean over seeds at each
    checkpoint), solid = best single generator, dashed = the tvd ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, recipe in enumerate(r for r in RECIPES if any(x["recipe"] == r for x in records)):
        colour = f"C{i}"
        rs = [r for r in records if r["recipe"] == recipe]
        gens = sorted({r["generations"] for r in rs})
        for ax, what in zip(axes, ("fid", "recall")):
            for member, style in (("single", "-"), ("ensemble", "--")):
                pts = []
                for G in gens:
                    vals = [(r["train_cpu_s"], r[f"{member}_{what}"]) for r in rs
                            if r["generations"] == G and r[f"{member}_{what}"] is not None]
                    if vals:
                        pts.append((statistics.mean(v[0] for v in vals), statistics.mean(v[1] for v in vals)))
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=colour, ms=3,
                            label=f"{recipe} ({member})" if what == "fid" else None)
    key = records[0]
    for ax, what in zip(axes, (key["fid_key"], key["recall_key"] or "recall")):
        ax.set_xscale("log")
        ax.set_xlabel("training CPU-seconds")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Time to quality: solid = best single generator, dashed = ensemble (ensembler optimize --objective tvd)",
                 fontsize=9)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", choices=("mlp", "dcgan28"), default="mlp", help="network of every recipe")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--checkpoints", type=int, nargs="+", default=[2, 5, 10, 20],
                   help="generations after which the pool is judged (increasing)")
    p.add_argument("--batches", type=int, default=100, help="mini-batches (Adam steps) per generation")
    p.add_argument("--batch-size", type=int, default=100, help="plain only: mini-batch size (the configs' is 100)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--init", choices=("torch", "dcgan", "auto"), default=None,
                   help="network.init of the grid recipes (None: the config's default)")
    p.add_argument("--samples", type=int, default=10000, help="samples per generator when judging (fid, tvd)")
    p.add_argument("--diversity-samples", type=int, default=10000, help="samples for precision/recall (recall_cls10k)")
    p.add_argument("--budget", type=int, default=2000, help="CMA-ES evaluations of ensembler optimize")
    p.add_argument("--out", default="runs/time-to-quality", help="folder of the run folders and logs")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the records here (atomic, after every record)")
    p.add_argument("--picture", default=None, help="PNG of fid and recall against training CPU-seconds")
    args = p.parse_args(argv)
    if sorted(set(args.checkpoints)) != args.checkpoints:
        p.error("--checkpoints must be increasing, e.g. 2 5 10 20")
    os.environ.setdefault("MUSTANGS_OFFLINE", "1")
    from mustangs.io.atomic import write_text_atomic

    records: list[dict] = []
    if args.json and Path(args.json).is_file():
        records = json.loads(Path(args.json).read_text())["records"]
    done = {(r["recipe"], r["seed"], r["generations"]): r for r in records
            if r.get("arch") == args.arch and r.get("batches") == args.batches}
    command = "python benchmarks/time_to_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def emit(rec: dict) -> None:
        rec.update(arch=args.arch, batches=args.batches, samples=args.samples,
                   diversity_samples=args.diversity_samples, load=round(os.getloadavg()[0], 1))
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if args.json:
            write_text_atomic(args.json, json.dumps({"command": command, "records": records}, indent=2) + "\n")

    for seed in args.seeds:
        for recipe in args.recipes:
            if recipe == "plain":
                plain_recipe(seed, args, done, emit)
            else:
                grid_recipe(recipe, seed, args, done, emit)
    mine = [r for r in records if r.get("arch") == args.arch and r["recipe"] in args.recipes
            and r["seed"] in args.seeds and r["generations"] in args.checkpoints]
    print(table(mine))
    if args.picture and mine:
        picture(mine, args.picture)
        print(f"picture: {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
