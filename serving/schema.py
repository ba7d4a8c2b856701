"""Schema of the Mustangs metadata in an exported ONNX model, and its agreement with the graph.

``metadata_props`` are strings; each is parsed and typed here (weights finite, ≥ 0, not all
zero; one generator id per weight; latent size and sample shape bounded). Then the metadata
must describe the graph it travels with: the ``z`` input's width is the latent size, the
output's static dimensions are the sample shape, and a probe with one row per component
(``k = 0..K``) shows the graph has exactly K generators — a model whose metadata lists 10
weights for 3 generators would otherwise serve all-zero images for 7 of them.

Models exported with re-purposing statistics (:mod:`serving.repurpose`) also carry
``mustangs.source`` (what was exported: pool, ensemble or front point) and the statistics'
description (:class:`RepurposeInfo`: classifier, class names, samples) with the sha256 of the
payload; the payload itself is checked against that sha256 and its shapes against the weights
when it is decoded.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from mustangs.errors import UserError
from mustangs.io.validation import MAX_GENERATORS, MAX_LATENT_DIM, Open, Sha256, Strict, Weight, validate

#: metadata keys of the re-purposing description (kept in step with serving.repurpose.META_INFO / META_SHA256).
REPURPOSE_KEYS = {"repurpose_info": "mustangs.repurpose_info", "repurpose_sha256": "mustangs.repurpose_sha256"}


class ClassifierInfo(Open):
    """The judge the re-purposing statistics were measured with (its record; more keys are kept)."""

    name: str = Field(min_length=1, max_length=512)
    sha256: str = Field(min_length=1, max_length=128)
    dataset: str = Field("", max_length=64)
    forced: bool = False


class RepurposeInfo(Open):
    """``mustangs.repurpose_info``: what the per-generator class statistics were measured with."""

    classifier: ClassifierInfo
    class_names: list[str] = Field(min_length=1, max_length=100_000)
    samples_per_generator: int = Field(ge=2)
    seed: int = Field(ge=0)
    real_statistics: bool = True   # False: exported without the real test split (no fid_weight, no "real")

    @field_validator("class_names")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("class names must be distinct")
        return v


class OnnxMeta(Strict):
    """The parsed ``mustangs.*`` metadata of a model."""

    format: str
    weights: list[Weight] = Field(min_length=1, max_length=MAX_GENERATORS)
    latent_dim: int = Field(ge=1, le=MAX_LATENT_DIM)
    sample_shape: list[int] = Field(min_length=1, max_length=4)
    arch: str = Field("", max_length=64)
    generator_ids: list[str] = Field(min_length=1, max_length=MAX_GENERATORS)
    ensemble_sha256: str = Field("", max_length=128)
    ensemble_meta: dict[str, Any] = Field(default_factory=dict)
    source: Literal["pool", "ensemble", "front"] = "ensemble"   # what 'serving export' was given
    repurpose_info: RepurposeInfo | None = None
    repurpose_sha256: Sha256 | None = None
    classes: list[str] | None = Field(None, min_length=2, max_length=100_000)   # conditional graphs: class names

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("class names must be distinct")
        return v

    @field_validator("sample_shape")
    @classmethod
    def _sides(cls, v: list[int]) -> list[int]:
        if any(s < 1 or s > 4096 for s in v):
            raise ValueError("every side must be in 1..4096")
        return v

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if max(v) <= 0:
            raise ValueError("all weights are 0; at least one must be positive")
        return v


def parse_meta(raw: dict[str, str], keys: dict[str, str], where: str) -> OnnxMeta:
    """Parse the string ``metadata_props`` (``keys``: field → metadata key) into :class:`OnnxMeta`."""
    data: dict[str, Any] = {}
    keys = {**REPURPOSE_KEYS, **keys}
    for field, key in keys.items():
        if key not in raw:
            continue
        text = raw[key]
        if field in ("format", "arch", "ensemble_sha256", "source", "repurpose_sha256"):
            data[field] = text
            continue
        try:
            data[field] = json.loads(text)
        except (ValueError, RecursionError):
            raise UserError(f"{where}: metadata {key} is not valid JSON") from None
    for field in ("weights", "latent_dim", "sample_shape", "generator_ids"):
        if field not in data:
            raise UserError(f"{where}: malformed Mustangs metadata (missing {keys[field]})")
    meta = validate(OnnxMeta, data, f"{where}: metadata")
    if len(meta.generator_ids) != len(meta.weights):
        raise UserError(f"{where}: metadata lists {len(meta.weights)} weights but {len(meta.generator_ids)} "
                        "generator ids")
    if (meta.repurpose_info is None) != (meta.repurpose_sha256 is None):
        raise UserError(f"{where}: malformed Mustangs metadata (re-purposing statistics without their "
                        f"{'description' if meta.repurpose_info is None else 'sha256'}); export the model again")
    return meta


def _static_dims(value_info) -> list[int | str | None]:
    return [d if isinstance(d, int) else None for d in value_info.shape]


def check_graph(session, meta: OnnxMeta, where: str) -> None:
    """Refuse a model whose graph disagrees with its metadata (see the module docstring)."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = session.get_outputs()
    names = {"z", "k", "labels"} if meta.classes else {"z", "k"}
    if set(inputs) != names or len(outputs) != 1:
        raise UserError(f"{where}: the graph's inputs {sorted(inputs)} are not ({', '.join(sorted(names))}); "
                        f"not a Mustangs ensemble graph{' for its mustangs.classes' if meta.classes else ''}")
    z_dims = _static_dims(inputs["z"])
    if len(z_dims) != 2 or (z_dims[1] is not None and z_dims[1] != meta.latent_dim):
        raise UserError(f"{where}: metadata says latent_dim {meta.latent_dim} but the graph's z input has shape "
                        f"{inputs['z'].shape}")
    out_dims = _static_dims(outputs[0])
    want = list(meta.sample_shape)
    if len(out_dims) != 1 + len(want) or any(d is not None and d != w for d, w in zip(out_dims[1:], want)):
        raise UserError(f"{where}: metadata says sample shape {want} but the graph's output has shape "
                        f"{outputs[0].shape}")
    K = len(meta.weights)
    z = np.random.default_rng(0).standard_normal((K + 1, meta.latent_dim), dtype=np.float32)
    k = np.arange(K + 1, dtype=np.int64)
    feed = {"z": z, "k": k}
    if meta.classes:
        feed["labels"] = np.arange(K + 1, dtype=np.int64) % len(meta.classes)
    try:
        got = session.run(None, feed)[0]
    except Exception as exc:  # onnxruntime's own error types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{where}: the graph fails on a probe of {K + 1} rows: {first[:200]}") from None
    if tuple(got.shape) != (K + 1, *want):
        raise UserError(f"{where}: the graph returns shape {list(got.shape)} for {K + 1} rows; metadata says "
                        f"{[K + 1, *want]}")
    flat = np.abs(got.reshape(K + 1, -1)).max(axis=1)
    dead = [i for i in range(K) if not np.isfinite(flat[i]) or flat[i] == 0.0]
    if dead:
        raise UserError(f"{where}: metadata lists {K} weighted generators but the graph has no generator for "
                        f"component(s) {dead[:5]}{'...' if len(dead) > 5 else ''}; re-export the ensemble")
    if flat[K] != 0.0:
        raise UserError(f"{where}: the graph has more generators than the {K} weights in its metadata; "
                        "re-export the ensemble")


__all__ = ["OnnxMeta", "RepurposeInfo", "ClassifierInfo", "REPURPOSE_KEYS", "parse_meta", "check_graph"]
