"""``pool/manifest.json`` (format ``mustangs-pool/1``): every field a reader uses, typed and bounded.

Unknown top-level keys are kept (runs add provenance such as ``summary``); unknown keys inside
entries are refused (see :mod:`mustangs.io.validation`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from mustangs.io.validation import MAX_GENERATORS, Ident, NetworkModel, Open, SafeName, Sha256, Strict, Weight


class PoolGenerator(Strict):
    """One generator of a pool manifest."""

    id: Ident
    file: SafeName
    sha256: Sha256
    origin: dict[str, Any] = Field(default_factory=dict)
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


__all__ = ["PoolManifest", "PoolGenerator", "PoolMixture"]
