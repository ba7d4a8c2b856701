"""``ensembler``: re-purpose a pool of generators by optimising mixture weights for an objective.

  ensembler optimize runs/a/pool --objective tvd --method cma --budget 2000 --seed 0 --out e.json
  ensembler optimize runs/a/pool runs/b/pool --objective "tvd+0.01*fid" --max-size 5 --out e.json
  ensembler optimize runs/a/pool --objective tvd --target "0:0.5,3:0.5" --out two-classes.json
  ensembler optimize runs/a/pool --objective "tvd+coverage" --data-dir DIR --out diverse.json
  ensembler optimize lipizzaner/pool --objective tvd --classifier ~/.cache/mustangs/classifiers/mnist
  ensembler front runs/a/pool --objectives tvd,fid --max-size 5 --out front.json --plot front.png
  ensembler evaluate e.json            (or a pool folder; --json for machine-readable output)
  ensembler sample e.json -n 64 --seed 0 --out grid.png
  ensembler import-lipizzaner lipizzaner_output/ --out runs/lipizzaner/pool
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mustangs.console.args import int_range, seed_type
from mustangs.console.formatting import ArgumentParser, HelpFormatter, add_version, console_main
from mustangs.errors import UserError
from mustangs.names import count


def _evaluator(args, need_real: bool = True):
    """The evaluator factory for a dataset (a module-level hook: tests replace ``load_evaluator``).

    Passes the judge (``--classifier``, ``--force-classifier``) and ``--data-dir``; with
    ``need_real=False`` a missing real test split only drops the metrics that need it.
    """
    from ensembler import stats

    return lambda dataset: stats.load_evaluator(dataset, args.device, classifier=args.classifier,
                                                force=args.force_classifier, data_dir=args.data_dir,
                                                need_real=need_real, log=_log)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _pool_inputs(paths) -> list[tuple[str, str]]:
    """The pools a command reads, as inputs for :func:`mustangs.io.safety.guard_output`."""
    pairs = []
    for p in paths:
        p = Path(p)
        pairs.append(("pool", str(p.parent if p.name == "manifest.json" else p)))
    return pairs


def _check_sizes(pool_paths, batch_size: int, kept_samples: int) -> None:
    """Refuse a ``--batch-size`` or sample count whose tensors cannot fit in memory (before any work).

    A forward pass holds ``batch_size`` latents and samples; verification keeps every sample's
    classifier features (≤ 256 floats) and its latent.
    """
    from mustangs.io.safety import check_memory, human_bytes
    from mustangs.io.safety import samples_bytes
    from mustangs.pool.format import read_pool

    spec = read_pool(pool_paths[0]).spec
    batch = samples_bytes(batch_size, spec.latent_dim, spec.sample_shape, copies=4)
    kept = 8 * kept_samples * (spec.latent_dim + 256 + 1)
    check_memory(batch + kept, f"--batch-size {batch_size} ({human_bytes(batch)} per forward pass) with "
                 f"{kept_samples:,} samples kept for verification ({human_bytes(kept)})",
                 "lower --batch-size, -n or --verify-samples")


def _guard_optimize_outputs(args, what: str = "ensemble.json") -> None:
    """``--out``/``--plot``/``--cache-dir`` may not be, contain or lie in a pool; names must fit; folders writable.

    Shared by ``optimize`` and ``front`` (``what`` names the JSON written: ensemble.json, front.json)."""
    from mustangs.io.safety import check_suffix, check_writable, guard_output

    inputs = _pool_inputs(args.pools)
    guard_output(args.out, inputs)
    check_suffix(args.out, (".json",), what=what)
    if args.plot:
        guard_output(args.plot, inputs + [("--out file", args.out)], flag="--plot")
        check_suffix(args.plot, (".png",), flag="--plot", what="a PNG image")
    if args.cache_dir:
        guard_output(args.cache_dir, inputs + [("--out file", args.out)] +
                     ([("--plot file", args.plot)] if args.plot else []), flag="--cache-dir")
    if not args.dry_run:
        check_writable(args.out)
        if args.plot:
            check_writable(args.plot, flag="--plot")


# --------------------------------------------------------------------------- optimize

def cmd_optimize(args) -> int:
    from ensembler.optimize import OptimizeOptions, check_options, needs_real, optimize, plot_history
    from ensembler.stats import StatsCache

    opts = OptimizeOptions(objective=args.objective, target=args.target, method=args.method, budget=args.budget,
                           seed=args.seed, max_size=args.max_size, param=args.param, samples=args.samples,
                           stats_seed=args.stats_seed, verify_samples=args.verify_samples,
                           batch_size=args.batch_size, popsize=args.popsize,
                           diversity_samples=args.diversity_samples, held_out=args.held_out)
    check_options(opts)
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out}/ensemble.json")
    if args.plot and Path(args.plot).is_dir():
        raise UserError(f"--plot {args.plot} is a folder; give a file name such as {args.plot}/curve.png")
    _guard_optimize_outputs(args)
    runs = _report_runs(args.pools) if args.report else []
    if args.dry_run:
        print(json.dumps({"pools": args.pools, **opts.__dict__, "out": str(out), "plot": args.plot,
                          "cache_dir": args.cache_dir, "device": args.device, "classifier": args.classifier,
                          "force_classifier": args.force_classifier, "data_dir": args.data_dir,
                          "needs_real_data": needs_real(opts),
                          "report": [str(r / "report.html") for r in runs]}, indent=2))
        return 0
    _check_sizes(args.pools, args.batch_size, max(args.verify_samples, 2))
    ensemble, result = optimize(args.pools, opts, _evaluator(args, needs_real(opts)), StatsCache(args.cache_dir),
                                progress=None, log=_log)
    if args.plot:
        plot_history(ensemble.meta["history"], args.plot, title=f"{opts.method}: {opts.objective}")
    if runs:
        ensemble.meta["references"] = _references(ensemble, opts, args)
    ensemble.save(out)
    for run in runs:
        _add_to_report(run, ensemble, out)
    metrics = ensemble.meta["metrics"]
    clf = ensemble.meta["classifier"]
    _log(f"judged by classifier {clf['name']} ({clf['dataset']}, sha256 {clf['sha256'][:12]}…"
         f"{', FORCED' if clf.get('forced') else ''})")
    _log(f"wrote {out}: {count(len(ensemble.members), 'generator')}, weights "
         + ", ".join(f"{m.id}={w:.3f}" for m, w in zip(ensemble.members, ensemble.weights)))
    labels = {"estimated": "estimated on the search's samples", "estimated_held_out": "held-out",
              "verified": "verified"}
    for kind, label in labels.items():
        if metrics.get(kind):
            _log(f"{label:>9}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics[kind].items()))
    _log(f"time: {ensemble.meta['seconds']:.1f} s ({ensemble.meta['timings']})")
    return 0


def _report_runs(pools: list[str]) -> list[Path]:
    """The training runs whose report ``--report`` extends: each pool's parent, when it is a run folder."""
    runs = []
    for p in pools:
        run = Path(p).resolve().parent
        if not (run / "metrics.jsonl").is_file():
            raise UserError(f"--report: {p} is not the pool of a training run (no {run / 'metrics.jsonl'}); "
                            "--report extends runs/<name>/report.html, so give pools inside run folders")
        if run not in runs:
            runs.append(run)
    return runs


