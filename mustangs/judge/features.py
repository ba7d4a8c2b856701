"""Per-sample classifier features (not just their moments), for the metrics that need them.

Precision/recall/density/coverage and KID (:mod:`mustangs.judge.manifold`) look at individual
feature vectors. This module extracts them from a tensor of samples or a sampler, and caches
the real split's features as ``.npy`` (no pickle) under ``$MUSTANGS_CACHE/stats/``, keyed like
the real statistics by dataset, split, count and the classifier's hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mustangs.io.atomic import atomic_path


@torch.no_grad()
def features_of_tensor(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """Classifier features ``[N, d]`` (float32) of samples ``x`` (float in [-1, 1], or uint8 images)."""
    from mustangs.judge.evaluation import classifier_outputs

    return np.concatenate([f.detach().to("cpu", torch.float32).numpy()
                           for f, _ in classifier_outputs(classifier, x, batch_size)])


@torch.no_grad()
def features_of_sampler(classifier: nn.Module, sample_fn: Callable[[int], torch.Tensor], n: int,
                        batch_size: int = 1000) -> np.ndarray:
    """Features ``[n, d]`` of ``n`` samples drawn batch by batch from ``sample_fn(b)``."""
    parts, done = [], 0
    while done < n:
        b = min(batch_size, n - done)
        parts.append(features_of_tensor(classifier, sample_fn(b), batch_size))
        done += b
    return np.concatenate(parts)


def real_features_path(dataset: str, split: str, n: int | None, classifier_hash: str) -> Path:
    """Cache file of a real split's features (``$MUSTANGS_CACHE/stats/*-features.npy``)."""
    from mustangs.data.datasets import default_cache_dir

    count = "all" if n is None else f"{int(n)}s"
    return default_cache_dir() / "stats" / f"{dataset}-{split}-{count}-{classifier_hash[:16]}-features.npy"


def real_features(dataset: str, split: str, classifier: nn.Module, n: int | None, *, data_dir=None,
                  use_cache: bool = True) -> np.ndarray:
    """Features of the first ``n`` samples of the real split's fixed stratified order (cached on disk).

    The same subset as :func:`mustangs.judge.evaluation.real_stats` uses for that ``n``. A corrupt cache
    file is recomputed and overwritten.
    """
    from mustangs.data.datasets import load_dataset
    from mustangs.judge.evaluation import module_hash, subset_indices

    path = real_features_path(dataset, split, n, module_hash(classifier))
    if use_cache:
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 2 and arr.shape[1] == int(classifier.feature_dim) and np.all(np.isfinite(arr)):
                return arr
        except (OSError, ValueError, EOFError):
            pass
    data = load_dataset(dataset, split, data_dir=data_dir)
    idx = subset_indices(len(data), n, data.labels)
    x = data.data if idx is None else data.data[idx]
    feats = features_of_tensor(classifier, x)
    if use_cache:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, feats, allow_pickle=False)
        except OSError:
            pass  # a read-only cache only costs time
    return feats


__all__ = ["features_of_tensor", "features_of_sampler", "real_features", "real_features_path"]
