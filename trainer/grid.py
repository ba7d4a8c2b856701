"""The torus grid of cells and its von Neumann neighbourhoods (radius 1).

Cells are numbered row-major: cell ``i`` sits at ``(i // width, i % width)``. A cell's
neighbourhood is itself first, then N, S, W, E (wrapping), duplicates removed, so on every
torus all cells have the same sub-population size (5 on grids >= 3x3, 3 on 2x2, 1 on 1x1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    """An ``height × width`` torus."""

    height: int
    width: int

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise ValueError(f"a grid needs height and width >= 1, got {self.height}x{self.width}")

    @property
    def size(self) -> int:
        """Number of cells."""
        return self.height * self.width

    def index(self, row: int, col: int) -> int:
        """Row-major cell index of ``(row, col)`` (wrapping around the torus)."""
        return (row % self.height) * self.width + (col % self.width)

    def coords(self, index: int) -> tuple[int, int]:
        """``(row, col)`` of cell ``index``."""
        return divmod(index, self.width)

    def neighbourhood(self, index: int) -> list[int]:
        """Cell ``index`` followed by its distinct von Neumann neighbours (N, S, W, E)."""
        r, c = self.coords(index)
        cand = [self.index(r, c), self.index(r - 1, c), self.index(r + 1, c), self.index(r, c - 1),
                self.index(r, c + 1)]
        return list(dict.fromkeys(cand))

    @property
    def subpopulation_size(self) -> int:
        """Size of every cell's neighbourhood (the same for all cells of a torus)."""
        return len(self.neighbourhood(0))

    def neighbour_table(self, exchange: bool = True) -> torch.Tensor:
        """``[cells, S]`` long tensor of neighbourhoods (column 0 is the cell itself).

        With ``exchange=False`` (isolated GANs) every neighbourhood is the cell alone.
        """
        if not exchange:
            return torch.arange(self.size).unsqueeze(1)
        return torch.tensor([self.neighbourhood(i) for i in range(self.size)], dtype=torch.long)


def split_cells(num_cells: int, num_workers: int, rank: int) -> range:
    """The contiguous, balanced block of cell indices a worker owns (for scale-out)."""
    base, extra = divmod(num_cells, num_workers)
    lo = rank * base + min(rank, extra)
    return range(lo, lo + base + (1 if rank < extra else 0))