def _references(ensemble, opts, args) -> dict:
    """Real images and uniform noise scored like the ensemble's verified metrics (same n, same target,
    same judge); empty, with a note, when the real data is not there (the ensemble is kept either way)."""
    from mustangs.judge.evaluation import reference_scores, stats_of_tensor
    from mustangs.judge.metrics import parse_target, score

    dataset = ensemble.meta["dataset"]
    evaluator = _evaluator(args, need_real=False)(dataset)
    n = opts.verify_samples or opts.samples
    try:
        if evaluator.real is None:
            raise UserError(f"no real {dataset} test split ({evaluator.missing_real})")
        target = parse_target(opts.target, evaluator.num_classes, evaluator.real.hist)
        _log(f"references for the report: {n} real images and {n} noise samples")
        return reference_scores(lambda x: stats_of_tensor(evaluator.classifier, x, opts.batch_size),
                                lambda st: score(st, evaluator.real, target, ("fid", "tvd")), dataset,
                                tuple(ensemble.spec.sample_shape), [n], data_dir=args.data_dir)
    except UserError as exc:
        _log(f"note: the report shows no reference values ({exc})")
        return {}


def _add_to_report(run: Path, ensemble, out: Path) -> None:
    """64 samples of the ensemble into ``run/report/``, then rebuild ``run/report.html`` with its section."""
    from mustangs.io.images import save_grid
    from mustangs.report import ENSEMBLE_GRID, write_report

    save_grid(ensemble.sample(64, 0), run / "report" / ENSEMBLE_GRID, nrow=8)
    _log(f"report: {write_report(run, ensemble=out)} (ensemble section added)")


