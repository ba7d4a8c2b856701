"""The training loop and its outputs (design.md §7): generations, metrics, samples,
checkpoints, the final pool and the report.

    runs/<name>/config.yaml      resolved config
    runs/<name>/metrics.jsonl    one line per generation (per-cell losses, fitness, lrs, loss choice,
                                 mixture weights, fid_cls scores, best)
    runs/<name>/samples/         gen-000001.png … (one row per cell)
    runs/<name>/checkpoints/     latest + previous verified checkpoints
    runs/<name>/pool/            one safetensors per distinct final centre generator + manifest.json
                                 (+ remembered generators with output.pool_members, trainer/remember.py)
    runs/<name>/report.html      heatmaps, curves, loss-choice counts, sample grids (PNGs in report/)
    runs/<name>/tensorboard/     TensorBoard event files (when tensorboard is installed)
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mustangs.data.datasets import load_dataset
from mustangs.errors import UserError
from mustangs.io.atomic import clean_temp_files, write_text_atomic
from mustangs.io.faults import kill_point
from mustangs.io.safety import check_writable
from mustangs.judge.metrics import FeatureStats
from trainer.checkpoint import block_tensors, has_checkpoint, load_checkpoint, restore_block, save_checkpoint
from trainer.coevolution import STREAM_FINAL, STREAM_SAMPLES, Coevolution, cell_generator
from trainer.config import TrainConfig
from trainer.configio import to_dict, to_yaml
from trainer.remember import PoolMemory, split_tensors
from trainer.run_folder import config_changes, foreign_files, remove_run_files
from trainer.scoring import Scorer, load_scorer
from trainer.straggler import straggle
from trainer.world import World


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is available; set device=auto or device=cpu")
    return torch.device(name)


def _rows_for_cells(tensors: dict[str, torch.Tensor], cells: list[int],
                    stored: list[int] | None = None) -> dict[str, torch.Tensor]:
    """The rows of a checkpoint that belong to ``cells``. A sync checkpoint holds the whole grid
    (layout-free); an async one holds one rank's cells (``stored``, in row order)."""
    if stored:
        where = {c: i for i, c in enumerate(stored)}
        missing = [c for c in cells if c not in where]
        if missing:
            raise UserError(f"this rank's checkpoint holds cells {stored[0]}..{stored[-1]}, not cell {missing[0]}; "
                            f"resume an async run with the number of workers it was started with")
        cells = [where[c] for c in cells]
    idx = torch.tensor(cells, dtype=torch.long)
    return {k: t.index_select(0, idx) for k, t in tensors.items()}


def _best(records: list[dict]) -> dict:
    """Best generator and best mixture of a generation (lowest fid)."""
    out = {}
    for kind, key in (("generator", "scores"), ("mixture", "mixture_scores")):
        cands = [(v, r["cell"], k) for r in records for k, v in r.get(key, {}).items() if k.startswith("fid_")]
        if cands:
            v, cell, k = min(cands, key=lambda t: t[0])
            out[kind] = {"cell": cell, k: v}
    return out


