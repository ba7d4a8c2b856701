"""``pool/manifest.json`` (format ``mustangs-pool/1``): every field a reader uses, typed and bounded.

Unknown top-level keys are kept (runs add provenance such as ``summary``); unknown keys inside
entries are refused (see :mod:`mustangs.io.validation`), except in a generator's ``origin``, which
is free provenance whose known keys are typed (:class:`PoolOrigin`). The keys a trainer pool that
remembers (``output.pool_members``, docs/lineages.md) adds, ``lineage`` and ``roles``, are optional:
pools written before them load unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from mustangs.io.validation import MAX_GENERATORS, Ident, NetworkModel, Open, SafeName, Sha256, Strict, Weight


Cell = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]
#: Why a trainer kept a generator: a final centre, the best of its lineage, a snapshot.
Role = Literal["centre", "lineage-best", "snapshot"]


class PoolOrigin(Open):
    """Where a generator came from. Every key is optional and other keys are kept (imported pools
    record e.g. ``source`` and ``file``)."""

    cell: Cell | Annotated[int, Field(ge=0)] | None = None  # grid cell [row, col] it was a centre of (a flat index in hand-made pools)
    generation: int | None = Field(None, ge=0)  # generation it was taken at
    lineage: Cell | None = None           # founder cell [row, col] of its lineage (issue 19)
    roles: list[Role] | None = Field(None, min_length=1, max_length=3)  # why the pool holds it


class PoolGenerator(Strict):
    """One generator of a pool manifest."""

    id: Ident
    file: SafeName
    sha256: Sha256
    origin: PoolOrigin = Field(default_factory=PoolOrigin)
    scores: dict[str, float | None] = Field(default_factory=dict)


class PoolMixture(Strict):
    """One cell's mixture weights over the pool's generator ids."""

    cell: list[Annotated[int, Field(ge=0)]] = Field(min_length=2, max_length=2)
    weights: dict[str, Weight]
    scores: dict[str, float | None] = Field(default_factory=dict)


class PoolManifest(Open):
    """``pool/manifest.json``."""

    format: Literal["mustangs-pool/1"]
    network: NetworkModel
    dataset: str = Field(min_length=1, max_length=64)
    generators: list[PoolGenerator] = Field(min_length=1, max_length=MAX_GENERATORS)
    mixtures: list[PoolMixture] = Field(default_factory=list)


__all__ = ["PoolManifest", "PoolGenerator", "PoolMixture", "PoolOrigin"]
