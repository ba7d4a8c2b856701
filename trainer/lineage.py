"""Lineage measurements of a grid (issue 19): how many founders still have descendants among the
centres, and how far apart the centres' genomes are.

Every cell founds one lineage; a centre that is replaced by a trained copy inherits the copy's
lineage (``Block.lineage_g``). Both numbers go into ``metrics.jsonl`` (``lineages``), TensorBoard
and the report once per generation.
"""

from __future__ import annotations

import torch


def genome_distance(params: dict[str, torch.Tensor]) -> float:
    """Mean pairwise L2 distance of the cells' flattened parameters, divided by their mean L2 norm.

    0 means identical copies; independent random genomes of equal norm give about 1.41. Relative,
    so grids of different networks compare. ``params`` holds stacked tensors ``[N, ...]``.
    """
    x = torch.cat([t.detach().reshape(t.shape[0], -1).to(torch.float64).cpu() for t in params.values()], 1)
    n = x.shape[0]
    if n < 2:
        return 0.0
    d = torch.cdist(x, x)
    mean_pair = float(d.sum() / (n * (n - 1)))
    norm = float(x.norm(dim=1).mean())
    return mean_pair / norm if norm > 0 else 0.0


def lineage_summary(records: list[dict], params: dict[str, torch.Tensor]) -> dict:
    """The ``lineages`` entry of a generation's metrics line: distinct founder lineages among the
    centre generators (and discriminators), out of the cells, and the genome distance."""
    return {"distinct_g": len({tuple(r["lineage_g"]) for r in records}),
            "distinct_d": len({tuple(r["lineage_d"]) for r in records}),
            "cells": len(records), "genome_distance_g": round(genome_distance(params), 6)}
