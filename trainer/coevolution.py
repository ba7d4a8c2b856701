"""One generation of spatial coevolution for the block of cells this process owns (design.md §3).

The recipe, in the order of :meth:`Coevolution.step`: exchange → fitness → select → train →
mutate → replace → mixture. (Checkpointing is the loop's job, see ``trainer/run.py``; scoring is
:mod:`trainer.scoring`.)

Scale-out seam (issue 6): a process owns a contiguous :class:`Block` of cells; everything it
needs from other cells comes through its :class:`~trainer.world.World` — ``gather_centres`` (all cells'
G/D with optimizer state: the centres at the start of a generation, and with ``adversary:
neighbour`` the live trained pairs before each mini-batch so adversaries adapt; the identity in one process, an all_gather or
neighbour send/recv across ranks) and ``gather_stats``/``gather_objects`` for evaluation and
metrics.

Choices where design.md §3 leaves room (each keeps its promises):

* Fitness of generators is always measured with BCE, whatever loss Mustangs drew, so
  candidates are compared on one yardstick; lower is better.
* Adversaries during training (``coevolution.adversary``). ``selected`` (the default) is the
  Lipizzaner reference recipe: each cell's tournament-selected G trains against the
  tournament-selected D (and vice versa) on every mini-batch. The reference code "draws a random
  opponent" each mini-batch, but with its population size of 1 tournament selection returns a
  population holding only the winner, so the draw always returns the selected opponent. The
  neighbourhood acts through fitness, selection, replacement and the mixture. ``neighbour`` is an
  experiment: the selected G (D) faces a live neighbourhood D (G) drawn per mini-batch (all cells
  advance in lockstep; one collective per mini-batch across ranks). It trains far slower
  (quickstart, 2×2 MLP grid, BCE, 600 steps per cell, mean per-cell fid_cls2k: ``neighbour`` 2078,
  ``selected`` 1466, isolated single GANs 1525, a plain torch.optim GAN 1475): every D sees
  each G only 1/S of the time and stays near chance. Without selection (``selection: false``)
  the reference's defender population is the whole neighbourhood, so its faithful counterpart
  is ``neighbour``; with ``selected`` and no selection no two cells interact in training.
* Replacement compares the trained G (D) with the centre against the generation-start
  sub-population on the same batch and latents used for fitness. ``replacement: crowding``
  (issue 19) adds one test after it: a copy of another lineage may not replace the centre while
  its lineage holds a strict majority of the neighbourhood's centres (:func:`crowded`).
* With ``exchange: false`` the neighbourhood is the cell alone (isolated GANs, "PaGAN"). Every random draw comes from
the cell's own ``torch.Generator``s (never the global RNG, never a per-process stream), so
results do not depend on how cells are split over processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mustangs.data.datasets import ArrayDataset
from mustangs.judge.metrics import FeatureStats
from mustangs.pool.networks import NetSpec, balanced_labels, build_discriminator, build_generator, dcgan_init, resolve_init
from trainer import losses, wasserstein
from trainer.batched import NetState, StackedNet, adam_step, bmm_supported
from trainer.config import TrainConfig
from trainer.grid import Grid
from trainer.scoring import Scorer
from trainer.world import World

# Independent per-cell streams, derived from (seed, cell, purpose) with numpy's SeedSequence.
# New purposes go at the end, so the existing streams (and every recorded run) stay as they are.
STREAM_INIT, STREAM_DATA, STREAM_TRAIN, STREAM_EVAL, STREAM_FINAL, STREAM_SAMPLES, STREAM_WEIGHTS = range(7)


def cell_seed(seed: int, cell: int, purpose: int) -> int:
    """A 63-bit seed for ``purpose`` of global cell ``cell`` (independent of process layout)."""
    ss = np.random.SeedSequence(entropy=seed, spawn_key=(cell, purpose))
    return int(ss.generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)


def cell_generator(seed: int, cell: int, purpose: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``purpose`` of cell ``cell``."""
    return torch.Generator().manual_seed(cell_seed(seed, cell, purpose))


# --------------------------------------------------------------------------- state

