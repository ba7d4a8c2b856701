"""The processes that train one grid: the seam between the generation step and scale-out.

A process owns a contiguous block of cells; everything it needs from other cells comes through
its :class:`World`. This base class is the single-process case (every gather is the identity);
:mod:`trainer.distributed` overrides the gathers with torch.distributed collectives.
"""

from __future__ import annotations

from typing import Any

import torch

from mustangs.judge.metrics import FeatureStats
from trainer.batched import NetState


class World:
    """The processes training one grid. This base class is the single-process case.

    A distributed subclass overrides the ``gather_*`` methods with collectives and
    :meth:`cells` with the rank's block; the generation step does not change.
    """

    rank: int = 0
    size: int = 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder (only one does)."""
        return self.rank == 0

    def cells(self, num_cells: int) -> range:
        """The contiguous block of global cell indices this process owns."""
        return range(num_cells)

    def gather_centres(self, G: NetState, D: NetState, block=None) -> tuple[NetState, NetState]:
        """All cells' centre G and D (with Adam state), in global cell order. Identity here.

        ``block`` (the caller's :class:`~trainer.coevolution.Block`) lets an async world read the
        neighbours' lineages from the same copies as their weights."""
        return G, D

    def gather_weights(self, state: NetState) -> NetState:
        """All cells' parameters and buffers (no optimizer state: what an adversary needs). Identity here."""
        return state

    def gather_stats(self, stats: list[FeatureStats | None]) -> list[FeatureStats | None]:
        """All cells' generator statistics, in global cell order. Identity here."""
        return stats

    def gather_objects(self, items: list[Any]) -> list[Any]:
        """All cells' per-cell records (metrics), in global cell order. Identity here."""
        return items

    def gather_state(self, state: NetState) -> NetState:
        """All cells' stacked state (Adam state included), in global cell order. Identity here."""
        return state

    def gather_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-cell tensors (cell axis first) of all cells, in global cell order. Identity here."""
        return tensors

    def gather_lineages(self, lineage_g: torch.Tensor, lineage_d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All cells' founder lineages (G, D), matching the centres of the last :meth:`gather_centres`."""
        out = self.gather_tensors({"g": lineage_g, "d": lineage_d})
        return out["g"], out["d"]

    def lineage_weights(self, state: NetState) -> NetState:
        """The centres the per-generation genome distance is measured on: all cells' weights."""
        return self.gather_weights(state)

    def barrier(self) -> None:
        """Wait for every process. Nothing to wait for here."""

    def take_comm_stats(self) -> dict | None:
        """Exchange cost since the last call (multi-process runs only; None here)."""
        return None
