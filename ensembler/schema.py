"""Schemas of ``ensemble.json`` (format ``mustangs-ensemble/1``) and ``front.json``
(``mustangs-front/1``), checked on every load.

Every member field is typed and bounded (weights finite and ≥ 0, sha256 as 64 hex digits,
``origin`` a mapping), at least one weight is positive, and the summary fields the tools
read back (``pools``, ``seed``, ``target``, ``metrics``, …) have their types checked; other
top-level keys are kept as provenance. A front is a list of points, each an ensemble's members
with its two objective values, over one shared ``network``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mustangs.io.validation import MAX_GENERATORS, FiniteFloat, NetworkModel, Open, Sha256, Strict, Weight


class EnsembleMember(Strict):
    """One member: its id, weights file (relative to the JSON file or absolute), hash and weight."""

    id: str = Field(min_length=1, max_length=512)
    path: str = Field(min_length=1, max_length=4096)
    sha256: Sha256
    weight: Weight
    pool: str = Field("", max_length=4096)
    origin: dict[str, Any] = Field(default_factory=dict)


class EnsembleDoc(Open):
    """``ensemble.json``."""

    format: Literal["mustangs-ensemble/1"]
    network: NetworkModel
    members: list[EnsembleMember] = Field(min_length=1, max_length=MAX_GENERATORS)
    pools: list[str] = Field(default_factory=list)
    dataset: str | None = None
    method: str | None = None
    objective: str | None = None
    target: str | list[float] | None = None
    seed: int | None = None
    budget: int | None = None
    max_size: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    history: list[list[float]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_weight(self) -> "EnsembleDoc":
        _some_positive(self.members)
        return self


def _some_positive(members: list[EnsembleMember]) -> None:
    if not any(m.weight > 0 for m in members):
        raise ValueError("members: every weight is 0; at least one must be positive")


class FrontPoint(Open):
    """One point of a front: an ensemble (members over the pools) and its objective values."""

    index: int = Field(ge=0)
    size: int = Field(ge=1, le=MAX_GENERATORS)
    objectives: dict[str, FiniteFloat] = Field(min_length=2, max_length=2)
    members: list[EnsembleMember] = Field(min_length=1, max_length=MAX_GENERATORS)
    metrics: dict[str, Any] = Field(default_factory=dict)
    pool_weights: dict[str, Weight] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _some_weight(self) -> "FrontPoint":
        _some_positive(self.members)
        return self


class FrontDoc(Open):
    """``front.json`` (``ensembler front``): the Pareto-optimal ensembles of two objectives."""

    format: Literal["mustangs-front/1"]
    network: NetworkModel
    objectives: list[str] = Field(min_length=2, max_length=2)
    points: list[FrontPoint] = Field(min_length=1, max_length=10_000)
    pools: list[str] = Field(default_factory=list)
    dataset: str | None = None
    target: str | list[float] | None = None
    target_distribution: list[FiniteFloat] | None = None
    seed: int | None = None
    max_size: int | None = None
    statistics: dict[str, Any] = Field(default_factory=dict)
    classifier: dict[str, Any] = Field(default_factory=dict)
    merged: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _indices(self) -> "FrontDoc":
        if [p.index for p in self.points] != list(range(len(self.points))):
            raise ValueError("points: their 'index' fields must be 0, 1, 2, ... in order")
        for p in self.points:
            if sorted(p.objectives) != sorted(self.objectives):
                raise ValueError(f"points.{p.index}.objectives: must hold exactly {', '.join(self.objectives)}")
        return self


__all__ = ["EnsembleDoc", "EnsembleMember", "FrontDoc", "FrontPoint"]