# --------------------------------------------------------------------------- front

def cmd_front(args) -> int:
    from ensembler.front import parse_objectives, plot_front, run_front, save_front
    from ensembler.stats import StatsCache

    objectives = parse_objectives(args.objectives)
    sample_terms = [m for m in objectives if m in ("recall", "coverage")]
    if args.diversity_samples < 0 or 0 < args.diversity_samples <= 5:
        raise UserError(f"--diversity-samples must be 0 (skip) or more than 5 (got {args.diversity_samples})")
    if sample_terms and not args.diversity_samples:
        raise UserError(f"objective {', '.join(sample_terms)} needs --diversity-samples > 0")
    out = Path(args.out)
    for flag, path in (("--out", out), ("--plot", Path(args.plot) if args.plot else None)):
        if path is not None and path.is_dir():
            raise UserError(f"{flag} {path} is a folder; give a file name")
    _guard_optimize_outputs(args, "front.json")
    need_real = bool(set(objectives) & {"fid", "recall", "coverage"}) or (args.target or "").strip() == "real"
    if args.dry_run:
        print(json.dumps({"pools": args.pools, "objectives": list(objectives), "target": args.target,
                          "max_size": args.max_size, "scalarisations": args.scalarisations, "budget": args.budget,
                          "max_points": args.max_points, "seed": args.seed, "samples": args.samples,
                          "stats_seed": args.stats_seed, "batch_size": args.batch_size,
                          "diversity_samples": args.diversity_samples, "out": str(out), "plot": args.plot,
                          "cache_dir": args.cache_dir, "device": args.device, "classifier": args.classifier,
                          "force_classifier": args.force_classifier, "data_dir": args.data_dir,
                          "needs_real_data": need_real}, indent=2))
        return 0
    _check_sizes(args.pools, args.batch_size, 2)
    doc = run_front(args.pools, objectives, _evaluator(args, need_real), StatsCache(args.cache_dir),
                    target=args.target, scalarisations=args.scalarisations, budget=args.budget, seed=args.seed,
                    max_size=args.max_size, max_points=args.max_points, samples=args.samples,
                    stats_seed=args.stats_seed, batch_size=args.batch_size, diversity_samples=args.diversity_samples,
                    out=out, progress=None, log=_log)
    save_front(doc, out)
    if args.plot:
        plot_front(doc, args.plot)
    o1, o2 = objectives
    clf = doc["classifier"]
    _log(f"judged by classifier {clf['name']} ({clf['dataset']}, sha256 {clf['sha256'][:12]}…"
         f"{', FORCED' if clf.get('forced') else ''})")
    _log(f"wrote {out}: {len(doc['points'])} Pareto-optimal ensembles ({doc['evaluations']} evaluations, "
         f"{doc['seconds']:.1f} s)" + (f", plot {args.plot}" if args.plot else ""))
    print(f"{'point':>5} {'size':>4} {o1:>10} {o2:>10}")
    for p in doc["points"]:
        print(f"{p['index']:>5} {p['size']:>4} {p['objectives'][o1]:>10.4f} {p['objectives'][o2]:>10.4f}")
    _log(f"export one with: serving export {out} --point I --out model.onnx")
    return 0


# --------------------------------------------------------------------------- evaluate

def _is_ensemble_file(path: Path) -> bool:
    return path.is_file() and path.name != "manifest.json"