@dataclass
class Block:
    """The cells this process owns (global indices ``cells``) and all their evolving state."""

    cells: list[int]
    G: NetState                   # centre generators [C, ...]
    D: NetState                   # centre discriminators [C, ...]
    lr_g: torch.Tensor            # [C] float64 (on the training device)
    lr_d: torch.Tensor            # [C] float64
    mix_w: torch.Tensor           # [C, S] float64 mixture weights over each neighbourhood (CPU)
    rng_train: list[torch.Generator]  # per cell: batches, latents, tournaments, loss draws, mutation
    rng_eval: list[torch.Generator]   # per cell: scoring latents, mixture ES perturbations
    data_idx: torch.Tensor        # [C, M] dataset indices of each cell's fixed subset (data dieting)
    generation: int = 0           # generations completed
    lineage_g: torch.Tensor | None = None  # [C] long (CPU): founder cell of each centre generator
    lineage_d: torch.Tensor | None = None  # [C] long (CPU): founder cell of each centre discriminator
    last_fid: dict[int, dict] = field(default_factory=dict)  # cell -> last scores (for the pool)

    def __len__(self) -> int:
        return len(self.cells)

    def __post_init__(self):
        if self.lineage_g is None:   # every cell founds its own lineage
            self.lineage_g = torch.tensor(self.cells, dtype=torch.long)
        if self.lineage_d is None:
            self.lineage_d = torch.tensor(self.cells, dtype=torch.long)


def _weights(state: NetState, idx: torch.Tensor) -> tuple[dict, dict]:
    """Params and buffers of members ``idx`` (copies; no optimizer state)."""
    idx = idx.to(state.step.device)
    return ({k: t.index_select(0, idx) for k, t in state.params.items()},
            {k: t.index_select(0, idx) for k, t in state.buffers.items()})


def _as_adversary(state: NetState) -> tuple[dict, dict]:
    """Params of ``state`` without a copy (an adversary only reads them, and its step is over
    before they change) and copies of its buffers (a train-mode pass of a BatchNorm
    adversary must not move the trained network's running statistics)."""
    return dict(state.params), {k: t.clone() for k, t in state.buffers.items()}


def conditional_classes(cfg: TrainConfig, dataset: ArrayDataset) -> tuple[str, ...] | None:
    """The class names a conditional run trains on (``network.conditional``), None otherwise."""
    if not cfg.network.conditional:
        return None
    from mustangs.data.class_names import class_names
    from mustangs.errors import UserError

    if dataset.labels is None or not dataset.num_classes:
        raise UserError(f"network.conditional=true but dataset {dataset.name} was loaded without labels; "
                        f"set network.conditional=false")
    return tuple(class_names(cfg.data.dataset, int(dataset.num_classes)))


def tournament(fitness: torch.Tensor, size: int, generators: list[torch.Generator]) -> torch.Tensor:
    """Per cell: ``size`` distinct contestants drawn from the cell's RNG; the lowest fitness wins.

    ``fitness`` is ``[C, S]`` (lower is better); returns winner positions ``[C]``.
    """
    fit = fitness.detach().cpu()
    out = []
    for c, g in enumerate(generators):
        contestants = torch.randperm(fit.shape[1], generator=g)[:size]
        out.append(contestants[torch.argmin(fit[c, contestants])])
    return torch.stack(out)


def crowded(lineage: torch.Tensor, neighbourhoods: torch.Tensor, copy: torch.Tensor,
            centre: torch.Tensor) -> torch.Tensor:
    """Crowding (``coevolution.replacement: crowding``): per cell, whether the trained copy must not
    replace the centre because it is of another lineage than the centre and its lineage already
    holds a strict majority of the cell's neighbourhood.

    ``lineage [N]`` holds every cell's centre lineage at the start of the generation,
    ``neighbourhoods [C, S]`` the global ids of each cell's neighbourhood (duplicates already
    removed), ``copy [C]`` the lineage of each cell's trained copy and ``centre [C]`` the centre's.
    A copy of the centre's own lineage never changes the lineage counts, so it is never blocked.
    Returns ``[C]`` bool (CPU).
    """
    held = (lineage[neighbourhoods] == copy.view(-1, 1)).sum(1)       # [C] centres of the copy's lineage
    return (copy != centre) & (2 * held > neighbourhoods.shape[1])


