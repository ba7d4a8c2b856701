"""``trainer train CONFIG``: train a grid of GANs by spatial coevolution (Lipizzaner / Mustangs).

Examples::

    trainer train configs/quickstart.yaml --out runs/qs
    trainer train configs/quickstart.yaml --out runs/qs coevolution.generations=40 seed=3
    trainer train configs/quickstart.yaml --dry-run          # print the resolved config and exit
    trainer train configs/quickstart.yaml --out runs/qs --resume   # continue a stopped run
    trainer train configs/quickstart.yaml --out runs/qs --workers 2  # 2 processes (torch.distributed)
    trainer train configs/mnist-3x3.yaml --data-dir ~/data/mnist --classifier ~/my-mnist-classifier
    torchrun --nproc-per-node 2 -m trainer train configs/quickstart.yaml --out runs/qs --resume
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from mustangs.errors import UserError


def _intermixed(parser) -> None:
    """Let ``KEY=VALUE`` overrides come before or after options (``CONFIG --out D k=v``)."""
    base = type(parser)

    class Intermixed(base):
        _inside = False

        def parse_known_args(self, args=None, namespace=None):
            if self._inside:
                return super().parse_known_args(args, namespace)
            self._inside = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inside = False

    parser.__class__ = Intermixed


def register(sub) -> None:
    """Add the ``train`` verb to the ``trainer`` CLI."""
    from mustangs.console.args import int_range
    from mustangs.console.formatting import HelpFormatter

    p = sub.add_parser("train", help="train a grid of GANs (coevolution) and write a generator pool",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. grid.height=3 coevolution.loss=bce")
    p.add_argument("--out", default=None, help="run folder; None means runs/<config name>")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest good checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and what would run, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no resolved config at start")
    p.add_argument("--data-dir", default=None,
                   help="folder with the dataset files (same as the override data.data_dir=DIR)")
    p.add_argument("--classifier", default=None, metavar="NAME_OR_DIR",
                   help="the judge of fid_cls scores and mixtures (same as eval.classifier=NAME_OR_DIR); None: the "
                        "config's, else the dataset's ($MUSTANGS_CACHE/classifiers/DATASET, then shipped)")
    p.add_argument("--force-classifier", action="store_true",
                   help="accept a classifier trained on another dataset (eval.force_classifier=true)")
    p.add_argument("--workers", type=int_range(1, 4096), default=1,
                   help="worker processes on this machine (torch.distributed ranks: gloo on CPU, NCCL with one "
                        "GPU each); each trains a block of cells. Under torchrun leave it at 1: ranks come "
                        "from torchrun")
    p.add_argument("--max-restarts", type=int_range(0, 1000), default=0, metavar="K",
                   help="with --workers and distribution.exchange=async: restart a rank that dies, alone, from its "
                        "own last checkpoint, up to K times in all, while the other ranks keep training (as "
                        "torchrun --max-restarts with one agent per rank, docs/scale-out.md); 0 = a death stops "
                        "the run")
    p.set_defaults(func=run)
    _intermixed(p)


def dry_run_text(cfg, out: Path, ranks: int = 1) -> str:
    """What ``--dry-run`` prints: the resolved config plus the plan (grid, ranks and exchange, scoring)."""
    from trainer.configio import to_yaml
    from trainer.grid import Grid

    grid = Grid(cfg.grid.height, cfg.grid.width)
    sub = grid.subpopulation_size if cfg.coevolution.exchange else 1
    lines = [to_yaml(cfg).rstrip(), "",
             f"# plan: {grid.size} cells on a {grid.height}x{grid.width} torus, sub-population {sub}, "
             f"{cfg.coevolution.generations} generations, loss={cfg.coevolution.loss}, "
             f"selection={cfg.coevolution.selection}, exchange={cfg.coevolution.exchange}, "
             f"init={_init_plan(cfg)}",
             f"# takeover: migration every {cfg.coevolution.migration_every} generation(s), a copy of another "
             f"lineage may replace a centre with probability {cfg.coevolution.foreign_replacement}"
             + (" (the reference recipe)" if cfg.coevolution.migration_every == 1
                and cfg.coevolution.foreign_replacement == 1.0 else ""),
             f"# output: {out}"]
    lines.append(f"# ranks: {_ranks_plan(cfg, ranks)}")
    lines.append(f"# scoring: {_scoring_plan(cfg)}")
    return "\n".join(lines)


def _init_plan(cfg) -> str:
    """The initialisation the cells get (``network.init``, with ``auto`` resolved for the arch)."""
    from mustangs.pool.networks import resolve_init

    init = resolve_init(cfg.network.init, cfg.network.arch)
    return init if cfg.network.init == init else f"{init} (network.init={cfg.network.init}, arch {cfg.network.arch})"


def _ranks_plan(cfg, ranks: int) -> str:
    """How the cells are split over ranks and how the ranks exchange (distribution.exchange)."""
    if ranks <= 1:
        return "1 process (distribution.exchange does not apply)"
    d = cfg.distribution
    text = f"{ranks} ranks, distribution.exchange={d.exchange}"
    if d.exchange == "sync":
        return text + " (every generation waits for all ranks; bit-identical to 1 process)"
    bound = "never waits" if d.max_staleness is None else f"waits while a copy is > {d.max_staleness} generations old"
    return (text + f" (each rank trains against the freshest neighbour centres it has; {bound}; not reproducible; "
            "checkpoints/rank-R per rank, resume with the same number of ranks)")


def _check_judge(cfg) -> None:
    """Refuse a wrong ``eval.classifier`` (unknown, or trained for another dataset) before any work."""
    from mustangs.errors import UserError
    from mustangs.judge import classifier_store

    try:
        ref = classifier_store.resolve(cfg.eval.classifier, cfg.data.dataset)
    except UserError as exc:
        if cfg.eval.classifier is not None:
            raise UserError(f"eval.classifier: {exc}") from None
        return  # no classifier for this dataset: the run trains unscored (and says so)
    classifier_store.check_dataset(ref, cfg.data.dataset, cfg.eval.force_classifier, what="data.dataset",
                                   force_hint="eval.force_classifier=true", log=lambda m: None)


def _scoring_plan(cfg) -> str:
    """What will judge the run: the classifier found (or why none), and the extra final metrics."""
    from mustangs.errors import UserError

    dataset = cfg.data.dataset
    try:
        from mustangs.judge import classifier_store

        ref = classifier_store.resolve(cfg.eval.classifier, dataset)
        classifier_store.check_dataset(ref, dataset, cfg.eval.force_classifier, what="data.dataset",
                                       force_hint="eval.force_classifier=true", log=lambda m: None)
    except UserError as exc:
        if cfg.eval.classifier is not None:
            return f"ERROR: {exc}"
        text = str(exc) if str(exc).startswith("no evaluation classifier") else f"no evaluation classifier ({exc})"
        return f"{text}; the run will train without fid_cls scores and keep uniform mixture weights"
    except ImportError:
        return "evaluation classifier module missing; no fid_cls scores"
    plan = f"fid_cls on classifier {ref.describe()}; mixture (1+1)-ES per cell"
    if cfg.eval.diversity_samples:
        plan += f"; final precision/recall/density/coverage/kid on {cfg.eval.diversity_samples} samples"
    return plan


def _guard_run_folder(out: Path, args, cfg) -> None:
    """The run folder must not be, contain or lie inside the config or the data folder.

    One exception: resuming with the run's own ``config.yaml`` (what the resume hint suggests);
    the run rewrites that file with the same resolved config.
    """
    from mustangs.io.safety import guard_output

    if args.out is not None and not args.out.strip():
        raise UserError("--out is empty; give a run folder such as runs/my-run")
    config = Path(args.config).resolve()
    own = args.resume and config == (out / "config.yaml").resolve()
    guard_output(out, {"config": None if own else args.config, "data folder": cfg.data.data_dir})
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")


def run(args) -> int:
    """Run ``trainer train``."""
    from trainer.config import load_train_config
    from trainer.run import train

    from mustangs.errors import UserError
    from trainer.distributed import launched_by_torchrun, split_cells

    overrides = list(args.overrides)
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.classifier is not None:
        overrides.append(f"eval.classifier={args.classifier}")
    if args.force_classifier:
        overrides.append("eval.force_classifier=true")
    args.overrides = overrides
    cfg = load_train_config(args.config, overrides)
    _check_judge(cfg)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    _guard_run_folder(out, args, cfg)
    cells = cfg.grid.height * cfg.grid.width
    if launched_by_torchrun() and args.workers != 1:
        raise UserError("--workers is for runs without torchrun; under torchrun the number of ranks is "
                        "--nnodes x --nproc-per-node")
    split_cells(cells, int(os.environ.get("WORLD_SIZE", args.workers)))  # refuse impossible layouts early
    if args.max_restarts and (args.workers < 2 or cfg.distribution.exchange != "async"):
        raise UserError("--max-restarts restarts one rank of an async run while the others keep training: it needs "
                        "--workers 2 or more and distribution.exchange=async (a sync rank cannot rejoin its group; "
                        "rerun a stopped sync run with --resume)")
    from mustangs.io.safety import human_bytes
    from trainer.sizes import check_train_memory

    need = check_train_memory(cfg)  # grid 3000x3000, latent_dim 1e9, ...: refused with the number, now
    if args.dry_run:
        print(dry_run_text(cfg, out, int(os.environ.get("WORLD_SIZE", args.workers))))
        print(f"# memory: about {human_bytes(need)} (estimate of the largest tensors)")
        return 0
    again = " ".join(shlex.quote(a) for a in [args.config, *args.overrides])  # for the resume hint
    job = (cfg, str(out), args.resume, args.quiet, again)
    if launched_by_torchrun():
        _leave(_rank_main(None, None, None, job))
    if args.workers > 1:
        return _spawn(args.workers, job, args.max_restarts)
    try:
        train(cfg, out, resume=args.resume, progress=False if args.quiet else None, config_path=again,
              quiet=args.quiet)
    except KeyboardInterrupt:
        return 130
    return 0


def _spawn(n: int, job, max_restarts: int = 0) -> int:
    """Start ``n`` ranks on this machine and wait for them; restart a dead async rank on its own.

    Sync ranks meet in a gloo/NCCL group (rank 0 hosts its rendezvous on 127.0.0.1); async ranks
    meet only in a TCPStore that this launcher hosts, so it outlives any rank. A rank ticks its
    slot in ``finished`` once it has passed the final barrier, which no rank passes before the
    writer has written the pool. A rank that dies after any tick (a crash while a communication
    library tears down its threads) cannot lose anything, so the run counts as done, with a
    warning. A death before it is a failed run, unless the run is async and restarts are left
    (``--max-restarts``): then only that rank starts again, with ``--resume``, from its own last
    checkpoint, and rejoins the ranks that kept training.
    """
    import multiprocessing.connection as mpc

    import torch.multiprocessing as mp

    from trainer.distributed import free_port

    cfg, out, resume, quiet, again = job
    asynchronous = cfg.distribution.exchange == "async"
    ctx = mp.get_context("spawn")
    port = free_port()
    store = None
    if asynchronous:   # the launcher holds the store: it survives any rank
        from datetime import timedelta

        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", port, None, True, timedelta(minutes=10), wait_for_workers=False)
    finished = ctx.Array("b", n, lock=False)
    init = f"tcp://127.0.0.1:{port}"

    def start(rank: int, again_job) -> object:
        proc = ctx.Process(target=_rank_process, args=(rank, n, init, again_job, finished), daemon=False)
        proc.start()
        return proc

    procs = {r: start(r, job) for r in range(n)}
    restarts = 0

    def stop_all() -> None:
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in procs.values():
            proc.join(10)
            if proc.is_alive():
                proc.kill()

    try:
        while procs:
            mpc.wait([p.sentinel for p in procs.values()])
            for rank, proc in list(procs.items()):
                if proc.is_alive():
                    continue
                proc.join()
                code = proc.exitcode
                del procs[rank]
                if code == 0:
                    continue
                if any(finished):
                    print(f"warning: worker {rank} died while shutting down (exit {code}) after the run had "
                          "completed; the results are complete", file=sys.stderr, flush=True)
                    continue
                if asynchronous and restarts < max_restarts and code not in (2, 130):
                    restarts += 1
                    print(f"rank {rank} died (exit {code}); restarting it from its last checkpoint "
                          f"(restart {restarts} of {max_restarts}); the other ranks keep training",
                          file=sys.stderr, flush=True)
                    procs[rank] = start(rank, (cfg, out, True, quiet, again))
                    continue
                stop_all()
                return 2 if code == 2 else (130 if code == 130 else 1)
    except KeyboardInterrupt:
        stop_all()
        return 130
    finally:
        del store
    return 0


def _rank_process(rank: int, world_size: int, init_method: str, job, finished) -> None:
    """Entry point of a spawned rank: exit with the rank's status (2 for a user error).

    It leaves through :func:`_leave` (no interpreter finalization).
    """
    def done() -> None:
        finished[rank] = 1

    os.environ["RANK"] = str(rank)   # as under torchrun: names this rank to fault injection in tests
    import threading

    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing semaphore; a rank leaves with os._exit, so it would
    # never be released and the launcher's resource tracker would warn about it at exit
    tqdm.set_lock(threading.RLock())
    code = _rank_main(rank, world_size, init_method, job, on_finished=done)
    if code == 0 and os.environ.get("MUSTANGS_TEST_ABORT_AT_EXIT") == str(rank):
        os.abort()  # tests only: stands in for a library crashing at teardown, after the run
    _leave(code)


def _leave(code: int) -> None:
    """End a rank's process with ``code`` once its output is flushed, skipping interpreter
    finalization: the group is gone, and late teardown of the communication library's threads
    must not turn a finished run into an abort."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _rank_main(rank, world_size, init_method, job, on_finished=None) -> int:
    """Join the process group, train this rank's block of cells, leave the group.

    Only rank 0 writes the run folder and shows progress; every rank reads the checkpoint
    on ``--resume`` (a restarted torchrun group resumes from the last complete one).
    Every rank waits at a final barrier until the writer has written the pool, so no rank
    tears down its connections while another still works; then ``on_finished`` is called.
    """
    import torch
    import torch.distributed as dist

    from mustangs.errors import UserError
    from trainer.distributed import Workers, init_process_group, layout_from_group, make_world, split_cells
    from trainer.exchange import RankLost
    from trainer.run import train

    cfg, out, resume, quiet, again = job
    cells = cfg.grid.height * cfg.grid.width
    store = None
    if cfg.distribution.exchange == "async" and int(world_size or os.environ.get("WORLD_SIZE", 1)) > 1:
        from trainer.store_world import join_store

        rank, world_size, store = join_store(rank, world_size, init_method)   # no process group: see store_world
        workers = Workers(rank, world_size, split_cells(cells, world_size))
    else:
        init_process_group(rank=rank, world_size=world_size, init_method=init_method)
        workers = layout_from_group(cells)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if workers.is_writer else (lambda msg: None)
    try:
        from trainer.grid import Grid

        nbr = Grid(cfg.grid.height, cfg.grid.width).neighbour_table(cfg.coevolution.exchange)
        if store is not None:
            from trainer.store_world import StoreWorld

            lost = cfg.distribution.lost_after
            world = StoreWorld(workers, nbr, cfg.distribution.max_staleness, store,
                               lost_after=120.0 if lost is None else lost)
        else:
            world = make_world(workers)
        train(cfg, out, resume=resume, progress=False if quiet else None, config_path=again, world=world, log=log,
              quiet=quiet)
        world.barrier()  # the writer has written the pool: everyone leaves together
        if on_finished is not None:
            on_finished()
    except UserError as exc:
        if workers.is_writer:
            from mustangs.errors import _one_line

            print(f"error: {_one_line(exc)}", file=sys.stderr, flush=True)   # one line, as exit_on_user_error
        return 2
    except RankLost as exc:   # async: a rank died for good while this one waited for it
        print(f"error: rank {workers.rank}: {exc}", file=sys.stderr, flush=True)
        return 1
    except (OSError, MemoryError) as exc:  # disk full, read-only folder, ...: one line, like the CLI
        from mustangs.errors import environment_message

        if workers.is_writer:
            print(f"error: {environment_message(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