def cmd_evaluate(args) -> int:
    from ensembler.ensemble import Ensemble
    from ensembler.optimize import checked_target, evaluate_table
    from ensembler.pools import open_pools
    from ensembler.stats import StatsCache

    path = Path(args.path)
    if not path.exists():
        raise UserError(f"{path} does not exist (give an ensemble.json or a pool folder)")
    if args.cache_dir:
        from mustangs.io.safety import guard_output

        guard_output(args.cache_dir, [("file", str(path))], flag="--cache-dir")
    ensemble = None
    if _is_ensemble_file(path):
        ensemble = Ensemble.load(path)
        pool_paths = [p for p in ensemble.meta.get("pools", []) if Path(p, "manifest.json").is_file()]
        if not pool_paths:
            raise UserError(f"{path} names no readable pool ({ensemble.meta.get('pools')}); "
                            "evaluate needs the pool to compare against")
        pools = open_pools(pool_paths)
    else:
        pools = open_pools([path])
    _check_sizes([p.root for p in pools.pools], args.batch_size, args.n)
    target_spec = args.target if args.target is not None else (ensemble.meta.get("target") if ensemble else None)
    evaluator = _evaluator(args, need_real=(target_spec or "").strip() == "real")(pools.dataset)
    target = checked_target(pools, evaluator, target_spec, _log, "showing tvd and is only (pass --data-dir for fid "
                            "and precision/recall/density/coverage/kid)")
    _log(f"evaluating {count(len(pools), 'generator')} alone, the uniform mixture"
         f"{' and the ensemble' if ensemble is not None else ''} on {args.n} samples each")
    rows = evaluate_table(pools, evaluator, args.n, args.seed, target, ensemble, StatsCache(args.cache_dir),
                          args.batch_size, diversity_samples=args.diversity_samples)
    if args.json:
        print(json.dumps({"target": target.tolist(), "n": args.n, "seed": args.seed, "classifier": evaluator.record,
                          "merged": pools.merged, "rows": rows}, indent=2))
        return 0
    clf = evaluator.record
    _log(f"classifier: {clf['name']} ({clf['dataset']}, sha256 {clf['sha256'][:12]}…"
          f"{', FORCED' if clf.get('forced') else ''})")
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("name", "kind")))  # a row may lack one
    width = max(len(r["name"]) for r in rows) + 2
    col = max([14] + [len(k) + 2 for k in keys])   # a column is wider than its name: headers never run together
    print(f"{'':{width}}" + "".join(f"{k:>{col}}" for k in keys))
    for r in rows:
        print(f"{r['name']:{width}}" + "".join(f"{r[k]:>{col}.4f}" if k in r else f"{'-':>{col}}" for k in keys))
    return 0


# --------------------------------------------------------------------------- sample

def cmd_sample(args) -> int:
    from mustangs.io.images import save_grid

    from ensembler.ensemble import Ensemble

    from mustangs.io.safety import check_suffix, check_writable, guard_output

    if args.n < 1 or args.n > 10_000:
        raise UserError(f"-n must be between 1 and 10000 (got {args.n})")
    guard_output(args.out, [("ensemble", args.ensemble)])
    ensemble = Ensemble.load(args.ensemble)
    guard_output(args.out, [("member file", str(m.path)) for m in ensemble.members]
                 + [("pool", str(m.path.parent)) for m in ensemble.members])
    check_suffix(args.out, (".png",), what="a PNG grid")
    check_writable(args.out)
    labels = None
    if args.labels is not None:
        from ensembler.ensemble import parse_labels

        labels = parse_labels(args.labels, ensemble.classes, args.n)
    x = ensemble.sample(args.n, args.seed, labels=labels)
    save_grid(x, args.out, nrow=args.nrow)
    _log(f"wrote {args.out} ({args.n} samples, seed {args.seed}"
         f"{', labels ' + args.labels if args.labels is not None else ''})")
    return 0


# --------------------------------------------------------------------------- import-lipizzaner

def cmd_import(args) -> int:
    from ensembler.lipizzaner import import_lipizzaner

    from mustangs.data.datasets import DATASETS

    if args.dataset not in DATASETS:
        raise UserError(f"unknown --dataset '{args.dataset}'; legal values: {', '.join(DATASETS)}")
    from mustangs.io.safety import check_writable, guard_output

    out = Path(args.out)
    guard_output(out, {"folder": args.folder})
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to replace it")
    if out.exists():
        _check_replaceable_pool(out)
    check_writable(out, is_dir=True)
    pool = import_lipizzaner(args.folder, out, dataset=args.dataset)
    _log(f"wrote pool {pool.root} with {count(len(pool), 'generator')} ({pool.spec.arch}, z={pool.spec.latent_dim})")
    groups: dict[str, list[str]] = {}
    for e in pool.entries:
        groups.setdefault(e.sha256, []).append(f"{e.id} ({e.origin.get('file', e.file)})")
    for ids in groups.values():
        if len(ids) > 1:
            _log(f"note: {', '.join(ids)} hold identical weights; the ensembler will merge them into one generator")
    return 0


