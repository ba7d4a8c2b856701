"""Mustangs ensembler: re-purpose a pool of generators by optimising mixture weights."""

from ensembler.ensemble import Ensemble

__all__ = ["Ensemble"]
