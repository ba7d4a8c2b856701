"""Mode coverage on the standard 2-D toys: does the grid resist mode collapse, and does re-purposing help?

The yardsticks of VEEGAN, PacGAN and Unrolled GAN: **rings-8** (8 Gaussians on a circle) and
**grid-25** (a 5×5 grid of Gaussians). A sample is *high quality* within 3σ (Euclidean) of its nearest
mode; a mode is *covered* when ≥ 1% of a 10k-sample draw lands within 3σ of it; TVD is over the
nearest-mode histogram against the uniform target (``mustangs.judge.metrics.mode_scores``).

Variants, all at the same Adam steps per network (``--generations`` × ``--batches``):

  (a) a-single        one GAN (1×1 grid)
  (b) b-isolated      3×3, ``exchange: false`` (nine independent GANs; PaGAN)
  (c) c-no-selection  3×3, ``selection: false`` (SPaGAN; ``adversary: neighbour``, the reference's
                      opponent population without selection is the whole neighbourhood)
  (d) d-lipizzaner    3×3, ``loss: bce``
  (e) e-mustangs      3×3, ``loss: mustangs``
  (f) f-reference-details  (d) plus the reference's other details: D on every other mini-batch,
                      fitness on 1000 samples, mixture σ 0.01 (only with ``--variants``)
  (g) g-fitness-sigma (f) without D on every other mini-batch (only with ``--variants``)

For every grid variant: the best single generator (most modes covered, then lowest TVD — chosen
with the test metric itself, which favours the baseline), the best cell mixture (the trainer's own
(1+1)-ES weights, scored from per-generator statistics) and the re-purposed ensembles
(``ensembler optimize POOL --objective tvd``, and ``--objective coverage``, CMA-ES, each scored on 10k
fresh samples drawn from its ``ensemble.json``). Everything runs through the CLIs' ``main`` functions inside worker processes, so
Python and torch start once per worker. ``--jobs`` worker processes (default: one per core this
process may use, each with one torch thread) share the runs, the dearest first.

    python benchmarks/study_modes.py --json runs/study-modes/results.json
    python benchmarks/study_modes.py --seeds 3 --toys rings --json /tmp/m.json   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "a-single": ["grid.height=1", "grid.width=1", "coevolution.selection=false", "coevolution.exchange=false",
                 "mixture.enabled=false", "coevolution.loss=bce"],
    "b-isolated": ["coevolution.exchange=false", "coevolution.selection=false", "coevolution.loss=bce"],
    "c-no-selection": ["coevolution.selection=false", "coevolution.adversary=neighbour", "coevolution.loss=bce"],
    "d-lipizzaner": ["coevolution.loss=bce"],
    "e-mustangs": ["coevolution.loss=mustangs"],
    # not in the default set: (d) with the reference's remaining details (D on every other mini-batch,
    # fitness on 1000 samples, mixture σ 0.01)
    "f-reference-details": ["coevolution.loss=bce", "coevolution.d_skip_every=2", "coevolution.fitness_samples=1000",
                            "mixture.sigma=0.01"],
    # (f) without D on every other mini-batch: which of the three details matters
    "g-fitness-sigma": ["coevolution.loss=bce", "coevolution.fitness_samples=1000", "mixture.sigma=0.01"],
    # issue 19, slower takeover (only with --variants): (d) with migration every 4th generation and copies of
    # another lineage replacing a centre with probability 0.3 (a takeover simulation gave ~4.3 of 9 lineages
    # after 20 generations, against ~1.0 for (d))
    "h-slow-takeover": ["coevolution.loss=bce", "coevolution.migration_every=4", "coevolution.foreign_replacement=0.3"],
    # (d) with migration every 4th generation only
    "i-migrate4": ["coevolution.loss=bce", "coevolution.migration_every=4"],
    # (h) on a 5x5 torus at the same total compute as 3x3 (9/25 of the steps per network: set --batches accordingly)
    "j-slow-5x5": ["coevolution.loss=bce", "coevolution.migration_every=4", "coevolution.foreign_replacement=0.3",
                   "grid.height=5", "grid.width=5"],
    # (d) with the crowding replacement rule (issue 19): no lineage may take a neighbourhood majority by replacement
    "k-crowding": ["coevolution.loss=bce", "coevolution.replacement=crowding"],
}
DEFAULT_VARIANTS = ["a-single", "b-isolated", "c-no-selection", "d-lipizzaner", "e-mustangs"]
CONFIGS = {"rings": "configs/rings-3x3.yaml", "grid25": "configs/grid25-3x3.yaml"}


def cpu_children() -> float:
    """CPU-seconds of this process's finished children (the workers, once the pool has shut down)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_seconds() -> float:
    """CPU-seconds of this process so far (user + system, all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class StudyError(RuntimeError):
    """A CLI command of the study failed; the message names it and its log."""


def cli(main, argv: list[str], log) -> None:
    """Run a CLI ``main`` in this process with its output in ``log``; stop the study if it fails."""
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"$ {' '.join(argv)}", flush=True)
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    if rc:
        raise StudyError(f"study: command failed (exit {rc}): {' '.join(argv)}; see {log.name}")


def modes_of(scores: dict) -> dict:
    """The three mode metrics of a pool/mixture score dict, under short names."""
    out = {}
    for key, value in scores.items():
        for short in ("modes_covered", "high_quality", "tvd_modes"):
            if key.startswith(short):
                out[short] = value
    return out


def lineages(run: Path) -> int:
    """How many of the grid's founding generators still have descendants among the final centres.

    Read from the last line's ``lineages`` entry (issue 19) when the run records it; otherwise:

    Follows ``selected_g``/``replaced_g`` in ``metrics.jsonl``: a replaced centre inherits the
    lineage of the generator that was selected (and trained) in its cell that generation.
    """
    lines = (run / "metrics.jsonl").read_text().splitlines()
    if lines and "lineages" in json.loads(lines[-1]):
        return json.loads(lines[-1])["lineages"]["distinct_g"]
    lineage: dict[tuple, tuple] = {}
    for line in lines:
        cells = json.loads(line)["cells"]
        before = dict(lineage)
        for c in cells:
            me = tuple(c["cell"])
            before.setdefault(me, me)
            lineage.setdefault(me, me)
        for c in cells:
            if c["replaced_g"]:
                lineage[tuple(c["cell"])] = before.get(tuple(c["selected_g"]), tuple(c["selected_g"]))
    return len(set(lineage.values()))


def run_dir(args, toy: str, variant: str, seed: int) -> Path:
    """The run folder of one toy × variant × seed at this study's steps (so a study at other steps
    never mistakes these runs for its own)."""
    return Path(args.out) / toy / f"{args.generations * args.batches}-steps" / f"{variant}-s{seed}"


def rank(m: dict) -> tuple:
    """Sort key: most modes covered, then lowest TVD over modes."""
    return (-m["modes_covered"], m["tvd_modes"])


def one(toy: str, variant: str, seed: int, args, log) -> list[dict]:
    """Train one variant × seed on one toy, re-purpose its pool for each objective, and measure the members."""
    from trainer.cli import main as trainer_main

    out = run_dir(args, toy, variant, seed)
    over = [f"seed={seed}", "threads=1", f"coevolution.generations={args.generations}",
            f"coevolution.batches_per_generation={args.batches}", "eval.fid_samples=10000", "output.report=false",
            "output.sample_every=null", f"output.checkpoint_every={args.generations}", *VARIANTS[variant]]
    c0, t0 = cpu_seconds(), time.perf_counter()
    if not (out / "pool" / "manifest.json").is_file():
        cli(trainer_main, ["train", CONFIGS[toy], "--out", str(out), "--quiet", "--resume", *over], log)
    base = {"toy": toy, "variant": variant, "seed": seed, "steps_per_network": args.generations * args.batches,
            "lineages": lineages(out)}
    manifest = json.loads((out / "pool" / "manifest.json").read_text())
    singles = [modes_of(e["scores"]) | {"id": e["id"]} for e in manifest["generators"]]
    recs = [{**base, "member": "best-single", **min(singles, key=rank)}]
    if variant != "a-single":
        mixes = [modes_of(m["scores"]) for m in manifest["mixtures"]]
        recs.append({**base, "member": "best-cell-mixture", **min(mixes, key=rank)})
        recs += [{**base, **repurposed(out, toy, seed, objective, log)} for objective in args.objectives]
    spent = {"cpu_s": round(cpu_seconds() - c0, 2), "wall_s": round(time.perf_counter() - t0, 2)}
    for r in recs:
        r.update(spent)
    return recs


def repurposed(run: Path, toy: str, seed: int, objective: str, log) -> dict:
    """Re-purpose a run's pool for ``objective`` (CMA-ES; reused when its file exists) and measure the
    ensemble on 10k fresh samples: the ``ensemble-<objective>`` member record."""
    import torch

    from ensembler.cli import main as ensembler_main
    from ensembler.ensemble import Ensemble
    from mustangs.data.datasets import point_modes
    from mustangs.judge.metrics import mode_scores, mode_stats

    name = f"ensemble-{objective.replace('+', '-')}"
    path = run / f"{name}.json"
    if not path.is_file():
        cli(ensembler_main, ["optimize", str(run / "pool"), "--objective", objective, "--method", "cma",
                             "--budget", "2000", "--seed", "0", "--samples", "10000", "--verify-samples", "10000",
                             "--device", "cpu", "--out", str(path)], log)
    ensemble = Ensemble.load(path)
    x = ensemble.sample(10_000, torch.Generator().manual_seed(10_000 + seed))      # verified by sampling
    m = mode_scores(mode_stats(x.numpy(), *point_modes(toy)))
    estimated = ensemble.meta["metrics"]["estimated"]
    return {"member": name, **modes_of(m), "size": len(ensemble.members),
            "estimated_tvd": next(v for k, v in estimated.items() if k.startswith("tvd_"))}


def _worker_init() -> None:
    """Each worker: one torch thread (the workers share the cores), no downloads."""
    os.environ.setdefault("MUSTANGS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)


def task(toy: str, variant: str, seed: int, args) -> list[dict]:
    """One variant × seed in a worker, with its own log file beside its run folder."""
    out = run_dir(args, toy, variant, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.log", "a") as log:
        return one(toy, variant, seed, args, log)


def summary(records: list[dict]) -> str:
    """Markdown: per toy, variant and member, mean ± std over seeds and the seeds with full coverage."""
    from mustangs.data.datasets import point_modes

    groups: dict = {}
    for r in records:
        groups.setdefault((r["toy"], r["variant"], r["member"]), []).append(r)

    def ms(xs, fmt):
        return (f"{statistics.mean(xs):{fmt}} ± {statistics.stdev(xs):{fmt}}" if len(xs) > 1
                else f"{xs[0]:{fmt}}")

    lines = ["| toy | variant | member | seeds | modes covered | full coverage | high quality | TVD over modes |",
             "|---|---|---|---|---|---|---|---|"]
    for (toy, variant, member), rs in sorted(groups.items()):
        modes = point_modes(toy)[0].shape[0]
        full = sum(r["modes_covered"] == modes for r in rs)
        lines.append(f"| {toy} | {variant} | {member} | {len(rs)} | {ms([r['modes_covered'] for r in rs], '.1f')}/{modes}"
                     f" | {full}/{len(rs)} | {ms([100 * r['high_quality'] for r in rs], '.1f')}% "
                     f"| {ms([r['tvd_modes'] for r in rs], '.3f')} |")
    return "\n".join(lines)


def picture(args, toys: list[str], seed: int, path: Path) -> None:
    """Scatter plots of 2000 samples over the true modes: per toy, a row of best single generators and
    a row of re-purposed ensembles, one column per variant (the figure of the mode-collapse papers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ensembler.ensemble import Ensemble
    from mustangs.data.datasets import point_modes
    from mustangs.pool.format import read_pool

    rows = [(toy, kind) for toy in toys for kind in ("best-single", "ensemble-tvd")]
    variants = [v for v in VARIANTS if v in args.variants]
    fig, axes = plt.subplots(len(rows), len(variants), figsize=(3 * len(variants), 3 * len(rows)), squeeze=False)
    for i, (toy, kind) in enumerate(rows):
        centres, std = point_modes(toy)
        for j, variant in enumerate(variants):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlim(-1.5, 1.5), ax.set_ylim(-1.5, 1.5), ax.set_aspect("equal")
            run = run_dir(args, toy, variant, seed)
            if not (run / "pool" / "manifest.json").is_file():
                continue
            if kind == "best-single" or variant == "a-single":
                pool = read_pool(run / "pool")
                scores = [modes_of(e.scores) for e in pool.entries]
                best = min(range(len(pool)), key=lambda k: rank(scores[k]))
                ens, label = Ensemble.from_pool(pool, indices=[best]), "best single"
            else:
                ens, label = Ensemble.load(run / "ensemble-tvd.json"), f"re-purposed ({kind})"
            x = ens.sample(2000, torch.Generator().manual_seed(seed)).numpy()
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, color="tab:blue")
            ax.scatter(centres[:, 0], centres[:, 1], s=12, marker="x", color="tab:red")
            ax.set_title(f"{toy} {variant}\n{label}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/study-modes", help="folder for the runs")
    p.add_argument("--json", default=None, help="one record per toy × variant × seed × member kind")
    p.add_argument("--seeds", type=int, default=10, help="number of seeds per variant")
    p.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (to split a study over processes)")
    p.add_argument("--toys", nargs="+", default=["rings", "grid25"], choices=list(CONFIGS))
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--batches", type=int, default=50,
                   help="Adam steps per generation (default 20 × 50 = 1000 steps of 400 samples per network: all "
                        "5 variants × 10 seeds × 2 toys in about 19 min on 2 idle cores; more steps buy quality)")
    p.add_argument("--objectives", nargs="+", default=["tvd", "coverage"],
                   help="re-purposing objectives, one ensemble member each (tvd: the issue's; coverage: aims at "
                        "the modes, see RESULTS-studies.md)")
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                   help="worker processes, one torch thread each (default: the cores this process may use)")
    p.add_argument("--picture", default=None, help="PNG of scatter panels (default: OUT/modes.png)")
    args = p.parse_args()
    for name in ("seeds", "generations", "batches", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    os.environ.setdefault("MUSTANGS_OFFLINE", "1")
    from mustangs.io.atomic import write_text_atomic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), cpu_seconds() + cpu_children()
    tasks = [(toy, variant, seed) for toy in args.toys for seed in range(args.first_seed, args.first_seed + args.seeds)
             for variant in args.variants]
    tasks.sort(key=lambda t: t[1] == "a-single")        # 3×3 grids first, the cheap single GANs fill the end
    records: list[dict] = []
    order = {v: i for i, v in enumerate(VARIANTS)}
    done = 0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, initializer=_worker_init) as pool:
        futures = {pool.submit(task, *t, args): t for t in tasks}
        for fut in as_completed(futures):
            toy, variant, seed = futures[fut]
            try:
                recs = fut.result()
            except StudyError as exc:
                for f in futures:
                    f.cancel()
                sys.exit(str(exc))
            done += 1
            records.extend(recs)
            records.sort(key=lambda r: (r["toy"], order[r["variant"]], r["seed"], r["member"]))
            best = {r["member"]: f"{r['modes_covered']:.0f}" for r in recs}
            print(f"[{time.perf_counter() - t0:6.0f} s] {done}/{len(tasks)} {toy} {variant} seed {seed}: "
                  f"modes covered {best}", flush=True)
            if args.json:
                write_text_atomic(args.json, json.dumps(records, indent=1))
    print(summary(records))
    pic = Path(args.picture) if args.picture else out / "modes.png"
    picture(args, args.toys, 0, pic)
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {cpu_seconds() + cpu_children() - c0:.0f} s (load now: {os.getloadavg()[0]:.1f}); "
          f"picture: {pic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