def _check_replaceable_pool(out: Path) -> None:
    """``--force`` replaces only a pool this tool wrote: its manifest and the files it lists, nothing else."""
    from mustangs.io.atomic import clean_temp_files
    from mustangs.pool.format import read_pool

    if not out.is_dir() or not (out / "manifest.json").is_file():
        raise UserError(f"--force replaces only a pool written by Mustangs, and {out} is not one "
                        f"({'a file' if out.is_file() else 'no manifest.json'}); choose another --out")
    try:
        pool = read_pool(out)
    except UserError as exc:
        raise UserError(f"--force replaces only a pool written by Mustangs, and {out} is not a readable one ({exc})")
    clean_temp_files(out)
    own = {"manifest.json"} | {e.file for e in pool.entries}
    other = sorted(p.name for p in out.iterdir() if p.name not in own)
    if other:
        raise UserError(f"--force would delete files the pool {out} does not list ({', '.join(other[:3])}); "
                        "move them away or choose another --out")


# --------------------------------------------------------------------------- parser

def _compute_args(p) -> None:
    """``--batch-size``, ``--device`` and ``--cache-dir``: where and how generators are sampled."""
    p.add_argument("--batch-size", type=int_range(1, 1_000_000), default=1000, help="rows per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda[:i]")
    p.add_argument("--cache-dir", default=None, help="statistics cache (None: $MUSTANGS_CACHE/ensembler-stats)")


def _statistics_args(p) -> None:
    """``--samples`` and ``--stats-seed``: how each generator's statistics are drawn."""
    p.add_argument("--samples", type=int_range(2, 10_000_000), default=10_000, help="samples per generator for its statistics")
    p.add_argument("--stats-seed", type=seed_type, default=0, help="latent seed of the statistics samples")


def _scoring_args(p, diversity_help: str) -> None:
    """The compute options, ``--diversity-samples`` (what it feeds: ``diversity_help``) and the judge."""
    _compute_args(p)
    p.add_argument("--diversity-samples", type=int, default=1000, help=diversity_help)
    _judge_args(p)


def _judge_args(p) -> None:
    """``--classifier``, ``--force-classifier`` and ``--data-dir``: who judges, and where the real data is."""
    p.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                   help="the judge: a classifier folder or .json, or a NAME looked up in $MUSTANGS_CACHE/classifiers/ "
                        "then the package (None: the one for the pool's dataset)")
    p.add_argument("--force-classifier", action="store_true",
                   help="accept a classifier trained on another dataset than the pool's (recorded as forced)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the real dataset files (read for fid, recall/coverage and --target real)")


