"""Scoring generators during training: the evaluation classifier and the real test statistics
that per-cell fid_cls scores, the mixture (1+1)-ES and the final pool scores are measured against.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from mustangs.judge.metrics import FeatureStats


class Scorer:
    """Scores generator samples on the evaluation classifier against cached real statistics.

    The per-generation Fréchet distances (one per cell generator, two per mixture ES step)
    use :meth:`fid`, which caches √Σ_real once and needs one symmetric eigen-decomposition
    per call: tr √(Σ_r Σ_g) = Σ √λ(√Σ_r Σ_g √Σ_r). It equals pytorch-fid's value (tested) at a
    fraction of the cost of ``scipy.linalg.sqrtm``; the final scores use it too (:meth:`score`).
    """

    def __init__(self, classifier, real: FeatureStats, stats_fn: Callable[[Any, torch.Tensor], FeatureStats],
                 record: dict | None = None, real_features_fn: Callable[[int], np.ndarray] | None = None):
        self.classifier, self.real, self._stats_fn = classifier, real, stats_fn
        self.record = dict(record or {})              # which classifier judges (name, dataset, sha256, forced)
        self.real_features_fn = real_features_fn      # n -> real features [n, d] (precision/recall/..., kid)
        sig = np.asarray(real.sigma, np.float64)
        evals, evecs = np.linalg.eigh((sig + sig.T) / 2)
        self._sqrt_real = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
        self._tr_real = float(np.trace(sig))

    def stats(self, x: torch.Tensor) -> FeatureStats:
        """Feature statistics of samples ``x``."""
        return self._stats_fn(self.classifier, x)

    def score(self, stats: FeatureStats, metrics=("fid",)) -> dict[str, float]:
        """Protocol-named metrics (``fid_cls1k``, ``tvd_cls10k``, …) of ``stats``; the FID through
        :meth:`fid` (pytorch-fid's value, tested, without its ``scipy.linalg.sqrtm``)."""
        from mustangs.judge.metrics import score

        metrics = tuple(metrics)
        out = score(stats, self.real, metrics=[m for m in metrics if m != "fid"])
        if "fid" in metrics:
            out[self.fid_key(stats)] = self.fid(stats)
        return {k: out[k] for k in sorted(out, key=lambda k: metrics.index(k.split("_", 1)[0]))}

    def fid(self, stats: FeatureStats) -> float:
        """Fréchet distance of ``stats`` to the real statistics (fast exact form, see class doc)."""
        sig = np.asarray(stats.sigma, np.float64)
        m = self._sqrt_real @ sig @ self._sqrt_real
        lam = np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)
        diff = np.asarray(stats.mu, np.float64) - np.asarray(self.real.mu, np.float64)
        return max(float(diff @ diff + np.trace(sig) + self._tr_real - 2 * np.sqrt(lam).sum()), 0.0)

    def fid_key(self, stats: FeatureStats) -> str:
        """The protocol name of :meth:`fid` for ``stats`` (e.g. ``fid_cls1k``)."""
        from mustangs.judge.metrics import protocol_suffix

        return f"fid_cls{protocol_suffix(stats.n)}"


def load_scorer(dataset: str, device: torch.device, log: Callable[[str], None] = print,
                data_dir=None, classifier: str | None = None, force: bool = False) -> Scorer | None:
    """The evaluation classifier and real test statistics, or ``None`` (with a warning) when the
    dataset has no classifier; training then runs without fid-based mixture search.

    ``classifier`` is the ``eval.classifier`` spec: when given it must resolve (a typo is an
    error, not a silent unscored run), and one trained for another dataset is refused unless
    ``force`` (``eval.force_classifier``).
    """
    from mustangs.errors import UserError

    try:
        from mustangs.judge import classifier_store
        from mustangs.judge import evaluation
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("mustangs."):
            log(f"warning: evaluation module missing ({exc}); training without fid_cls scores")
            return None
        raise
    try:
        ref = classifier_store.resolve(classifier, dataset)
    except UserError as exc:
        if classifier is not None:
            raise UserError(f"eval.classifier: {exc}") from None
        log(f"warning: {exc}; training without fid_cls scores and with uniform mixture weights")
        return None
    forced = classifier_store.check_dataset(ref, dataset, force, what="data.dataset",
                                            force_hint="eval.force_classifier=true", log=log)
    clf = classifier_store.load(ref, device)
    try:
        real = evaluation.real_stats(dataset, "test", clf, data_dir=data_dir)
    except UserError as exc:
        log(f"warning: no real test split to score against ({exc}); training without fid_cls scores and with "
            f"uniform mixture weights")
        return None

    def real_features_fn(n: int) -> np.ndarray:
        from mustangs.judge.features import real_features

        return real_features(dataset, "test", clf, n, data_dir=data_dir)

    log(f"scoring with classifier {ref.describe()}" + (" (forced)" if forced else ""))
    return Scorer(clf, real, evaluation.stats_of_tensor, ref.record(forced), real_features_fn)
