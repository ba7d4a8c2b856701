"""The matmul floor of a coevolution generation: the GEMMs its recipe cannot avoid, run bare.

A generation of an MLP grid is, at its core, a fixed list of matrix products (forward passes,
input gradients, weight gradients, fitness evaluations). :func:`generation_gemms` lists them
from the networks' layer sizes and the config; :class:`Floor` runs exactly those products as
``torch.bmm`` over the cells on contiguous random operands (outputs preallocated), which is as
fast as this CPU does that arithmetic. ``generation CPU-s / floor CPU-s`` then says how much
of the step is anything but matmul (elementwise ops, Adam, Python, copies, worse layouts).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn


def linear_dims(module: nn.Module) -> list[int]:
    """``[in, hidden…, out]`` of an MLP's Linear layers, in order."""
    lins = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not lins:
        raise ValueError(f"{type(module).__name__} has no Linear layers: the floor covers MLPs only")
    return [lins[0].in_features] + [m.out_features for m in lins]


def _fwd(dims, n):
    return [(n, dims[i], dims[i + 1]) for i in range(len(dims) - 1)]


def _input_grads(dims, n, first):
    return [(n, dims[i + 1], dims[i]) for i in range(first, len(dims) - 1)]


def _weight_grads(dims, n):
    return [(dims[i + 1], n, dims[i]) for i in range(len(dims) - 1)]


@dataclass(frozen=True)
class Gemm:
    """``members`` independent products ``[M, K] @ [K, N]``, ``count`` times per generation."""

    members: int
    m: int
    k: int
    n: int
    count: int

    @property
    def flop(self) -> int:
        return 2 * self.members * self.m * self.k * self.n * self.count


def generation_gemms(g_dims: list[int], d_dims: list[int], cells: int, sub: int, batch: int,
                     batches: int, d_steps: int, selection: bool = True) -> list[Gemm]:
    """The GEMMs of one generation (design.md §3 with the selected-adversary recipe).

    Per mini-batch and cell: G step = G forward, D forward, D input gradients, G input
    gradients (not w.r.t. z) and G weight gradients on ``batch`` rows; D step (``d_steps`` of
    the ``batches``) = G forward (no grad), D forward, D weight gradients and D input gradients
    (not w.r.t. the samples) on ``2·batch`` rows. Fitness: every G of the sub-population
    (``sub`` per cell) on one batch, every D on the fakes of all of them plus the real batch;
    replacement (with selection) the trained G against the ``sub`` D's and vice versa.
    """
    tally: Counter = Counter()

    def add(members, shapes, times):
        for m, k, n in shapes:
            tally[(members, m, k, n)] += times

    B = batch
    g_step = (_fwd(g_dims, B) + _fwd(d_dims, B) + _input_grads(d_dims, B, 0) + _input_grads(g_dims, B, 1)
              + _weight_grads(g_dims, B))
    d_step = _fwd(g_dims, B) + _fwd(d_dims, 2 * B) + _input_grads(d_dims, 2 * B, 1) + _weight_grads(d_dims, 2 * B)
    add(cells, g_step, batches)
    add(cells, d_step, d_steps)
    add(cells * sub, _fwd(g_dims, B) + _fwd(d_dims, (sub + 1) * B), 1)          # fitness
    if selection:
        add(cells, _fwd(g_dims, B), 1)                                        # trained G vs the sub D's
        add(cells * sub, _fwd(d_dims, 2 * B), 1)
        add(cells * sub, _fwd(g_dims, B), 1)                                  # trained D vs the sub G's
        add(cells, _fwd(d_dims, (sub + 1) * B), 1)
    return [Gemm(p, m, k, n, c) for (p, m, k, n), c in tally.items()]


class Floor:
    """Runs a GEMM list as bare ``torch.bmm`` calls (contiguous operands, preallocated outputs),
    interleaved the way a step issues them (one round per mini-batch)."""

    def __init__(self, gemms: list[Gemm], seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.gemms = gemms
        self.ops = [(torch.randn(x.members, x.m, x.k, generator=g), torch.randn(x.members, x.k, x.n, generator=g),
                     torch.empty(x.members, x.m, x.n), x.count) for x in gemms]

    @property
    def flop(self) -> int:
        """Floating-point operations of one run (2 per multiply-add)."""
        return sum(x.flop for x in self.gemms)

    def run(self) -> float:
        """One generation's worth of products; returns the CPU-seconds it took."""
        t0 = time.process_time()
        for rep in range(max(x.count for x in self.gemms)):   # interleaved, batch by batch, as in a step
            for a, b, out, count in self.ops:
                if rep < count:
                    torch.bmm(a, b, out=out)
        return time.process_time() - t0