def build_parser() -> argparse.ArgumentParser:
    """The full ``ensembler`` argument parser."""
    from ensembler.methods import METHODS

    parser = ArgumentParser(prog="ensembler", description=__doc__, formatter_class=HelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    p = sub.add_parser("optimize", help="find mixture weights over one or more pools for an objective",
                       formatter_class=HelpFormatter)
    p.add_argument("pools", nargs="+", help="pool folders (runs/<name>/pool); merged when their networks agree")
    p.add_argument("--objective", default="tvd",
                   help="loss to minimise: tvd | fid | is | recall | coverage (the last three maximised) or a "
                        "weighted sum such as 'tvd+0.01*fid' or 'tvd+coverage'")
    p.add_argument("--target", default=None,
                   help="class distribution for tvd: uniform | real | 'CLASS:WEIGHT,...' e.g. '0:0.5,3:0.5' "
                        "(None = uniform)")
    p.add_argument("--method", default="cma", help=f"search method: {' | '.join(METHODS)}")
    p.add_argument("--budget", type=int_range(1, 10_000_000), default=2000, help="objective evaluations")
    p.add_argument("--seed", type=seed_type, default=0, help="search seed (same seed → same weights)")
    p.add_argument("--max-size", type=int_range(1, none=True), default=None,
                   help="keep at most this many generators with non-zero weight (None: no cap)")
    p.add_argument("--param", default="clip", help="weights on the simplex: clip (exact zeros) | softmax")
    p.add_argument("--popsize", type=int_range(2, 100_000), default=None, help="CMA-ES population (None: 4 + 3 ln K)")
    _statistics_args(p)
    p.add_argument("--verify-samples", type=int_range(0, 10_000_000), default=10_000,
                   help="fresh samples of the final ensemble for the verified metrics (0: skip)")
    _scoring_args(p, "feature samples per generator (and real) for precision/recall/density/coverage/kid and "
                     "the recall/coverage objectives (0: skip; reported only when the real split is there)")
    p.add_argument("--held-out", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the chosen weights on fresh statistics of every generator (as many samples, "
                        "another latent seed) that the search never saw: metrics.estimated_held_out, without the "
                        "search's optimism; --no-held-out skips them")
    p.add_argument("--out", default="ensemble.json", help="ensemble file to write")
    p.add_argument("--plot", default=None, help="write the convergence curve to this PNG")
    p.add_argument("--report", action="store_true",
                   help="add an ensemble section (weights, every candidate's fid and tvd, references, samples) to "
                        "the report.html of the training run each pool belongs to")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("front", help="the Pareto front of two objectives over mixtures (front.json + plot)",
                       formatter_class=HelpFormatter,
                       description="CMA-ES over scalarisations (1-a)*obj1 + a*obj2 (normalised), every evaluated "
                                   "mixture archived, the non-dominated ones kept: each front point is an ensemble "
                                   "in one JSON; 'serving export front.json --point I' exports one.")
    p.add_argument("pools", nargs="+", help="pool folders (runs/<name>/pool)")
    p.add_argument("--objectives", default="tvd,fid",
                   help="two metrics to trade off: tvd | fid | is | recall | coverage (the last three maximised)")
    p.add_argument("--target", default=None, help="class distribution for tvd (as for optimize; None = uniform)")
    p.add_argument("--max-size", type=int_range(1, none=True), default=None,
                   help="at most this many generators with non-zero weight per point (None: no cap)")
    p.add_argument("--scalarisations", type=int_range(2, 1_000), default=11, help="weighted sums searched (a = 0 .. 1)")
    p.add_argument("--budget", type=int_range(1, 10_000_000), default=400,
                   help="objective evaluations per scalarisation")
    p.add_argument("--max-points", type=int_range(2, 10_000), default=25, help="most front points kept (evenly spread)")
    p.add_argument("--seed", type=seed_type, default=0, help="search seed")
    _statistics_args(p)
    _scoring_args(p, "feature samples per generator (and real) for the recall/coverage objectives and the points' "
                     "precision/recall/density/coverage/kid (0: skip; used only when the real split is there)")
    p.add_argument("--out", default="front.json", help="front file to write")
    p.add_argument("--plot", default=None, help="write the front (objective 1 vs 2, size as colour) to this PNG")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")
    p.set_defaults(func=cmd_front)

    p = sub.add_parser("evaluate", help="metrics of every generator alone, the uniform mixture and the ensemble",
                       formatter_class=HelpFormatter)
    p.add_argument("path", help="ensemble.json or a pool folder")
    p.add_argument("-n", type=int_range(2, 10_000_000), default=10_000, help="samples per row")
    p.add_argument("--seed", type=seed_type, default=0, help="sampling seed")
    p.add_argument("--target", default=None, help="TVD target (None: the ensemble's, else uniform)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _scoring_args(p, "samples per row for precision/recall/density/coverage/kid (0: skip)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="write a PNG grid of samples from an ensemble", formatter_class=HelpFormatter)
    p.add_argument("ensemble", help="ensemble.json")
    p.add_argument("-n", type=int_range(1, 10_000), default=64, help="number of samples (1..10000)")
    p.add_argument("--seed", type=seed_type, default=0, help="sampling seed")
    p.add_argument("--nrow", type=int_range(1, 10_000), default=None, help="images per row (None: square)")
    p.add_argument("--labels", default=None,
                   help="conditional ensembles: comma-separated class names or indices, taken in turn for the n "
                        "samples ('Sneaker' = all sneakers; '0,1,...,9' with --nrow 10 = one class per column); "
                        "None: every class in turn")
    p.add_argument("--out", default="grid.png", help="PNG file to write")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("import-lipizzaner", help="convert Lipizzaner generator state dicts into a pool",
                       formatter_class=HelpFormatter)
    p.add_argument("folder", help="folder of torch.save'd four_layer_perceptron state dicts (*.pkl, *.pt, *.pth)")
    p.add_argument("--out", required=True, help="pool folder to write")
    p.add_argument("--dataset", default="mnist", help="dataset the generators were trained on: mnist | fashion-mnist")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_import)
    return parser


main = console_main(build_parser, "ensembler")


if __name__ == "__main__":
    sys.exit(main())
