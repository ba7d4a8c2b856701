"""Sample-level scores for the pool a run leaves: diversity on the classifier, Inception for RGB data.

:meth:`trainer.run.Run.final_scores` gives every generator and every per-cell mixture its
moment scores (fid/tvd/is). This module adds, from per-sample features:

* ``precision_cls1k`` … ``coverage_cls1k`` and ``kid_cls1k`` on the evaluation classifier's
  features (``eval.diversity_samples`` samples per generator against as many real ones);
* ``fid_incep<N>`` and ``kid_incep<N>`` on InceptionV3 features for RGB data when the weights
  are on disk (``eval.inception``), the numbers papers report for CIFAR-10 or CelebA.

A mixture is scored on the concrete sample set "first round(w_k·m) samples of each neighbour"
(:func:`mustangs.judge.manifold.mixture_counts`), the same stratified construction the ensembler uses.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from mustangs.errors import UserError
from mustangs.judge.manifold import RealManifold, diversity_scores, mixture_counts
from mustangs.judge.metrics import protocol_suffix


def mixture_set(features: Sequence[np.ndarray], weights, m: int) -> np.ndarray:
    """The first ``round(w_k·m)`` rows of each component's features, stacked (``m`` rows)."""
    n = mixture_counts(weights, m)
    return np.concatenate([np.asarray(f)[:k] for f, k in zip(features, n) if k])


def diversity_for_cells(real_features: np.ndarray, features: Sequence[np.ndarray], nbr: np.ndarray,
                        mix_w: Sequence[Sequence[float]]) -> tuple[list[dict], list[dict]]:
    """Precision/recall/density/coverage/KID of every cell's generator and of every cell's mixture.

    ``features[c]`` holds generator c's ``[m, d]`` features; ``nbr[c]`` the cells of c's
    neighbourhood and ``mix_w[c]`` the mixture weights over them.
    """
    real = RealManifold.of(real_features)
    m = min(int(np.asarray(f).shape[0]) for f in features)
    tag = f"cls{protocol_suffix(m)}"
    gen = [diversity_scores(real, np.asarray(f)[:m], tag) for f in features]
    mix = [diversity_scores(real, mixture_set([features[int(j)] for j in nbr[c]], mix_w[c], m), tag)
           for c in range(len(features))]
    return gen, mix


def inception_wanted(setting: bool | None, sample_shape: tuple[int, ...]) -> bool:
    """Whether a run computes Inception metrics: ``eval.inception`` true (weights required), or None
    and the data is RGB and pytorch-fid's weights are on disk."""
    from mustangs.judge import inception

    if setting is False or len(sample_shape) != 3:
        return False
    if setting is True:
        inception.require_weights()
        return True
    return sample_shape[0] == 3 and inception.available()


def inception_for_cells(sample_fns: Sequence[Callable[[int], torch.Tensor]], n: int, real_x: Callable[[], torch.Tensor],
                        dataset: str, nbr: np.ndarray, mix_w: Sequence[Sequence[float]],
                        log: Callable[[str], None] = print) -> tuple[list[dict], list[dict]]:
    """``fid_incep<n>`` / ``kid_incep<n>`` of every cell's generator and mixture (``n`` samples each).

    ``sample_fns[c](b)`` returns ``b`` samples of cell c's generator; ``real_x()`` the real test
    images (loaded only when their features are not cached).
    """
    from mustangs.judge import inception
    from mustangs.judge.manifold import kid
    from mustangs.judge.metrics import frechet_distance

    model = inception.load_inception(inception.default_device())
    real = inception.real_inception_features(model, dataset, "test", real_x, n)
    if real.shape[0] < 2:
        raise UserError("Inception metrics need at least 2 real test images")
    mu_r, cov_r = inception.moments(real)
    log(f"inception: {n} samples per generator against {real.shape[0]} real test images")
    feats = []
    for fn in sample_fns:
        x = torch.cat([fn(min(500, n - i)).cpu() for i in range(0, n, 500)])
        feats.append(inception.inception_feature_array(model, x))
    tag = f"incep{protocol_suffix(n)}"

    def scores(f: np.ndarray) -> dict:
        mu, cov = inception.moments(f)
        return {f"fid_{tag}": frechet_distance(mu, cov, mu_r, cov_r), f"kid_{tag}": kid(real, f)}

    gen = [scores(f) for f in feats]
    mix = [scores(mixture_set([feats[int(j)] for j in nbr[c]], mix_w[c], n)) for c in range(len(feats))]
    return gen, mix


__all__ = ["mixture_set", "diversity_for_cells", "inception_wanted", "inception_for_cells"]
