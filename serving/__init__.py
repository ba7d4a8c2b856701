"""Mustangs serving: export an ensemble to one ONNX graph and serve it over HTTP.

Owns the ONNX export, request-time re-purposing, the BentoML service and its CLI. May import
:mod:`ensembler` and the foundation (:mod:`mustangs`).

``serving.OnnxSampler`` is the runtime for downstream apps (numpy + onnxruntime); it is
imported lazily so that ``import serving`` stays cheap.
"""

from __future__ import annotations

__all__ = ["OnnxSampler", "export_ensemble"]


def __getattr__(name: str):
    """Lazy access to ``OnnxSampler`` and ``export_ensemble`` (the latter imports torch)."""
    if name == "OnnxSampler":
        from serving.sampler import OnnxSampler

        return OnnxSampler
    if name == "export_ensemble":
        from serving.export import export_ensemble

        return export_ensemble
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
