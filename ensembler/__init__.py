"""Mustangs ensembler: re-purpose a pool of generators by optimising mixture weights.

Owns the objectives, the search methods, ``ensemble.json`` and Pareto fronts. May import the
foundation (:mod:`mustangs`) only.

``ensembler.Ensemble`` is imported lazily (it needs torch), so that ``import ensembler`` and
``ensembler --help`` stay instant, and the numpy-only :mod:`ensembler.mixture_math` can be
imported by the serving runtime without torch.
"""

from __future__ import annotations

__all__ = ["Ensemble"]


def __getattr__(name: str):
    """Lazy access to :class:`ensembler.ensemble.Ensemble` (imports torch)."""
    if name == "Ensemble":
        from ensembler.ensemble import Ensemble

        return Ensemble
    raise AttributeError(f"module 'ensembler' has no attribute {name!r}")
