"""Metric primitives on the evaluation classifier: FID, TVD over classes, IS.

Everything is computed from :class:`FeatureStats`, the per-sample-set statistics that also
mix linearly over a mixture of generators (design.md §5): class histogram, mean softmax,
mean of Σ p log p, feature mean and feature second moment. Metric names carry their
protocol: ``fid_cls10k`` = Fréchet distance on classifier features with 10k samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (pytorch-fid's implementation), clipped at 0."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    d = calculate_frechet_distance(np.asarray(mu1, np.float64), np.asarray(sigma1, np.float64),
                                   np.asarray(mu2, np.float64), np.asarray(sigma2, np.float64))
    return max(float(d), 0.0)


def tvd(p: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray | None = None) -> float:
    """Total variation distance ½ Σ |target − p| (target uniform when None)."""
    p = np.asarray(p, np.float64)
    q = np.full_like(p, 1.0 / p.size) if target is None else np.asarray(target, np.float64)
    if q.shape != p.shape:
        raise ValueError(f"histogram has {p.size} classes but the target has {q.size}")
    return float(0.5 * np.abs(q - p).sum())


def inception_score_from_moments(mean_probs: np.ndarray, mean_plogp: float) -> float:
    """IS = exp(E_x[KL(p(y|x) ‖ p(y))]) = exp(E[Σ p log p] − Σ p̄ log p̄)."""
    pbar = np.clip(np.asarray(mean_probs, np.float64), 1e-12, None)
    return float(np.exp(mean_plogp - (pbar * np.log(pbar)).sum()))


@dataclass
class FeatureStats:
    """Statistics of a sample set on the evaluation classifier.

    All fields are expectations over samples, so the statistics of a mixture with weights
    ``w`` are the ``w``-weighted sums of its components' statistics (see :meth:`mix`).
    """

    n: int                 # number of samples behind these statistics
    mu: np.ndarray         # [d] feature mean
    second: np.ndarray     # [d, d] feature second moment E[f fᵀ]
    hist: np.ndarray       # [C] histogram of argmax labels (sums to 1)
    mean_probs: np.ndarray  # [C] mean softmax p̄(y)
    mean_plogp: float      # E[Σ_y p(y|x) log p(y|x)]

    @property
    def sigma(self) -> np.ndarray:
        """Feature covariance (unbiased when n > 1)."""
        cov = self.second - np.outer(self.mu, self.mu)
        return cov * (self.n / (self.n - 1)) if self.n > 1 else cov

    @classmethod
    def mix(cls, stats: Sequence["FeatureStats"], weights: Sequence[float] | np.ndarray) -> "FeatureStats":
        """Exact (in expectation) statistics of the mixture Σ w_k · component_k."""
        w = np.asarray(weights, np.float64)
        w = w / w.sum()
        n = int(round(sum(wk * s.n for wk, s in zip(w, stats))))
        return cls(
            n=max(n, 2),
            mu=sum(wk * s.mu for wk, s in zip(w, stats)),
            second=sum(wk * s.second for wk, s in zip(w, stats)),
            hist=sum(wk * s.hist for wk, s in zip(w, stats)),
            mean_probs=sum(wk * s.mean_probs for wk, s in zip(w, stats)),
            mean_plogp=float(sum(wk * s.mean_plogp for wk, s in zip(w, stats))),
        )

    def to_npz(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (no pickle needed to read them back)."""
        return {"n": np.array(self.n), "mu": self.mu, "second": self.second, "hist": self.hist,
                "mean_probs": self.mean_probs, "mean_plogp": np.array(self.mean_plogp)}

    @classmethod
    def from_npz(cls, data) -> "FeatureStats":
        """Inverse of :meth:`to_npz` (``data`` from ``np.load(..., allow_pickle=False)``)."""
        return cls(int(data["n"]), np.asarray(data["mu"]), np.asarray(data["second"]), np.asarray(data["hist"]),
                   np.asarray(data["mean_probs"]), float(data["mean_plogp"]))


