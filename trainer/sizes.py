"""The memory estimate of a training run, so an impossible config is refused with a number before anything is allocated.

:func:`train_bytes` returns bytes and the term that dominates, and :func:`check_train_memory`
refuses through :func:`mustangs.io.safety.check_memory` (drawing samples has its own check,
:func:`mustangs.io.safety.check_samples_memory`) (``MUSTANGS_MEMORY_LIMIT`` overrides what counts as
available). The estimates count the big tensors of the real code paths (parameters with their
Adam moments and copies, activations, latents, samples, data indices); they are meant to be
within a small factor, and never to refuse a run that fits.
"""

from __future__ import annotations

import math

from mustangs.io.safety import check_memory, human_bytes

#: Rows of the training sets (an upper bound for the data-index tensors).
DATASET_ROWS = {"fashion-mnist": 60_000, "mnist": 60_000, "cifar10": 50_000, "rings": 100_000,
                "image-folder": 1_000_000}
F32 = 4
I64 = 8


def train_bytes(cfg) -> tuple[int, dict[str, int]]:
    """Estimated peak bytes of ``trainer train`` for ``cfg`` on one process, and its parts."""
    from mustangs.pool.networks import NetSpec, network_numels
    from trainer.grid import Grid
    from trainer.remember import remembered_bytes

    spec = NetSpec(cfg.network.arch, cfg.network.latent_dim, tuple(cfg.sample_shape()))
    n = network_numels(spec)
    C = cfg.grid.height * cfg.grid.width
    S = Grid(1, 1).subpopulation_size if not cfg.coevolution.exchange else min(5, max(1, C))
    B = cfg.data.batch_size
    numel = math.prod(spec.sample_shape)
    rows = DATASET_ROWS.get(cfg.data.dataset, 60_000)
    M = min(rows, max(B, int(round(cfg.data.sampling_ratio * rows))))
    batches = cfg.coevolution.batches_per_generation or max(1, M // B)
    params = n["g_params"] + n["d_params"]
    parts = {
        # centres + Adam moments, the gathered grid, the sub-population copies, the trained copies with
        # their Adam state, and gradients
        "network state": C * params * F32 * (3 + 3 + S + 3 + 1),
        # fitness: the sub-population's G's and D's on one batch (measured: rings, B = 20000 needs
        # ~1.2 GiB above the baseline, 2.4 GiB peak in all; the whole estimate says 1.7 GiB)
        "fitness activations": C * S * (cfg.coevolution.fitness_samples or B) * (n["g_activations"] + n["d_activations"]) * F32,
        # one training step: forward activations kept for backward, for G and D (real and fake)
        "training activations": C * B * (n["g_activations"] + 2 * n["d_activations"]) * F32,
        "data indices": C * (M + batches * B) * I64,
        "mixture scoring samples": C * cfg.mixture.eval_samples * (spec.latent_dim + 2 * numel) * F32,
        "final scoring samples": cfg.eval.fid_samples * (spec.latent_dim + 2 * numel + 2 * 256) * F32,
        "sample grids": C * cfg.output.samples_per_cell * (spec.latent_dim + 2 * numel) * F32,
        # output.pool_members: remembered generators on the CPU, twice while a checkpoint is serialised
        "remembered generators": 2 * remembered_bytes(cfg),
    }
    return sum(parts.values()), parts


def check_train_memory(cfg) -> int:
    """Refuse a training config whose estimated memory exceeds what this machine has; returns the estimate.

    The estimate is for the whole grid; worker processes on one machine share it between them.
    """
    total, parts = train_bytes(cfg)
    biggest = max(parts, key=parts.get)
    per_cell = parts["network state"] // max(1, cfg.grid.height * cfg.grid.width)
    check_memory(total, f"this run ({cfg.grid.height}x{cfg.grid.width} grid, {human_bytes(per_cell)} of network "
                 f"state per cell, batch_size {cfg.data.batch_size}, latent_dim {cfg.network.latent_dim}, "
                 f"eval.fid_samples {cfg.eval.fid_samples})",
                 f"the largest part is {biggest} ({human_bytes(parts[biggest])}); shrink the grid, "
                 "data.batch_size, network.latent_dim, mixture.eval_samples or eval.fid_samples")
    return total


__all__ = ["train_bytes", "check_train_memory"]
