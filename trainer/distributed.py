"""Workers as torch.distributed ranks: who owns which cells, and the neighbour exchange.

One process (no torch.distributed) is the degenerate case: it owns every cell and the
exchange is the identity. ``trainer train --workers N`` spawns N ranks on this machine;
under ``torchrun`` the ranks come from the environment (RANK, WORLD_SIZE, MASTER_ADDR…).
Cells, not ranks, own random streams, so the split never changes the result.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer.errors import UserError


@dataclass(frozen=True)
class Workers:
    """This process's place among the workers and the cells it owns."""

    rank: int
    world_size: int
    blocks: tuple[tuple[int, int], ...]  # per rank: [start, stop) of its cells

    @property
    def cells(self) -> range:
        """The cell indices this rank trains."""
        start, stop = self.blocks[self.rank]
        return range(start, stop)

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def split_cells(num_cells: int, world_size: int) -> tuple[tuple[int, int], ...]:
    """Balanced contiguous blocks of cells, one per rank (sizes differ by at most one)."""
    if world_size < 1:
        raise UserError(f"--workers must be >= 1, got {world_size}")
    if world_size > num_cells:
        raise UserError(f"{world_size} workers for a grid of {num_cells} cells: every worker needs at least one "
                        f"cell; use --workers {num_cells} or fewer, or a bigger grid")
    base, extra = divmod(num_cells, world_size)
    blocks, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        blocks.append((start, stop))
        start = stop
    return tuple(blocks)


def single_process(num_cells: int) -> Workers:
    """The one-process layout: rank 0 owns every cell."""
    return Workers(0, 1, ((0, num_cells),))


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for single-machine rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gather_rows(local: torch.Tensor, workers: Workers) -> torch.Tensor:
    """All ranks' rows, in cell order: ``[cells_of_this_rank, ...]`` → ``[all_cells, ...]``.

    Blocks may differ in size by one, so each rank pads to the largest block before
    ``all_gather`` and the padding is dropped afterwards.
    """
    if not workers.distributed:
        return local
    sizes = [stop - start for start, stop in workers.blocks]
    biggest = max(sizes)
    padded = local
    if local.shape[0] < biggest:
        pad = local.new_zeros(biggest - local.shape[0], *local.shape[1:])
        padded = torch.cat([local, pad])
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:n] for o, n in zip(out, sizes)])