class StatsAccumulator:
    """Accumulates :class:`FeatureStats` batch by batch (float64 sums, constant memory)."""

    def __init__(self, feature_dim: int, num_classes: int):
        self.n = 0
        self.sum_f = torch.zeros(feature_dim, dtype=torch.float64)
        self.sum_ff = torch.zeros(feature_dim, feature_dim, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.sum_p = torch.zeros(num_classes, dtype=torch.float64)
        self.sum_plogp = 0.0

    def update(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        """Add a batch of classifier features ``[B, d]`` and logits ``[B, C]``."""
        f = features.detach().to("cpu", torch.float64)
        logp = torch.log_softmax(logits.detach().to("cpu", torch.float64), 1)
        p = logp.exp()
        self.n += f.shape[0]
        self.sum_f += f.sum(0)
        self.sum_ff += f.T @ f
        self.counts += torch.bincount(logp.argmax(1), minlength=self.counts.numel()).to(torch.float64)
        self.sum_p += p.sum(0)
        self.sum_plogp += float((p * logp).sum())

    def result(self) -> FeatureStats:
        """The statistics of everything added so far."""
        if self.n == 0:
            raise ValueError("no samples were accumulated")
        n = self.n
        return FeatureStats(n, (self.sum_f / n).numpy(), (self.sum_ff / n).numpy(), (self.counts / n).numpy(),
                            (self.sum_p / n).numpy(), self.sum_plogp / n)


def protocol_suffix(n: int) -> str:
    """``10000`` → ``"10k"``, ``2500`` → ``"2.5k"``, ``500`` → ``"500"``: the sample count in metric names."""
    if n >= 1000:
        k = n / 1000
        return f"{k:g}k"
    return str(n)


def score(fake: FeatureStats, real: FeatureStats, target: np.ndarray | None = None,
          metrics: Iterable[str] = ("fid", "tvd", "is")) -> dict[str, float]:
    """Metrics of ``fake`` against ``real``, named with their protocol (e.g. ``fid_cls10k``).

    ``target`` is the class distribution TVD is measured against (uniform when None).
    """
    tag = f"cls{protocol_suffix(fake.n)}"
    out: dict[str, float] = {}
    for m in metrics:
        if m == "fid":
            out[f"fid_{tag}"] = frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma)
        elif m == "tvd":
            out[f"tvd_{tag}"] = tvd(fake.hist, target)
        elif m == "is":
            out[f"is_{tag}"] = inception_score_from_moments(fake.mean_probs, fake.mean_plogp)
        else:
            raise ValueError(f"unknown metric {m!r}")
    return out


def parse_target(spec: str | None, num_classes: int, real_hist: np.ndarray | None = None) -> np.ndarray:
    """The class distribution TVD is measured against, from a command-line spec.

    ``None``/``"uniform"`` → uniform over ``num_classes``; ``"real"`` → ``real_hist`` (the real
    split's predicted histogram); ``"0:0.5,3:0.5"`` → the given classes with the given weights
    (others 0); ``"0.1,0.2,…"`` → one weight per class. Weights are normalised to sum to 1.
    Raises ``UserError`` (one line, with the legal forms) for anything else.
    """
    from mustangs.errors import UserError

    legal = "legal: uniform, real, 'CLASS:WEIGHT,...' (e.g. '0:0.5,3:0.5') or one weight per class"
    text = "uniform" if spec is None else str(spec).strip()
    if text == "uniform":
        return np.full(num_classes, 1.0 / num_classes)
    if text == "real":
        if real_hist is None:
            raise UserError("target 'real' needs the real split's statistics, which are not available here")
        hist = np.asarray(real_hist, np.float64)
        if hist.shape != (num_classes,):
            raise UserError(f"the real histogram has {hist.size} classes, expected {num_classes}")
        return hist / hist.sum()
    target = np.zeros(num_classes)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if parts and all(":" in p for p in parts):
            given: dict[int, str] = {}
            for p in parts:
                cls_text, _, w_text = p.partition(":")
                c, w = int(cls_text), float(w_text)
                if not 0 <= c < num_classes:
                    raise UserError(f"target class {c} out of range 0..{num_classes - 1}")
                if c in given:  # summing would hide a typo; serving's targets refuse it the same way
                    raise UserError(f"class {c} is given twice in the target ({given[c]!r} and {p!r})")
                given[c] = p
                target[c] = w
        elif parts and not any(":" in p for p in parts):
            if len(parts) != num_classes:
                raise UserError(f"target lists {len(parts)} weights, expected one per class ({num_classes}); {legal}")
            target[:] = [float(p) for p in parts]
        else:
            raise ValueError
    except ValueError:
        raise UserError(f"cannot parse target '{text}'; {legal}") from None
    if not np.all(np.isfinite(target)) or np.any(target < 0) or target.sum() <= 0:
        raise UserError(f"target '{text}' needs non-negative weights with a positive sum")
    return target / target.sum()


# --------------------------------------------------------------------------- mode coverage (2-D toys)

#: A sample is *high quality* within this many standard deviations (Euclidean) of its nearest mode.
HQ_RADIUS = 3.0
#: A mode is *covered* when at least this share of the samples lands within ``HQ_RADIUS``·σ of it.
COVER_SHARE = 0.01


@dataclass
class ModeStats:
    """Per-mode shares of a sample set on a 2-D toy of Gaussian modes (VEEGAN/PacGAN protocol).

    Both vectors are means over samples, so a mixture's statistics are the weighted sum of its
    components' (exactly, in expectation) — the ensembler can score mode coverage without sampling.
    """

    n: int                # samples behind the shares
    nearest: np.ndarray   # [M] share of samples whose nearest mode is m
    close: np.ndarray     # [M] share of samples within HQ_RADIUS·σ of mode m (high quality, at mode m)

    @classmethod
    def mix(cls, stats: Sequence["ModeStats"], weights: Sequence[float] | np.ndarray) -> "ModeStats":
        """The statistics of the mixture ``Σ w_k · stats_k`` (weights renormalised)."""
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        return cls(n=int(min(s.n for s in stats)), nearest=sum(wk * s.nearest for wk, s in zip(w, stats)),
                   close=sum(wk * s.close for wk, s in zip(w, stats)))


def mode_stats(points, centres, std: float, radius: float = HQ_RADIUS) -> ModeStats:
    """:class:`ModeStats` of ``points`` ``[N, 2]`` against mode ``centres`` ``[M, 2]`` of std ``std``."""
    x = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    c = np.asarray(centres, dtype=np.float64)
    if x.shape[0] == 0:
        raise ValueError("no samples")
    d = np.sqrt(((x[:, None, :] - c[None]) ** 2).sum(-1))        # [N, M]
    nearest = d.argmin(1)
    m = c.shape[0]
    near_hist = np.bincount(nearest, minlength=m) / x.shape[0]
    is_close = d[np.arange(x.shape[0]), nearest] <= radius * std
    close_hist = np.bincount(nearest[is_close], minlength=m) / x.shape[0]
    return ModeStats(n=int(x.shape[0]), nearest=near_hist, close=close_hist)


def mode_scores(stats: ModeStats, min_share: float = COVER_SHARE) -> dict[str, float]:
    """Modes covered, share of high-quality samples and TVD over modes (uniform target), named
    with their sample count: ``modes_covered10k``, ``high_quality10k``, ``tvd_modes10k``."""
    tag = protocol_suffix(stats.n)
    return {f"modes_covered{tag}": float((stats.close >= min_share).sum()),
            f"high_quality{tag}": float(stats.close.sum()),
            f"tvd_modes{tag}": tvd(stats.nearest)}
