"""Schema of ``ensemble.json`` (format ``mustangs-ensemble/1``), checked on every load.

Every member field is typed and bounded (weights finite and ≥ 0, sha256 as 64 hex digits,
``origin`` a mapping), at least one weight is positive, and the summary fields the tools
read back (``pools``, ``seed``, ``target``, ``metrics``, …) have their types checked; other
top-level keys are kept as provenance.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from trainer.schema import MAX_GENERATORS, NetworkModel, Open, Sha256, Strict, Weight


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
        if not any(m.weight > 0 for m in self.members):
            raise ValueError("members: every weight is 0; at least one must be positive")
        return self


__all__ = ["EnsembleDoc", "EnsembleMember"]