class Coevolution:
    """The generation step of a grid of GANs for one process's block of cells."""

    def __init__(self, cfg: TrainConfig, dataset: ArrayDataset, device: torch.device,
                 world: World | None = None, scorer: Scorer | None = None, engine: str | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        self.world = world or World()
        self.scorer = scorer
        self.grid = Grid(cfg.grid.height, cfg.grid.width)
        self.nbr = self.grid.neighbour_table(cfg.coevolution.exchange)  # [N, S] global ids (CPU)
        self.S = int(self.nbr.shape[1])
        self.spec = NetSpec(cfg.network.arch, cfg.network.latent_dim, tuple(dataset.sample_shape),
                            conditional_classes(cfg, dataset))
        self.K = self.spec.num_classes   # 0 = unconditional; else G and D see packed inputs (module doc)
        self.dataset = dataset
        self.data = dataset.data.to(self.device)
        self.labels = dataset.labels.to(self.device) if self.K else None
        engine = engine or cfg.batching
        if engine == "auto":   # stacked GEMMs where the arch allows (MLPs); else vmap on a GPU, the loop on a CPU
            engine = "bmm" if bmm_supported(build_generator(self.spec)) and bmm_supported(
                build_discriminator(self.spec)) else ("vmap" if self.device.type == "cuda" else "loop")
        self.engine = engine
        self.fused_adam = cfg.adam == "fused"   # adam_step on PyTorch's fused kernel
        self.wgan = wasserstein.resolve(cfg.coevolution.loss, cfg.wasserstein)  # None unless wgan | wgan-gp
        self.Gnet = StackedNet(build_generator(self.spec), engine)
        self.Dnet = StackedNet(build_discriminator(self.spec, critic=self.wgan is not None), engine)
        n = len(dataset)
        self.subset_size = n if cfg.data.sampling_ratio >= 1.0 else max(cfg.data.batch_size,
                                                                           int(round(cfg.data.sampling_ratio * n)))
        self.subset_size = min(self.subset_size, n)
        B = cfg.data.batch_size
        self.batches = cfg.coevolution.batches_per_generation or max(1, self.subset_size // B)
        if self.wgan is not None and self.batches < self.wgan.n_critic:
            from mustangs.errors import ConfigError

            raise ConfigError(f"{self.wgan.loss}: {self.batches} mini-batches per generation leave no generator step "
                              f"with {self.wgan.n_critic} critic steps per generator step; set "
                              f"coevolution.batches_per_generation>={self.wgan.n_critic} or lower wasserstein.n_critic")

    # ------------------------------------------------------------------ set-up
    def init_block(self, cells: list[int] | range | None = None) -> Block:
        """Fresh state for ``cells`` (default: the world's block): per-cell seeded networks,
        data subsets and RNG streams, initial learning rates and uniform mixture weights.

        ``network.init``: the modules are always built with PyTorch's default initialisation
        from the cell's ``STREAM_INIT`` seed (so ``torch`` is bit-identical to every run before
        the key existed); ``dcgan`` then redraws G's and D's weights from the cell's own
        ``STREAM_WEIGHTS`` generator, so they depend on (seed, cell) alone, never on the layout."""
        cfg = self.cfg
        cells = list(self.world.cells(self.grid.size) if cells is None else cells)
        init = resolve_init(cfg.network.init, cfg.network.arch)
        gens, discs = [], []
        for c in cells:
            with torch.random.fork_rng(devices=[]):  # isolate module init from the global RNG
                torch.manual_seed(cell_seed(cfg.seed, c, STREAM_INIT))
                gens.append(build_generator(self.spec))
                discs.append(build_discriminator(self.spec))
            if init == "dcgan":
                g = cell_generator(cfg.seed, c, STREAM_WEIGHTS)
                dcgan_init(gens[-1], g)
                dcgan_init(discs[-1], g)
        G = NetState.from_modules(gens).to(self.device)
        D = NetState.from_modules(discs).to(self.device)
        n = len(self.dataset)
        if self.subset_size >= n:
            data_idx = torch.arange(n).expand(len(cells), n).clone()
        else:
            data_idx = torch.stack([torch.randperm(n, generator=cell_generator(cfg.seed, c, STREAM_DATA))[
                :self.subset_size] for c in cells])
        C = len(cells)
        return Block(
            cells=cells, G=G, D=D,
            lr_g=torch.full((C,), self.wgan.lr_g if self.wgan else cfg.coevolution.lr_g, dtype=torch.float64,
                            device=self.device),
            lr_d=torch.full((C,), self.wgan.lr_d if self.wgan else cfg.coevolution.lr_d, dtype=torch.float64,
                            device=self.device),
            mix_w=torch.full((C, self.S), 1.0 / self.S, dtype=torch.float64),
            rng_train=[cell_generator(cfg.seed, c, STREAM_TRAIN) for c in cells],
            rng_eval=[cell_generator(cfg.seed, c, STREAM_EVAL) for c in cells],
            data_idx=data_idx,
        )

    # ------------------------------------------------------------------ helpers
    def real_batch(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Dataset samples ``idx [C, B]`` as float ``[C, B, *shape]`` in [-1, 1] on the device
        (written into ``out`` when given, e.g. a slice of a discriminator's input). Conditional
        runs: the discriminator's packed input ``[C, B, numel + K]``, the samples' own labels'
        one-hot in the last K columns."""
        if self.K:
            return self._real_packed(idx, out)
        x = self.data[idx.to(self.device).reshape(-1)].view(*idx.shape, *self.data.shape[1:])
        if out is None:
            out = torch.empty(x.shape, dtype=torch.float32, device=self.device)
        out.copy_(x)
        return out.div_(127.5).sub_(1.0) if x.dtype == torch.uint8 else out

    def _real_packed(self, idx: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        idx = idx.to(self.device)
        numel = self.d_shape[0] - self.K
        if out is None:
            out = torch.empty(*idx.shape, numel + self.K, dtype=torch.float32, device=self.device)
        img = out[..., :numel]
        x = self.data[idx.reshape(-1)].view(*idx.shape, numel)
        img.copy_(x)
        if x.dtype == torch.uint8:
            img.div_(127.5).sub_(1.0)
        out[..., numel:].copy_(torch.nn.functional.one_hot(self.labels[idx], self.K))
        return out

    @property
    def d_shape(self) -> tuple[int, ...]:
        """Shape of one discriminator input: the sample, or ``(numel + K,)`` packed with its label."""
        return (math.prod(self.spec.sample_shape) + self.K,) if self.K else tuple(self.spec.sample_shape)

    def latents(self, generators: list[torch.Generator], n: int) -> torch.Tensor:
        """``[C, n, latent_dim]`` standard normal latents, each cell from its own stream.

        Conditional runs: ``[C, n, latent_dim + K]``, the one-hot of labels drawn uniformly from
        the same stream (after the latents) appended: the generator's packed input, whose last
        K columns :meth:`d_input` hands the discriminator with the fakes."""
        z = torch.empty(len(generators), n, self.spec.latent_dim)
        for c, g in enumerate(generators):
            torch.randn(n, self.spec.latent_dim, generator=g, out=z[c])
        if self.K:
            y = torch.stack([torch.randint(self.K, (n,), generator=g) for g in generators])
            z = torch.cat([z, torch.nn.functional.one_hot(y, self.K).to(z.dtype)], -1)
        return z.to(self.device)

    def with_balanced_labels(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[..., n, latent_dim]`` as the generators' input: unchanged for unconditional
        nets, else with the one-hot of labels ``0, 1, …, K−1, 0, …`` along n appended (sample grids
        and final scores: every class equally often, as ``G(z)`` draws them)."""
        if not self.K:
            return z
        onehot = torch.nn.functional.one_hot(balanced_labels(z.shape[-2], self.K, z.device), self.K).to(z.dtype)
        return torch.cat([z, onehot.expand(*z.shape[:-1], self.K)], -1)

    def d_input(self, fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Fakes ``[P, B, *shape]`` made from ``z`` as the discriminator's input: themselves, or
        packed with the labels they were drawn for (conditional runs)."""
        if not self.K:
            return fake
        return torch.cat([fake.reshape(*fake.shape[:2], -1), z[..., -self.K:]], -1)

    def uniforms(self, generators: list[torch.Generator], n: int) -> torch.Tensor:
        """``[C, n]`` uniform [0, 1) draws, each cell from its own stream (gradient-penalty weights)."""
        return torch.stack([torch.rand(n, generator=g) for g in generators]).to(self.device)

    def fitness(self, Gw: tuple[dict, dict], Dw: tuple[dict, dict], real: torch.Tensor, z: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every G against every D of each cell on one shared real batch and latent batch.

        ``Gw`` holds ``C·Sg`` generators, ``Dw`` ``C·Sd`` discriminators (cell-major). Returns
        ``fit_g [C, Sg]`` (mean non-saturating BCE over the cell's D's) and ``fit_d [C, Sd]``
        (mean BCE over real and each G's fakes); lower is better. Generator fitness always
        uses BCE, whatever loss Mustangs drew, so candidates are compared on one yardstick.
        """
        C, B = real.shape[0], real.shape[1]
        Sg = next(iter(Gw[0].values())).shape[0] // C
        Sd = next(iter(Dw[0].values())).shape[0] // C
        with torch.no_grad():
            zz = z.unsqueeze(1).expand(C, Sg, *z.shape[1:]).reshape(C * Sg, *z.shape[1:])
            fake = self.d_input(self.Gnet.apply(*Gw, zz, train=False), zz).reshape(C, Sg * B, *real.shape[2:])
            x = torch.cat([fake, real], 1)
            x = x.unsqueeze(1).expand(C, Sd, *x.shape[1:]).reshape(C * Sd, *x.shape[1:])
            p = self.Dnet.apply(*Dw, x, train=False).reshape(C, Sd, Sg + 1, B)
            p_fake, p_real = p[:, :, :Sg], p[:, :, Sg]
            if self.wgan is not None:   # critic scores: the Wasserstein yardstick (trainer/wasserstein.py)
                return (wasserstein.generator_loss(p_fake).mean(1),
                        wasserstein.critic_loss(p_real.unsqueeze(2), p_fake).mean(2))
            fit_g = losses.generator_loss(p_fake, "bce").mean(1)                 # [C, Sg]
            fit_d = losses.discriminator_loss(p_real.unsqueeze(2), p_fake).mean(2)  # [C, Sd]
        return fit_g, fit_d

    def sample_centres(self, block: Block, z: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
        """Centre generators of the block on latents ``z [C, n, zd]`` (eval mode) → ``[C, n, ...]``."""
        with torch.no_grad():
            outs = [self.Gnet.apply(block.G.params, block.G.buffers, z[:, i:i + chunk], train=False)
                    for i in range(0, z.shape[1], chunk)]
        return torch.cat(outs, 1)

    def generator_step(self, G: NetState, adv_D: tuple[dict, dict], z: torch.Tensor, mask: torch.Tensor,
                       lr: torch.Tensor) -> torch.Tensor:
        """One Adam step of every cell's ``G`` against its adversary discriminator ``adv_D``, with
        the generator loss chosen per cell by ``mask [C, 3]``; ``G`` is updated in place."""
        params = {k: t.detach().requires_grad_(True) for k, t in G.params.items()}
        fake = self.Gnet.apply(params, G.buffers, z, train=True)
        out = self.Dnet.apply(*adv_D, self.d_input(fake, z), train=True)
        lg = wasserstein.generator_loss(out) if self.wgan else losses.generator_loss_masked(out, mask)
        grads = torch.autograd.grad(lg.sum(), list(params.values()))
        self._optimizer_step(G, dict(zip(params, grads)), lr)
        return lg.detach()

    def _optimizer_step(self, state: NetState, grads: dict[str, torch.Tensor], lr: torch.Tensor) -> None:
        """Adam with the config's betas, or the Wasserstein recipe's optimiser."""
        if self.wgan is not None:
            wasserstein.optimizer_step(self.wgan, state, grads, lr, self.fused_adam)
        else:
            adam_step(state, grads, lr, tuple(self.cfg.coevolution.betas), fused=self.fused_adam)

    def discriminator_step(self, D: NetState, adv_G: tuple[dict, dict], z: torch.Tensor, real: torch.Tensor,
                           lr: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """One Adam step of every cell's ``D`` (always BCE) on ``real`` and the fakes of its
        adversary generator ``adv_G``; ``D`` is updated in place. ``real`` is a float batch
        ``[C, B, ...]`` or the dataset rows ``[C, B]`` (long) to read it from; real and fake
        samples are written straight into D's input (no concatenation). Wasserstein runs: one
        critic step of the recipe's optimiser on the critic loss, plus the gradient penalty on
        interpolates with weights ``eps [C, B]`` (wgan-gp), then weight clipping (wgan)."""
        C, B = real.shape[0], real.shape[1]
        x = torch.empty(C, 2 * B, *self.d_shape, device=self.device)
        if real.dtype == torch.long:
            self.real_batch(real, out=x[:, :B])
        else:
            x[:, :B].copy_(real)
        with torch.no_grad():
            if self.K:   # packed: the fakes' images, then the labels they were drawn for
                x[:, B:].copy_(self.d_input(self.Gnet.apply(*adv_G, z, train=True), z))
            else:
                self.Gnet.apply(*adv_G, z, train=True, out=x[:, B:])
        params = {k: t.detach().requires_grad_(True) for k, t in D.params.items()}
        p = self.Dnet.apply(params, D.buffers, x, train=True)
        if self.wgan is None:
            ld = losses.discriminator_loss(p[:, :B], p[:, B:])
        else:
            ld = wasserstein.critic_loss(p[:, :B], p[:, B:])
            if self.wgan.gp_lambda > 0:
                x_hat = wasserstein.interpolate(x[:, :B], x[:, B:], eps)
                gp = wasserstein.gradient_penalty(
                    lambda xh: self.Dnet.apply(params, D.buffers, xh, train=True), x_hat)
                ld = ld + self.wgan.gp_lambda * gp
        grads = torch.autograd.grad(ld.sum(), list(params.values()))
        self._optimizer_step(D, dict(zip(params, grads)), lr)
        if self.wgan is not None and self.wgan.clip is not None:
            wasserstein.clip_(D, self.wgan.clip)
        return ld.detach()

    def train_batch(self, G: NetState, D: NetState, adv_D: tuple[dict, dict], z_g: torch.Tensor,
                    mask: torch.Tensor, lr_g: torch.Tensor, adv_G: tuple[dict, dict] | None,
                    z_d: torch.Tensor, real: torch.Tensor | None, lr_d: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A generator step then a discriminator step (skipped when ``adv_G`` is None) against
        fixed adversaries; returns the per-cell losses."""
        lg = self.generator_step(G, adv_D, z_g, mask, lr_g)
        if adv_G is None:
            return lg, None
        return lg, self.discriminator_step(D, adv_G, z_d, real, lr_d)

    # ------------------------------------------------------------------ the generation step
    def step(self, block: Block, on_batch: Callable[[int], None] | None = None,
             score: bool = True) -> list[dict]:
        """Advance every cell of ``block`` by one generation; returns one metrics record per cell."""
        cfg, co = self.cfg, self.cfg.coevolution
        C, S, B = len(block), self.S, cfg.data.batch_size
        ar = torch.arange(C)
        nbr = self.nbr[torch.tensor(block.cells)]          # [C, S] global ids, column 0 = the cell
        if (block.generation + 1) % co.migration_every != 0:
            nbr, S = nbr[:, :1], 1                          # no migration this generation: the cell alone
        g_train = block.rng_train

        # ---------------------------------------------------------------- exchange
        G_all, D_all = self.world.gather_centres(block.G, block.D, block)
        lin_all_g, lin_all_d = self.world.gather_lineages(block.lineage_g, block.lineage_d)
        subG = _weights(G_all, nbr.reshape(-1))             # [C·S] neighbourhood generators
        subD = _weights(D_all, nbr.reshape(-1))             # [C·S] neighbourhood discriminators

        # ---------------------------------------------------------------- fitness
        F = co.fitness_samples or B
        pick = torch.stack([torch.randint(block.data_idx.shape[1], (F,), generator=g) for g in g_train])
        real_fit = self.real_batch(block.data_idx.gather(1, pick))
        z_fit = self.latents(g_train, F)
        fit_g, fit_d = self.fitness(subG, subD, real_fit, z_fit)   # [C, S] each

        # ---------------------------------------------------------------- select
        if co.selection and S > 1:
            win_g = tournament(fit_g, co.tournament_size, g_train)
            win_d = tournament(fit_d, co.tournament_size, g_train)
        else:
            win_g = win_d = torch.zeros(C, dtype=torch.long)
        G_tr = G_all.index(nbr[ar, win_g])                  # copies, Adam state included
        D_tr = D_all.index(nbr[ar, win_d])
        choice = losses.draw_losses(co.loss, g_train)       # per generator, this generation
        mask = losses.loss_mask(choice).to(self.device)

        # ---------------------------------------------------------------- train
        M = block.data_idx.shape[1]
        per_pass = max(1, math.ceil(self.batches * B / M))
        order = torch.stack([torch.cat([torch.randperm(M, generator=g) for _ in range(per_pass)])[
            :self.batches * B] for g in g_train]).view(C, self.batches, B)
        order = block.data_idx.gather(1, order.view(C, -1)).view(C, self.batches, B)
        sum_lg = torch.zeros(C, dtype=torch.float64, device=self.device)
        sum_ld = torch.zeros(C, dtype=torch.float64, device=self.device)
        d_steps = g_steps = 0
        own = co.adversary == "selected"
        for b in range(self.batches):
            if own:
                # the cell's own selected D (G) is the adversary: one two-player game per cell
                adv_D = _as_adversary(D_tr)
                z_g = self.latents(g_train, B)
                z_d = self.latents(g_train, B)
            else:
                adv_d = torch.stack([torch.randint(S, (), generator=g) for g in g_train])
                z_g = self.latents(g_train, B)
                adv_g = torch.stack([torch.randint(S, (), generator=g) for g in g_train])
                z_d = self.latents(g_train, B)
                # Adversaries are the neighbourhood's *live* trained individuals (all cells advance
                # in lockstep), as in Lipizzaner where the whole sub-population trains; one
                # process: identity, across ranks: a collective.
                live_D = self.world.gather_weights(D_tr)
                adv_D = _weights(live_D, nbr[ar, adv_d])
            if self.wgan is not None:
                # Wasserstein: a critic step on every mini-batch, a generator step after every
                # n_critic-th (Algorithm 1 of both papers); adversaries as they are at that moment
                eps = self.uniforms(g_train, B) if self.wgan.gp_lambda > 0 else None
                adv_G = (_as_adversary(G_tr) if own
                         else _weights(self.world.gather_weights(G_tr), nbr[ar, adv_g]))
                sum_ld += self.discriminator_step(D_tr, adv_G, z_d, order[:, b], block.lr_d, eps).to(torch.float64)
                d_steps += 1
                if (b + 1) % self.wgan.n_critic == 0:
                    adv_D = (_as_adversary(D_tr) if own
                             else _weights(self.world.gather_weights(D_tr), nbr[ar, adv_d]))
                    sum_lg += self.generator_step(G_tr, adv_D, z_g, mask, block.lr_g).to(torch.float64)
                    g_steps += 1
                if on_batch is not None:
                    on_batch(b)
                continue
            sum_lg += self.generator_step(G_tr, adv_D, z_g, mask, block.lr_g).to(torch.float64)
            g_steps += 1
            if co.d_skip_every is None or (b + 1) % co.d_skip_every != 0:
                if own:
                    adv_G = _as_adversary(G_tr)   # after its step, as with live neighbours
                else:
                    live_G = self.world.gather_weights(G_tr)
                    adv_G = _weights(live_G, nbr[ar, adv_g])
                sum_ld += self.discriminator_step(D_tr, adv_G, z_d, order[:, b], block.lr_d).to(torch.float64)
                d_steps += 1
            if on_batch is not None:
                on_batch(b)

        # ---------------------------------------------------------------- mutate
        lr_g, lr_d = block.lr_g.cpu().clone(), block.lr_d.cpu().clone()
        for c, g in enumerate(g_train):
            u, n = torch.rand(2, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
            # relative Gaussian: lr ← max(lr_min, lr · (1 + scale · N(0, 1))), scale-free, so a
            # cell's lr random-walks in proportion to itself instead of drifting onto lr_min
            if u[0] < co.mutation_probability:
                lr_g[c] = max(co.lr_min, float(lr_g[c] * (1.0 + co.mutation_scale * n[0])))
            if u[1] < co.mutation_probability:
                lr_d[c] = max(co.lr_min, float(lr_d[c] * (1.0 + co.mutation_scale * n[1])))
        block.lr_g.copy_(lr_g)   # the tensor adam_step reads: the next step uses the new rate
        block.lr_d.copy_(lr_d)

        # ---------------------------------------------------------------- replace
        if co.selection:
            new_g, _ = self.fitness(_weights(G_tr, ar), subD, real_fit, z_fit)     # [C, 1]
            _, new_d = self.fitness(subG, _weights(D_tr, ar), real_fit, z_fit)     # [C, 1]
            take_g, take_d = new_g[:, 0] < fit_g[:, 0], new_d[:, 0] < fit_d[:, 0]
            fit_centre_g = torch.where(take_g, new_g[:, 0], fit_g[:, 0])
            fit_centre_d = torch.where(take_d, new_d[:, 0], fit_d[:, 0])
        else:
            take_g = take_d = torch.ones(C, dtype=torch.bool, device=self.device)
            fit_centre_g, fit_centre_d = fit_g[:, 0], fit_d[:, 0]
        lin_g, lin_d = lin_all_g[nbr[ar, win_g]], lin_all_d[nbr[ar, win_d]]   # lineages of the trained copies
        if co.foreign_replacement < 1.0:   # a copy of another lineage may replace the centre only by chance
            u = torch.stack([torch.rand(2, generator=g, dtype=torch.float64) for g in g_train])
            take_g &= ((lin_g == block.lineage_g) | (u[:, 0] < co.foreign_replacement)).to(take_g.device)
            take_d &= ((lin_d == block.lineage_d) | (u[:, 1] < co.foreign_replacement)).to(take_d.device)
        crowded_g = crowded_d = torch.zeros(C, dtype=torch.bool)
        if co.replacement == "crowding":   # no random draws: the reference stream is untouched
            hood = self.nbr[torch.tensor(block.cells)]   # the whole neighbourhood, migrating or not
            crowd_g = crowded(lin_all_g, hood, lin_g, block.lineage_g)
            crowd_d = crowded(lin_all_d, hood, lin_d, block.lineage_d)
            crowded_g, crowded_d = take_g.cpu() & crowd_g, take_d.cpu() & crowd_d
            take_g = take_g & ~crowd_g.to(take_g.device)   # not in place: take_g may be take_d
            take_d = take_d & ~crowd_d.to(take_d.device)
        block.lineage_g = torch.where(take_g.cpu(), lin_g, block.lineage_g)
        block.lineage_d = torch.where(take_d.cpu(), lin_d, block.lineage_d)
        block.G = G_tr.where(take_g, block.G)
        block.D = D_tr.where(take_d, block.D)
        block.generation += 1

        records = []
        for c in range(C):
            r, col = self.grid.coords(block.cells[c])
            records.append({
                "cell": [r, col],
                "loss_g": float(sum_lg[c] / max(1, g_steps)),
                "loss_d": float(sum_ld[c] / max(1, d_steps)),
                "fitness_g": float(fit_centre_g[c]), "fitness_d": float(fit_centre_d[c]),
                "selected_g": self.grid.coords(int(nbr[c, win_g[c]])),
                "selected_d": self.grid.coords(int(nbr[c, win_d[c]])),
                "replaced_g": bool(take_g[c]), "replaced_d": bool(take_d[c]),
                "crowded_g": bool(crowded_g[c]), "crowded_d": bool(crowded_d[c]),
                "lineage_g": self.grid.coords(int(block.lineage_g[c])),
                "lineage_d": self.grid.coords(int(block.lineage_d[c])),
                "migrated": S == self.S,
                "lr_g": float(lr_g[c]), "lr_d": float(lr_d[c]),
                "loss_choice": co.loss if self.wgan else losses.G_LOSSES[int(choice[c])],
            })

        # ---------------------------------------------------------------- mixture
        if score and self.scorer is not None:
            self.mixture_step(block, records)
        for c in range(C):
            records[c]["mixture_weights"] = [float(w) for w in block.mix_w[c]]
        return records

    # ------------------------------------------------------------------ mixture (1+1)-ES
    def mixture_step(self, block: Block, records: list[dict]) -> None:
        """Score each centre generator once (``mixture.eval_samples``) and take one (1+1)-ES
        step on each cell's neighbourhood weights, scored exactly via :meth:`FeatureStats.mix`."""
        cfg = self.cfg
        n = cfg.mixture.eval_samples
        x = self.sample_centres(block, self.latents(block.rng_eval, n))
        local = [self.scorer.stats(x[c]) for c in range(len(block))]
        del x
        all_stats = self.world.gather_stats(local)
        nbr = self.nbr[torch.tensor(block.cells)]
        for c, g in enumerate(block.rng_eval):
            key = self.scorer.fid_key(local[c])
            tvd = self.scorer.score(local[c], ("tvd",))
            gen_scores = {key: self.scorer.fid(local[c]), **tvd}
            comps = [all_stats[int(j)] for j in nbr[c]]
            w = block.mix_w[c]
            cur = self.scorer.fid(FeatureStats.mix(comps, w.numpy()))
            noise = torch.randn(self.S, generator=g, dtype=torch.float64)
            accepted = False
            if cfg.mixture.enabled and self.S > 1:
                cand = (w + cfg.mixture.sigma * noise).clamp(min=0.0)
                if cand.sum() > 0:
                    cand = cand / cand.sum()
                    f = self.scorer.fid(FeatureStats.mix(comps, cand.numpy()))
                    if f < cur:
                        block.mix_w[c] = cand
                        cur, accepted = f, True
            records[c]["scores"] = gen_scores
            records[c]["mixture_scores"] = {key: cur}
            records[c]["mixture_accepted"] = accepted
            block.last_fid[block.cells[c]] = {"generator": gen_scores, "mixture": {key: cur}}