class Run:
    """One training run in ``out``: set-up or resume, the loop, and the outputs."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, resume: bool = False, world: World | None = None,
                 log: Callable[[str], None] | None = None, progress: bool | None = None,
                 config_path: str | None = None, scorer: Scorer | None | str = "auto", quiet: bool = False):
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.quiet = quiet  # --quiet: no resolved config at start (it is in config.yaml) and no bar
        self.world = world or World()
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.progress = progress
        self.config_path = config_path
        # Announce a step that has no progress of its own (plain progress repeats it while it runs).
        self._phase: Callable[..., None] = lambda text, announce=True: self.log(text) if announce else None
        self._scorer_arg = scorer

    # ------------------------------------------------------------------ set-up
    def _check_out(self) -> dict | None:
        """Refuse to clobber a run; on --resume return the checkpoint (meta, tensors) or None.

        A folder that holds only the files of a run that stopped before its first checkpoint
        (crash, OOM, full disk, kill) is a dead end otherwise: it is started over, with a note,
        with or without ``--resume``. Anything else in a non-empty folder is refused.
        """
        out = self.out
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a folder")
        if self.world.is_writer:
            check_writable(out, is_dir=True)  # a read-only or impossible folder fails now, not after a generation
        ck = self._checkpoint_dir()
        self._restart = False
        ranks = [p for p in sorted((out / "checkpoints").glob("rank-*")) if has_checkpoint(p)]
        if self._async and has_checkpoint(out / "checkpoints"):
            raise UserError(f"{out} holds a run trained with distribution.exchange=sync; resume it with that setting")
        if not self._async and ranks:
            raise UserError(f"{out} holds a run trained with distribution.exchange=async; resume it with that "
                            f"setting and the same number of workers")
        if has_checkpoint(ck):
            if not self.resume:
                raise UserError(f"{out} already holds a run with checkpoints; pass --resume to continue it, "
                                f"or choose another --out")
            return load_checkpoint(ck, self.log)
        if ranks:   # async: other ranks have checkpoints, this one not yet
            if not self.resume:
                raise UserError(f"{out} already holds a run with checkpoints; pass --resume to continue it, "
                                f"or choose another --out")
            print(f"note: rank {self.world.rank} of {out} has no checkpoint yet; its cells start from generation 0",
                  file=sys.stderr, flush=True)
            return None
        if not (out.is_dir() and any(out.iterdir())):
            if self.resume:
                self.log(f"note: nothing to resume in {out}; starting a new run")
            return None
        if getattr(self.world, "rejoining", False):   # a restarted async rank: the folder is its running job's
            print(f"note: rank {self.world.rank} rejoins {out} before any checkpoint; its cells start from "
                  f"generation 0", file=sys.stderr, flush=True)
            return None
        foreign = foreign_files(out)
        if foreign:
            raise UserError(f"{out} already holds files that are not an unfinished Mustangs run ({', '.join(foreign)}); "
                            f"choose another --out")
        self.log(f"note: {out} holds a run that stopped before its first checkpoint; starting it over")
        self._restart = True
        return None

    def setup(self):
        """Load data, classifier and state (fresh or from the checkpoint)."""
        cfg = self.cfg
        found = self._check_out()
        self.world.barrier()  # every rank has looked at --out before the writer touches it
        if found is not None:
            meta, _ = found
            changes = config_changes(meta.get("config", {}), to_dict(cfg))
            if changes:
                raise UserError(f"the config differs from the run's in {', '.join(changes[:5])}; resume with the "
                                f"config in {self.out / 'config.yaml'} (only coevolution.generations, device, "
                                f"threads and output settings may change)")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        elif self.world.size == 1:
            from mustangs.threads import auto_threads

            torch.set_num_threads(auto_threads())
        self.device = resolve_device(cfg.device)
        if not self.quiet:
            self.log(f"resolved config ({self.device}):\n" + to_yaml(cfg).rstrip())
        dataset = load_dataset(cfg.data.dataset, "train", data_dir=cfg.data.data_dir, image_size=cfg.data.image_size)
        self.log(f"data: {len(dataset)} {cfg.data.dataset} training samples; setting up the grid")
        if self._scorer_arg == "auto":
            self.scorer = load_scorer(cfg.data.dataset, self.device, self.log, data_dir=cfg.data.data_dir,
                                      classifier=cfg.eval.classifier, force=cfg.eval.force_classifier)
        else:
            self.scorer = self._scorer_arg
        self.coev = Coevolution(cfg, dataset, self.device, self.world, self.scorer)
        self.block = self.coev.init_block()
        self.memory = PoolMemory(cfg.output.pool_members, cfg.output.snapshot_every)
        self.metrics_bytes = 0
        if found is not None:
            meta, tensors = found
            tensors, remembered = split_tensors(tensors)
            if self.world.is_writer:   # only the writer remembers (it writes checkpoints and the pool)
                self.memory.restore(meta.get("remembered", []), remembered)
            restore_block(self.block, _rows_for_cells(tensors, self.block.cells, meta.get("cells")), self.device)
            self.block.generation = int(meta["generation"])
            self.block.last_fid = {int(k): v for k, v in meta.get("last_fid", {}).items()}
            self.metrics_bytes = int(meta.get("metrics_bytes", 0))
            self.log(f"resuming {self.out} from the checkpoint of generation {self.block.generation}")
            if self._async and not self.world.is_writer:   # ranks resume at their own generations: say which
                print(f"note: rank {self.world.rank} resumes its cells from its checkpoint of generation "
                      f"{self.block.generation}", file=sys.stderr, flush=True)
        self.board = None
        if self.world.is_writer:
            self.out.mkdir(parents=True, exist_ok=True)
            for folder in (self.out, self.out / "checkpoints", self.out / "samples", self.out / "report"):
                clean_temp_files(folder)  # what a killed atomic write left behind
            if self._restart:
                remove_run_files(self.out)
            write_text_atomic(self.out / "config.yaml", to_yaml(cfg))
            from trainer.tblog import RunBoard

            self.board = RunBoard.open(self.out, cfg.output.tensorboard,
                                       self.block.generation if found is not None else None, self.log)
        if self._async:
            self.world.barrier()   # the writer has (re)made the folder
            clean_temp_files(self._checkpoint_dir())   # this rank's own checkpoints: what a killed write left
        if self.world.is_writer or self._async:
            mpath = self._metrics_path()
            mpath.parent.mkdir(parents=True, exist_ok=True)
            if mpath.exists():
                with open(mpath, "r+b") as fh:  # drop lines written after the checkpoint
                    fh.truncate(self.metrics_bytes)
            else:
                mpath.touch()
        if self._async:
            self.world.start(self.block)   # publish this rank's boundary cells; from here on no rank waits
        kill_point("setup")

    # ------------------------------------------------------------------ the loop
    @property
    def _async(self) -> bool:
        """Whether ranks exchange asynchronously (``distribution.exchange: async`` with several ranks)."""
        return bool(getattr(self.world, "asynchronous", False))

    def _checkpoint_dir(self) -> Path:
        """``checkpoints/`` (sync: one whole-grid checkpoint) or ``checkpoints/rank-R/`` (async: per rank)."""
        ck = self.out / "checkpoints"
        return ck / f"rank-{self.world.rank}" if self._async else ck

    def _metrics_path(self) -> Path:
        """``metrics.jsonl`` (sync: the writer's) or ``metrics/rank-R.jsonl`` (async: every rank its own,
        merged into ``metrics.jsonl`` at the end)."""
        return self.out / "metrics" / f"rank-{self.world.rank}.jsonl" if self._async else self.out / "metrics.jsonl"

    def _checkpoint(self) -> None:
        if self._async:   # each rank its own block, at its own generation
            self._last_ckpt = self.block.generation
            meta = {"config": to_dict(self.cfg), "metrics_bytes": self.metrics_bytes, "cells": list(self.block.cells),
                    "last_fid": {str(c): v for c, v in sorted(self.block.last_fid.items())}}
            save_checkpoint(self._checkpoint_dir(), self.block.generation, block_tensors(self.block), meta)
            return
        # Every rank contributes its block; the checkpoint holds the whole grid in cell order, so it
        # can be resumed with any number of workers.
        tensors = self.world.gather_tensors(block_tensors(self.block))
        last_fid = self.world.gather_objects([[c, v] for c, v in sorted(self.block.last_fid.items())])
        self._last_ckpt = self.block.generation
        if not self.world.is_writer:
            return
        meta = {"config": to_dict(self.cfg), "metrics_bytes": self.metrics_bytes,
                "last_fid": {str(c): v for c, v in last_fid}, "cells": list(range(self.coev.grid.size))}
        if self.memory.enabled:   # the remembered generators, so --resume keeps them
            tensors = {**tensors, **self.memory.tensors()}
            meta["remembered"] = self.memory.meta()
        save_checkpoint(self.out / "checkpoints", self.block.generation, tensors, meta)

    def _write_metrics(self, line: dict) -> None:
        if not (self.world.is_writer or self._async):
            return
        data = (json.dumps(line) + "\n").encode()
        path = self._metrics_path()
        try:  # an append, not an atomic write: a resume truncates it back to the checkpoint's length
            with open(path, "ab") as fh:
                fh.write(data)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(path)
            raise
        self.metrics_bytes += len(data)

    def _samples(self, gen: int) -> None:
        """PNG grid: one row per cell, fixed latents per cell so rows are comparable over time."""
        from mustangs.io.images import save_grid

        k = self.cfg.output.samples_per_cell
        z = torch.stack([torch.randn(k, self.cfg.network.latent_dim,
                                     generator=cell_generator(self.cfg.seed, c, STREAM_SAMPLES))
                         for c in self.block.cells]).to(self.device)
        z = self.coev.with_balanced_labels(z)   # conditional: each row shows the classes in turn
        x = self.world.gather_tensors({"x": self.coev.sample_centres(self.block, z)})["x"]
        x = x.reshape(-1, *x.shape[2:]).cpu()
        if self.world.is_writer:
            save_grid(x, self.out / "samples" / f"gen-{gen:06d}.png", nrow=k)
            if self.board is not None:
                self.board.samples(gen, x, nrow=k)

    def run(self) -> dict:
        """Set up, train to ``coevolution.generations``, write pool and report; returns the summary."""
        threads = torch.get_num_threads()
        self.board = None
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)  # config.threads only lasts for this run
            if self.board is not None:
                self.board.close()

    def _run(self) -> dict:
        from mustangs.console.progress import PlainProgress, progress_bar

        self.setup()
        cfg, co = self.cfg, self.cfg.coevolution
        total, nb = co.generations, self.coev.batches
        self._last_ckpt = self.block.generation if self.resume else -1
        bar = progress_bar(total=total * nb, initial=min(self.block.generation, total) * nb, unit="batch",
                           progress=self.progress if self.world.is_writer else False, log=self.log, ticker=True)
        # No terminal (a log file, Slurm, CI) and no --quiet: plain lines instead of a bar, one at
        # least every 10 s (batch k/N and rate inside a generation, then what runs after its batches,
        # up to the final scores) and one at the end of each generation.
        plain = isinstance(bar, PlainProgress)
        self._phase = (lambda text, announce=True: bar.phase(text, announce)) if plain else (
            lambda text, announce=True: self.log(text) if announce else None)

        def on_batch(b: int) -> None:
            bar.update(1)
            if b == nb - 1:
                self._phase(f"gen {gen}/{total}: fitness, selection, mutation and scoring", announce=False)
        if plain:
            self.log(f"training {total - self.block.generation} generations of {nb} batches on "
                     f"{self.coev.grid.size} cells")
        best_str = "n/a"
        try:
            while self.block.generation < total:
                gen = self.block.generation + 1
                if plain:
                    bar.restart(f"gen {gen}/{total}", total=nb)
                else:
                    bar.set_description(f"gen {gen}/{total}")
                t0 = time.perf_counter()
                every = cfg.eval.every
                score = every is not None and (gen % every == 0 or gen == total)
                records = self.coev.step(self.block, on_batch=on_batch, score=score)
                straggle(self.world.rank, gen, time.perf_counter() - t0)   # tests and benchmarks only
                if self._async:
                    self.world.published(self.block)
                    for rec, c in zip(records, self.block.cells):   # how old each neighbour's copy was
                        rec["staleness"] = self.world.staleness(self.coev.nbr[c].tolist())
                records = self.world.gather_objects(records)
                best = _best(records)
                from trainer.lineage import lineage_summary

                centres = self.world.lineage_weights(self.block.G)
                lineages = lineage_summary(records, centres.params)
                if self.world.is_writer:   # output.pool_members: lineage-best, snapshots (sync runs only)
                    self.memory.observe(gen, records, centres.params, centres.buffers)
                del centres
                line = {"generation": gen, "seconds": round(time.perf_counter() - t0, 3), "cells": records,
                        "best": best, "lineages": lineages}
                comm = self.world.take_comm_stats()
                if comm is not None:  # exchange cost on the writer rank (multi-process runs)
                    line["exchange"] = comm
                self._write_metrics(line)
                kill_point("generation")
                if self.board is not None:
                    self.board.generation(gen, records, best)
                    self.board.lineages(gen, lineages)
                if "mixture" in best:
                    k = next(k for k in best["mixture"] if k.startswith("fid_"))
                    best_str = f"{best['mixture'][k]:.2f}"
                    bar.set_postfix_str(f"best mixture {k}={best_str}")
                if plain:
                    score_str = f"; best mixture {k}={best_str}" if "mixture" in best else ""
                    self.log(f"gen {gen}/{total}: {line['seconds']:.1f} s{score_str}")
                    self._phase(f"gen {gen}/{total}: samples and checkpoint", announce=False)
                se = cfg.output.sample_every
                if ((se is not None and gen % se == 0) or gen == total) and not self._async:
                    self._samples(gen)
                if gen % cfg.output.checkpoint_every == 0 or gen == total:
                    if self.board is not None:
                        self.board.flush()   # events up to the checkpoint are on disk with it
                    self._checkpoint()
        except KeyboardInterrupt:
            bar.close()
            cmd = f"trainer train {self.config_path or 'CONFIG'} --out {self.out} --resume"
            where = (f"the checkpoint of generation {self._last_ckpt} is kept"
                     if self._last_ckpt > 0 else "no checkpoint was written yet")
            self.log(f"interrupted during generation {self.block.generation + 1}; {where}. Continue with: {cmd}")
            raise
        if self._async:
            self._join(total)
        try:
            return self.finish()
        finally:
            bar.close()

    def _join(self, total: int) -> None:
        """Async: checkpoint, wait until every rank has trained ``total`` generations, then write what
        needs the whole grid (the last samples, the merged ``metrics.jsonl``)."""
        if self._last_ckpt != self.block.generation:
            self._checkpoint()
        self._phase(f"rank 0 done; waiting for every rank to reach generation {total}")
        waited = self.world.finish()
        if waited > 1:
            self.log(f"waited {waited:.1f} s for the other ranks to finish")
        self._samples(total)
        if self.world.is_writer:
            merge_rank_metrics(self.out, self.world.size)

    # ------------------------------------------------------------------ outputs
    def final_scores(self, mix_w: list[list[float]]) -> tuple[list[dict], list[dict]]:
        """Per-cell generator scores and scores of the per-cell mixtures ``mix_w`` (all cells), with
        ``eval.fid_samples`` samples."""
        if self.scorer is None:   # one (empty) entry per cell of the grid, on every rank
            return [{} for _ in range(self.coev.grid.size)], [{} for _ in range(self.coev.grid.size)]
        from mustangs.data.datasets import POINT_DATASETS, point_modes
        from mustangs.judge.metrics import ModeStats, mode_scores, mode_stats

        n = self.cfg.eval.fid_samples
        m = min(self.cfg.eval.diversity_samples or 0, n)
        diversity = m > 5 and self.scorer.real_features_fn is not None
        local_stats, local_feats, local_modes = [], [], []
        points = None
        if self.cfg.data.dataset in POINT_DATASETS:
            centres, std = point_modes(self.cfg.data.dataset)
            points = (centres.numpy(), std)
        for i, c in enumerate(self.block.cells):
            g = cell_generator(self.cfg.seed, c, STREAM_FINAL)
            z = self.coev.with_balanced_labels(torch.randn(n, self.cfg.network.latent_dim, generator=g).to(self.device))
            params = {k: t[i:i + 1] for k, t in self.block.G.params.items()}
            buffers = {k: t[i:i + 1] for k, t in self.block.G.buffers.items()}
            with torch.no_grad():
                x = torch.cat([self.coev.Gnet.apply(params, buffers, z[None, j:j + 1000], train=False)[0]
                               for j in range(0, n, 1000)])
            local_stats.append(self.scorer.stats(x))
            if points is not None:
                ms = mode_stats(x.cpu().numpy(), *points)
                local_modes.append([ms.n, ms.nearest.tolist(), ms.close.tolist()])
            if diversity:
                from mustangs.judge.features import features_of_tensor

                local_feats.append(torch.from_numpy(features_of_tensor(self.scorer.classifier, x[:m])))
        all_stats = self.world.gather_stats(local_stats)
        gen_scores = [self.scorer.score(s, ("fid", "tvd", "is")) for s in all_stats]
        nbr = self.coev.nbr
        mix_scores = [self.scorer.score(FeatureStats.mix([all_stats[int(j)] for j in nbr[c]], mix_w[c]),
                                        ("fid", "tvd", "is")) for c in range(len(all_stats))]
        if points is not None:   # 2-D toys: mode coverage of every generator and cell mixture
            modes = [ModeStats(n, np.asarray(a), np.asarray(b)) for n, a, b in self.world.gather_objects(local_modes)]
            for c, ms in enumerate(modes):
                gen_scores[c].update(mode_scores(ms))
                mix_scores[c].update(mode_scores(ModeStats.mix([modes[int(j)] for j in nbr[c]], mix_w[c])))
        if diversity:
            from trainer.pool_scores import diversity_for_cells

            feats = self.world.gather_tensors({"f": torch.stack(local_feats)})["f"].numpy()
            try:
                real_f = self.scorer.real_features_fn(m)
            except UserError as exc:
                self.log(f"warning: no real features for precision/recall/density/coverage/kid ({exc})")
            else:
                div_gen, div_mix = diversity_for_cells(real_f, list(feats), nbr.numpy(), mix_w)
                for scores, extra in zip(gen_scores + mix_scores, div_gen + div_mix):
                    scores.update(extra)
        return gen_scores, mix_scores

    def inception_scores(self, states: list[dict], mix_w: list[list[float]]) -> tuple[list[dict], list[dict]] | None:
        """``fid_incep*``/``kid_incep*`` of every cell's final generator and mixture (writer only), or
        None when ``eval.inception`` and the data say no (see :func:`trainer.pool_scores.inception_wanted`)."""
        from mustangs.pool.networks import build_generator
        from trainer.pool_scores import inception_for_cells, inception_wanted

        cfg = self.cfg
        if not inception_wanted(cfg.eval.inception, tuple(self.coev.spec.sample_shape)):
            return None
        n = cfg.eval.inception_samples
        fns = []
        for c, sd in enumerate(states):
            g = build_generator(self.coev.spec)
            g.load_state_dict(sd)
            g = g.to(self.device).eval()
            rng = cell_generator(cfg.seed, c, STREAM_FINAL)   # the latents of the final classifier scores
            fns.append(lambda b, g=g, rng=rng: g(torch.randn(b, cfg.network.latent_dim, generator=rng).to(self.device)))

        def real_x() -> torch.Tensor:
            from mustangs.judge.evaluation import subset_indices

            data = load_dataset(cfg.data.dataset, "test", data_dir=cfg.data.data_dir, image_size=cfg.data.image_size)
            idx = subset_indices(len(data), n, data.labels)
            return data.data if idx is None else data.data[idx]

        with torch.no_grad():
            return inception_for_cells(fns, n, real_x, cfg.data.dataset, self.coev.nbr.numpy(), mix_w, self.log)

    def finish(self) -> dict:
        """Final scores, the pool, the report; returns a summary (also stored in the manifest)."""
        from mustangs.pool.format import write_pool

        cfg = self.cfg
        if self._last_ckpt != self.block.generation:
            self._checkpoint()
        mix_w_all = self.world.gather_objects([w.tolist() for w in self.block.mix_w])
        if self.scorer is not None:
            self._phase(f"final scores: {cfg.eval.fid_samples} samples of every cell's generator and mixture")
        gen_scores, mix_scores = self.final_scores(mix_w_all)
        grid = self.coev.grid
        ids = [f"r{r}c{c}" for r, c in (grid.coords(i) for i in range(grid.size))]
        G_all = self.world.gather_state(self.block.G)   # every rank's centre generators
        states = [G_all.member_state_dict(i) for i in range(grid.size)]
        lineage_g = self.world.gather_tensors({"g": self.block.lineage_g})["g"].tolist()
        if not self.world.is_writer:
            return {}
        incep = self.inception_scores(states, mix_w_all)
        if incep is not None:
            for scores, extra in zip(gen_scores + mix_scores, incep[0] + incep[1]):
                scores.update(extra)
        from mustangs.pool.networks import build_generator

        gens, seen, alias = [], {}, {}
        for i, sd in enumerate(states):
            digest = hashlib.sha256(b"".join(t.cpu().numpy().tobytes() for t in sd.values())).hexdigest()
            if digest in seen:   # identical weights: keep one file, point the duplicate's mixtures at it
                alias[ids[i]] = seen[digest]
                continue
            seen[digest] = ids[i]
            m = build_generator(self.coev.spec)
            m.load_state_dict(sd)
            origin = {"cell": list(grid.coords(i)), "generation": self.block.generation, "seed": cfg.seed,
                      "run": self.out.name, "loss": cfg.coevolution.loss, "lineage": list(grid.coords(lineage_g[i])),
                      "roles": ["centre"]}
            gens.append((ids[i], m, {"origin": origin, "scores": gen_scores[i]}))
        gens += self._remembered(seen, {gid: info["origin"] for gid, _, info in gens})
        nbr = self.coev.nbr
        mixtures = []
        for c in range(grid.size):
            w: dict[str, float] = {}
            for j, wj in zip(nbr[c].tolist(), mix_w_all[c]):
                gid = alias.get(ids[j], ids[j])
                w[gid] = w.get(gid, 0.0) + wj
            mixtures.append({"cell": list(grid.coords(c)), "weights": w, "scores": mix_scores[c]})
        summary = self._summary(ids, gen_scores, mix_scores)
        if self.board is not None:
            self.board.final(self.block.generation, ids, gen_scores, mix_scores)
        extra = {"run": {"name": self.out.name, "generations": self.block.generation,
                         "grid": [grid.height, grid.width], "loss": cfg.coevolution.loss},
                 "summary": summary}
        extra["classifier"] = self.scorer.record if self.scorer is not None else None
        extra["classifier_sha256"] = self.scorer.record.get("sha256") if self.scorer is not None else None
        if cfg.output.report and self.scorer is not None:  # what the report's numbers mean
            from mustangs.judge.evaluation import reference_scores

            self._phase("reference scores: real images and uniform noise on the same protocols")
            try:
                extra["references"] = reference_scores(
                    self.scorer.stats, lambda st: self.scorer.score(st, ("fid", "tvd")), cfg.data.dataset,
                    tuple(self.coev.spec.sample_shape), (cfg.mixture.eval_samples, cfg.eval.fid_samples),
                    data_dir=cfg.data.data_dir)
            except UserError as exc:  # the pool matters more than its reference values
                self.log(f"note: no reference scores in the report ({exc})")
        write_pool(self.out / "pool", self.coev.spec, cfg.data.dataset, gens, mixtures=mixtures, extra=extra)
        kill_point("report")
        if cfg.output.report:
            from mustangs.report import write_report

            self._phase("writing the report", announce=False)
            write_report(self.out)
        for folder in (self.out, self.out / "checkpoints", self.out / "samples", self.out / "report"):
            clean_temp_files(folder)
        for line in self._summary_lines(summary):
            self.log(line)
        return summary

    def _remembered(self, seen: dict[str, str], origins: dict[str, dict]) -> list[tuple]:
        """Pool entries of the remembered generators (``output.pool_members``). One whose weights are
        already in the pool is not written twice: its role joins that entry's ``origin.roles``."""
        from mustangs.pool.networks import build_generator

        cfg, out = self.cfg, []
        for mem in self.memory.members():
            digest = hashlib.sha256(b"".join(t.cpu().numpy().tobytes() for t in mem.weights.values())).hexdigest()
            if digest in seen:
                roles = origins[seen[digest]]["roles"]
                if mem.role not in roles:
                    roles.append(mem.role)
                continue
            seen[digest] = mem.id
            m = build_generator(self.coev.spec)
            m.load_state_dict(mem.weights)
            origin = {"cell": mem.cell, "generation": mem.generation, "seed": cfg.seed, "run": self.out.name,
                      "loss": cfg.coevolution.loss, "lineage": mem.lineage, "roles": [mem.role]}
            if mem.score:
                origin["score"] = dict(mem.score)   # the per-generation score it was kept for
            origins[mem.id] = origin
            out.append((mem.id, m, {"origin": origin}))
        return out

    @staticmethod
    def _summary(ids, gen_scores, mix_scores) -> dict:
        def best(scores):
            # lowest classifier FID; Inception FID only when there is no classifier (never mixed)
            cands = [(v, i, k) for i, s in enumerate(scores) for k, v in s.items() if k.startswith("fid_cls")]
            cands = cands or [(v, i, k) for i, s in enumerate(scores) for k, v in s.items() if k.startswith("fid_")]
            if not cands:
                return None
            v, i, k = min(cands)
            return {"id": ids[i], **scores[i]}

        return {"best_generator": best(gen_scores), "best_mixture": best(mix_scores)}

    def _summary_lines(self, summary: dict) -> list[str]:
        lines = [f"done: {self.block.generation} generations; pool in {self.out / 'pool'}"]
        for kind in ("best_generator", "best_mixture"):
            s = summary.get(kind)
            if s:
                lines.append(f"{kind.replace('_', ' ')} ({s['id']}): " + ", ".join(
                    f"{k}={v:.4g}" for k, v in s.items() if k != "id"))
        if self.cfg.output.report and self.world.is_writer:
            lines.append(f"report: {self.out / 'report.html'}")
        return lines


