"""Building blocks of the file-format schemas (pydantic), and the one-line way to apply any schema.

Every field a reader uses is typed and bounded here, so a malformed but parseable file
(``"mixtures": 5``, ``"origin": "ab"``, a ``file`` of ``../../etc/passwd``, a latent size of
10⁹) is refused with one line naming the field, before anything is built or allocated.
Unknown top-level keys are kept (runs add provenance such as ``summary``), unknown keys
inside entries are refused.

- :class:`NetworkModel` — the ``network`` object shared by pools, ensembles and ONNX metadata
- the formats themselves: :mod:`mustangs.pool.manifest` (``pool/manifest.json``),
  :mod:`trainer.checkpoint` (checkpoints), :mod:`ensembler.schema` (``ensemble.json``, ``front.json``),
  :mod:`serving.schema` (ONNX metadata)
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from mustangs.errors import UserError

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
    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(default=None, min_length=2,
                                                                                     max_length=1000)  # conditional: class names


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


__all__ = ["validate", "describe", "NetworkModel", "FiniteFloat", "Weight", "SafeName", "Sha256",
           "Strict", "Open", "MAX_LATENT_DIM", "MAX_GENERATORS"]
