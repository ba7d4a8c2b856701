"""Sample-level diversity for the ensembler: per-generator feature samples, cached, mixed by weights.

The moment statistics of :mod:`ensembler.stats` score FID/TVD/IS of any mixture exactly, but
recall and coverage look at individual samples. So each generator is sampled once more (``m``
samples, default 1000, the same latent seed for every generator) and its classifier features
are kept as a float32 ``.npy`` in the statistics cache, keyed like the statistics (generator
sha256, network, classifier hash, ``m``, seed). :class:`mustangs.judge.manifold.MixtureDiversity`
then scores any mixture on the stratified set "first round(w_k·m) samples of generator k":
coverage in O(N·K), recall in a few milliseconds, with no new forward pass.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Sequence

import numpy as np

from mustangs.io.atomic import atomic_path
from mustangs.judge.manifold import MixtureDiversity, RealManifold

from ensembler.stats import Evaluator, Source, StatsCache, generator_sampler

#: Version of the feature-cache layout; bump when the way features are drawn changes.
FEATURES_VERSION = "ensembler-features/1"

#: Objectives that need per-sample features (each enters the loss as 1 − value).
SAMPLE_METRICS = ("recall", "coverage")


def features_key(src: Source, classifier_hash: str, m: int, seed: int) -> dict:
    """Everything a generator's cached feature samples depend on."""
    return {"version": FEATURES_VERSION, "generator_sha256": src.sha256, "network": src.spec.to_json(),
            "classifier_sha256": classifier_hash, "m": int(m), "seed": int(seed)}


def _path(cache: StatsCache, key: dict):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache.root / f"{digest[:32]}-features.npy"


def generator_features(src: Source, evaluator: Evaluator, m: int, seed: int, batch_size: int = 1000,
                       cache: StatsCache | None = None) -> np.ndarray:
    """Classifier features ``[m, d]`` of ``m`` samples of one generator (cached when ``cache`` is given)."""
    import torch

    from mustangs.errors import UserError
    from mustangs.judge.features import features_of_sampler

    key = features_key(src, evaluator.classifier_hash, m, seed)
    if cache is not None:
        try:
            arr = np.load(_path(cache, key), allow_pickle=False)
            if arr.shape == (m, evaluator.feature_dim) and np.all(np.isfinite(arr)):
                return arr
        except (OSError, ValueError, EOFError):
            pass
    fn = generator_sampler(src.load(), src.spec.latent_dim, seed, evaluator.device)
    with torch.no_grad():
        feats = features_of_sampler(evaluator.classifier, fn, m, batch_size)
    if not np.all(np.isfinite(feats)):
        raise UserError(f"{src.id}: the generator's samples give non-finite classifier features")
    if cache is not None:
        try:
            with atomic_path(_path(cache, key)) as tmp, open(tmp, "wb") as fh:
                np.save(fh, feats, allow_pickle=False)
        except OSError:
            pass
    return feats


def mixture_diversity(sources: Sequence[Source], evaluator: Evaluator, m: int = 1000, seed: int = 0,
                      batch_size: int = 1000, cache: StatsCache | None = None, progress=None,
                      log: Callable[[str], None] | None = None) -> MixtureDiversity:
    """A :class:`MixtureDiversity` over ``sources`` against ``m`` real samples' features."""
    from mustangs.console.progress import progress_bar

    real = RealManifold.of(evaluator.real_features(m))
    fakes = [generator_features(src, evaluator, m, seed, batch_size, cache)
             for src in progress_bar(sources, desc="features", unit="generator", progress=progress, ticker=True)]
    mix = MixtureDiversity(real, fakes)
    if log is not None:
        log(f"diversity: {m} feature samples per generator and {real.n} real (k={real.k}); mixtures are scored "
            f"on their first round(w·{m}) samples per generator")
    return mix


__all__ = ["SAMPLE_METRICS", "features_key", "generator_features", "mixture_diversity"]