def merge_rank_metrics(out: Path, ranks: int) -> None:
    """Async runs: ``metrics/rank-R.jsonl`` → one ``metrics.jsonl`` line per generation with every cell
    (as a sync run writes it); ``seconds`` is the slowest rank's, ``ranks`` keeps each rank's own."""
    by_gen: dict[int, dict[int, dict]] = {}
    for r in range(ranks):
        path = out / "metrics" / f"rank-{r}.jsonl"
        for text in path.read_text().splitlines() if path.exists() else []:
            line = json.loads(text)
            by_gen.setdefault(int(line["generation"]), {})[r] = line
    lines = []
    for gen in sorted(by_gen):
        parts = [by_gen[gen][r] for r in sorted(by_gen[gen])]
        cells = [c for p in parts for c in p["cells"]]
        lines.append(json.dumps({"generation": gen, "seconds": max(p["seconds"] for p in parts), "cells": cells,
                                 "best": _best(cells),
                                 "ranks": [{"rank": r, "seconds": by_gen[gen][r]["seconds"],
                                            **({"exchange": by_gen[gen][r]["exchange"]}
                                               if "exchange" in by_gen[gen][r] else {})}
                                           for r in sorted(by_gen[gen])]}))
    write_text_atomic(out / "metrics.jsonl", "".join(x + "\n" for x in lines))


def train(cfg: TrainConfig, out: str | Path, **kwargs) -> dict:
    """Train ``cfg`` into folder ``out`` (see :class:`Run`); returns the summary."""
    return Run(cfg, out, **kwargs).run()
