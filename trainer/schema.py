"""Schemas of the trainer's file formats (pydantic), and the one-line way to apply any schema.

Every field a reader uses is typed and bounded here, so a malformed but parseable file
(``"mixtures": 5``, ``"origin": "ab"``, a ``file`` of ``../../etc/passwd``, a latent size of
10⁹) is refused with one line naming the field, before anything is built or allocated.
Unknown top-level keys are kept (runs add provenance such as ``summary``), unknown keys
inside entries are refused.

- :class:`PoolManifest` — ``pool/manifest.json`` (format ``mustangs-pool/1``)
- :class:`CheckpointDoc`, :class:`CheckpointIndex` — ``checkpoints/gen-*.json``, ``index.json``
- :class:`NetworkModel` — the ``network`` object shared by pools, ensembles and ONNX metadata
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from trainer.errors import UserError

M = TypeVar("M", bound=BaseModel)

#: Largest latent size a file may declare (the shipped configs use 8..100).
MAX_LATENT_DIM = 1 << 16
#: Largest side of a sample shape a file may declare.
MAX_SIDE = 4096
#: Most generators one pool or ensemble may list.
MAX_GENERATORS = 100_000

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


def _safe_name(name: str) -> str:
    """A file name relative to its folder: no absolute path, drive, ``..``, or empty part."""
    if not name or "\x00" in name:
        raise ValueError("must be a non-empty file name")
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PurePosixPath(name).is_absolute():
        raise ValueError(f"'{name}' is an absolute path; member files must lie inside their folder")
    parts = re.split(r"[\\/]", name)
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"'{name}' leaves its folder (or has empty parts); member files must lie inside it")
    return name


def _sha256(value: str) -> str:
    if not _HEX64.match(value):
        raise ValueError("must be 64 lower-case hex digits")
    return value


FiniteFloat = Annotated[float, AfterValidator(_finite)]
Weight = Annotated[float, Field(ge=0.0), AfterValidator(_finite)]
SafeName = Annotated[str, AfterValidator(_safe_name)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
Ident = Annotated[str, Field(min_length=1, max_length=256)]


class Strict(BaseModel):
    """Unknown keys are errors; ints stay ints (no "5" → 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Open(BaseModel):
    """Unknown keys are kept (provenance written by newer versions); known ones are checked."""

    model_config = ConfigDict(extra="allow", strict=True)


class NetworkModel(Strict):
    """``{"arch", "latent_dim", "sample_shape"}``: what rebuilds a generator."""

    arch: str = Field(min_length=1, max_length=64)
    latent_dim: int = Field(ge=1, le=MAX_LATENT_DIM)
    sample_shape: list[Annotated[int, Field(ge=1, le=MAX_SIDE)]] = Field(min_length=1, max_length=4)


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


class CheckpointEntry(Strict):
    """An entry of ``checkpoints/index.json``."""

    generation: int = Field(ge=0)
    json_name: SafeName = Field(alias="json")
    json_sha256: Sha256


class CheckpointIndex(Strict):
    """``checkpoints/index.json``: the latest and the previous checkpoint."""

    latest: CheckpointEntry
    previous: CheckpointEntry | None = None


class CheckpointDoc(Open):
    """``checkpoints/gen-NNNNNN.json`` (extra keys: whatever the run stores with it)."""

    format: Literal["mustangs-checkpoint/1"]
    generation: int = Field(ge=0)
    tensors: SafeName
    tensors_sha256: Sha256
    config: dict[str, Any]
    metrics_bytes: int = Field(0, ge=0)
    last_fid: dict[str, Any] = Field(default_factory=dict)
    cells: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)


def describe(exc: ValidationError, limit: int = 3) -> str:
    """A pydantic error as one line: ``field.path: message; …`` (first ``limit`` problems)."""
    parts = []
    for e in exc.errors()[:limit]:
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = str(e["msg"]).replace("Value error, ", "")
        parts.append(f"{loc}: {msg}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def validate(model: type[M], data: Any, where: str) -> M:
    """``model`` validated from ``data``, or a one-line :class:`UserError` naming ``where`` and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{where}: {describe(exc)}") from None


__all__ = ["validate", "describe", "NetworkModel", "PoolManifest", "PoolGenerator", "PoolMixture",
           "CheckpointDoc", "CheckpointIndex", "CheckpointEntry", "FiniteFloat", "Weight", "SafeName", "Sha256",
           "Strict", "Open", "MAX_LATENT_DIM", "MAX_GENERATORS"]
