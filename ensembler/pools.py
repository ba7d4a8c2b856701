"""One or several pools seen as one list of candidate generators.

Pools are merged only when they agree on the network (architecture, latent size, sample
shape) and on the dataset (the evaluation classifier depends on it). Generators with identical
weights files (same sha256, in one pool or across pools) are kept once; :attr:`PoolSet.merged`
names them, the CLI prints one line per merge and ``ensemble.json`` records it. Every generator is loaded once up front,
which checks its hash against the manifest and refuses NaN/inf weights before any long work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from mustangs.errors import UserError
from mustangs.pool.format import Pool, PoolEntry, read_pool
from mustangs.pool.networks import NetSpec

from ensembler.ensemble import Ensemble, Member


@dataclass
class Candidate:
    """One generator of the merged pools: a unique id, its pool and its manifest entry."""

    id: str
    pool: Pool
    index: int

    @property
    def entry(self) -> PoolEntry:
        return self.pool.entries[self.index]

    @property
    def path(self) -> Path:
        return self.pool.path(self.entry)

    @property
    def sha256(self) -> str:
        return self.entry.sha256


def _pool_name(pool: Pool) -> str:
    root = pool.root
    return root.parent.name if root.name == "pool" else root.name


@dataclass
class PoolSet:
    """Candidates from one or more pools that share a network spec and a dataset."""

    spec: NetSpec
    dataset: str
    pools: list[Pool]
    candidates: list[Candidate]
    _modules: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    merged: list[dict] = field(default_factory=list)  # {"kept": id, "merged": [ids], "sha256": ...} per merge

    def merge_lines(self) -> list[str]:
        """One human line per merge of identical generators (empty when nothing was merged)."""
        return [f"merged identical generators: {', '.join([m['kept'], *m['merged']])} have the same weights "
                f"(sha256 {m['sha256'][:12]}…); kept {m['kept']}" for m in self.merged]

    def __len__(self) -> int:
        return len(self.candidates)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.candidates]

    def generator(self, i: int) -> nn.Module:
        """Candidate ``i``'s generator (loaded once, hash and finiteness checked)."""
        if i not in self._modules:
            c = self.candidates[i]
            self._modules[i] = c.pool.load_generator(c.index)
        return self._modules[i]

    def check_all(self) -> None:
        """Load every generator now, so a corrupt or NaN file fails before any long work."""
        for i in range(len(self)):
            self.generator(i)

    def ensemble(self, weights: np.ndarray, meta: dict | None = None, drop_below: float = 0.0) -> Ensemble:
        """An :class:`Ensemble` of the candidates with weight > ``drop_below`` (renormalised)."""
        w = np.asarray(weights, np.float64)
        if w.shape != (len(self),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise UserError(f"cannot build an ensemble from weights {w.tolist()} (need {len(self)} finite, "
                            "non-negative weights with a positive sum)")
        keep = [i for i in range(len(self)) if w[i] > drop_below]
        kw = w[keep] / w[keep].sum()
        members = [Member(self.candidates[i].id, self.candidates[i].path, self.candidates[i].sha256, float(x),
                          str(self.candidates[i].pool.root), dict(self.candidates[i].entry.origin))
                   for i, x in zip(keep, kw)]
        return Ensemble(self.spec, [self.generator(i) for i in keep], kw, members, meta)


def open_pools(paths: Sequence[str | Path]) -> PoolSet:
    """Read and merge pools; one clear ``UserError`` when they cannot be merged."""
    if not paths:
        raise UserError("give at least one pool folder")
    pools = [read_pool(p) for p in paths]
    first = pools[0]
    for p in pools[1:]:
        if p.spec != first.spec:
            raise UserError(f"pools {first.root} and {p.root} hold different architectures "
                            f"({first.spec.arch}, z={first.spec.latent_dim}, {list(first.spec.sample_shape)} vs "
                            f"{p.spec.arch}, z={p.spec.latent_dim}, {list(p.spec.sample_shape)}); "
                            "optimise them separately")
        if p.dataset != first.dataset:
            raise UserError(f"pools {first.root} ({first.dataset}) and {p.root} ({p.dataset}) were trained on "
                            "different datasets; optimise them separately")
    seen: dict[str, Candidate] = {}
    dropped: dict[str, list[str]] = {}
    candidates: list[Candidate] = []
    all_ids = [e.id for p in pools for e in p.entries]
    for p in pools:
        for i, e in enumerate(p.entries):
            gid = e.id if (len(pools) == 1 or all_ids.count(e.id) == 1) else f"{_pool_name(p)}/{e.id}"
            if e.sha256 in seen:
                dropped.setdefault(e.sha256, []).append(gid)
                continue
            seen[e.sha256] = Candidate(gid, p, i)
            candidates.append(seen[e.sha256])
    if not candidates:
        raise UserError("the pools hold no generators")
    counts: dict[str, int] = {}
    for c in candidates:  # still ambiguous (e.g. two runs of the same name): number them
        counts[c.id] = counts.get(c.id, 0) + 1
        if counts[c.id] > 1:
            c.id = f"{c.id}#{counts[c.id]}"
    merged = [{"kept": seen[sha].id, "merged": ids, "sha256": sha} for sha, ids in dropped.items()]
    return PoolSet(first.spec, first.dataset, pools, candidates, merged=merged)


__all__ = ["Candidate", "PoolSet", "open_pools"]
