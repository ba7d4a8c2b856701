"""A pool that remembers (issue 19): generators the run keeps besides its final centres.

With the reference recipe a grid is soon one lineage, so the final centres are near-copies and
re-purposing has little to choose from. ``output.pool_members`` keeps more:

* ``lineage-best``: per founder lineage, the best centre generator it ever produced, scored as the
  cell scores it: the generator score the mixture step computes for each centre on scored
  generations (``scores.fid_*`` in ``metrics.jsonl``, lower is better). A copy of the weights is
  kept on the CPU each time a lineage's best improves; generations that are not scored
  (``eval.every``) do not compete.
* ``snapshots``: every centre generator every ``output.snapshot_every`` generations.

The remembered generators travel in the checkpoints (safetensors tensors ``remember.<id>.<name>``
and a JSON list ``remembered`` beside them, no pickle), so ``--resume`` keeps them, and the run
writes them into ``pool/`` next to the centres, each with its role, lineage, generation and cell
in ``origin`` (see :mod:`mustangs.pool.manifest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from mustangs.errors import UserError
from mustangs.io.validation import Ident, Strict, validate
from mustangs.pool.manifest import Cell

#: Checkpoint tensor names of remembered generators start with this.
PREFIX = "remember."
ROLES = ("centre", "lineage-best", "snapshot")


class RememberedDoc(Strict):
    """One entry of a checkpoint's ``remembered`` list (schema-checked on resume)."""

    id: Ident = Field(pattern=r"^(best-r\d+c\d+|snap-g\d+-r\d+c\d+)$")   # also a pool file name: no paths
    role: Literal["lineage-best", "snapshot"]
    lineage: Cell
    cell: Cell
    generation: int = Field(ge=0)
    score: dict[str, float] = Field(default_factory=dict)


@dataclass
class Remembered:
    """One remembered generator: its role, founder lineage, cell and generation (coordinates
    ``[row, col]``), the score it was kept for (lineage-best) and its weights (CPU state dict)."""

    id: str
    role: str
    lineage: list[int]
    cell: list[int]
    generation: int
    score: dict[str, float]
    weights: dict[str, torch.Tensor]

    def meta(self) -> dict[str, Any]:
        """Everything but the weights, as JSON."""
        return {"id": self.id, "role": self.role, "lineage": self.lineage, "cell": self.cell,
                "generation": self.generation, "score": self.score}


def wanted(pool_members: str) -> tuple[bool, bool]:
    """``(lineage_best, snapshots)`` for an ``output.pool_members`` value."""
    return pool_members in ("centres+lineage-best", "all"), pool_members in ("centres+snapshots", "all")


def remembered_count(cells: int, generations: int, pool_members: str, snapshot_every: int) -> int:
    """The most generators a run keeps besides its centres (one per lineage, ``cells`` per snapshot)."""
    best, snaps = wanted(pool_members)
    return (cells if best else 0) + (cells * (generations // snapshot_every) if snaps else 0)


class PoolMemory:
    """The remembered generators of a run, updated once per generation by :meth:`observe`."""

    def __init__(self, pool_members: str = "centres", snapshot_every: int = 1):
        self.lineage_best, self.snapshots = wanted(pool_members)
        self.snapshot_every = snapshot_every
        self.items: dict[str, Remembered] = {}

    @property
    def enabled(self) -> bool:
        return self.lineage_best or self.snapshots

    def __len__(self) -> int:
        return len(self.items)

    def observe(self, generation: int, records: list[dict], params: dict[str, torch.Tensor],
                buffers: dict[str, torch.Tensor]) -> None:
        """Remember what generation ``generation`` asks for. ``records`` are the generation's per-cell
        metrics of every cell (global order); ``params``/``buffers`` the stacked centre generators."""
        if not self.enabled:
            return

        def weights(i: int) -> dict[str, torch.Tensor]:
            out = {k: t[i].detach().to("cpu", copy=True).contiguous() for k, t in params.items()}
            out.update({k: t[i].detach().to("cpu", copy=True).contiguous() for k, t in buffers.items()})
            return out

        for i, rec in enumerate(records):
            cell, lineage = list(rec["cell"]), list(rec["lineage_g"])
            if self.snapshots and generation % self.snapshot_every == 0:
                sid = f"snap-g{generation:06d}-r{cell[0]}c{cell[1]}"
                self.items[sid] = Remembered(sid, "snapshot", lineage, cell, generation, {}, weights(i))
            fid = {k: float(v) for k, v in rec.get("scores", {}).items() if k.startswith("fid_") and v is not None}
            if self.lineage_best and fid:
                key, value = sorted(fid.items())[0]
                bid = f"best-r{lineage[0]}c{lineage[1]}"
                old = self.items.get(bid)
                if old is None or key not in old.score or value < old.score[key]:
                    self.items[bid] = Remembered(bid, "lineage-best", lineage, cell, generation, {key: value},
                                                 weights(i))

    def members(self) -> list[Remembered]:
        """Remembered generators: lineage-best by lineage, then snapshots by generation and cell."""
        return sorted(self.items.values(), key=lambda m: (m.role != "lineage-best", m.generation, m.cell, m.lineage))

    # ------------------------------------------------------------------ checkpoints
    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat checkpoint tensors ``remember.<id>.<name>``."""
        return {f"{PREFIX}{m.id}.{k}": t for m in self.items.values() for k, t in m.weights.items()}

    def meta(self) -> list[dict[str, Any]]:
        """The checkpoint's ``remembered`` list (no weights)."""
        return [m.meta() for m in self.members()]

    def restore(self, meta: list[dict[str, Any]], tensors: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`meta`/:meth:`tensors` wrote. Roles this run no longer keeps (the output
        settings may change on ``--resume``) are dropped."""
        self.items = {}
        if not isinstance(meta, list):
            raise UserError("checkpoint: 'remembered' is not a list; resume from another checkpoint or start over")
        for j, raw in enumerate(meta):
            doc = validate(RememberedDoc, raw, f"checkpoint remembered.{j}")
            if (doc.role == "lineage-best" and not self.lineage_best) or (doc.role == "snapshot" and not self.snapshots):
                continue
            head = f"{PREFIX}{doc.id}."
            w = {k[len(head):]: t.clone() for k, t in tensors.items() if k.startswith(head)}
            if not w:
                raise UserError(f"checkpoint: remembered generator '{doc.id}' has no tensors; "
                                "resume from another checkpoint or start the run over")
            self.items[doc.id] = Remembered(doc.id, doc.role, list(doc.lineage), list(doc.cell), doc.generation,
                                            dict(doc.score), w)


def split_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's tensors as ``(grid tensors, remembered tensors)``."""
    grid = {k: t for k, t in tensors.items() if not k.startswith(PREFIX)}
    return grid, {k: t for k, t in tensors.items() if k.startswith(PREFIX)}


def remembered_bytes(cfg) -> int:
    """Bytes of the remembered generators' weights at the end of ``cfg``'s run (float32)."""
    from mustangs.pool.networks import NetSpec, network_numels

    spec = NetSpec(cfg.network.arch, cfg.network.latent_dim, tuple(cfg.sample_shape()))
    n = remembered_count(cfg.num_cells, cfg.coevolution.generations, cfg.output.pool_members,
                         cfg.output.snapshot_every)
    return n * network_numels(spec)["g_params"] * 4 if n else 0


__all__ = ["PoolMemory", "Remembered", "remembered_count", "remembered_bytes", "split_tensors", "wanted"]
