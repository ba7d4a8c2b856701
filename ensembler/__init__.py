"""Mustangs ensembler: re-purpose a pool of generators by optimising mixture weights.

``ensembler.Ensemble`` is imported lazily (it needs torch), so that ``import ensembler`` and
``ensembler --help`` stay instant.
"""

from __future__ import annotations

__all__ = ["Ensemble"]


def __getattr__(name: str):
    """Lazy access to :class:`ensembler.ensemble.Ensemble`."""
    if name == "Ensemble":
        from ensembler.ensemble import Ensemble

        return Ensemble
    raise AttributeError(f"module 'ensembler' has no attribute {name!r}")
