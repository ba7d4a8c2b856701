"""Precision, recall, density, coverage and KID on feature vectors — and of mixtures, fast.

FID and TVD summarise a sample set by moments and class counts; these metrics look at samples
one by one, which is what the field reports for diversity (mode dropping) and fidelity:

* **precision / recall** (Kynkäänniemi et al. 2019): the real manifold is the union of balls
  around each real feature with radius = distance to its k-th nearest real neighbour; precision
  is the fraction of fake samples inside it. Recall swaps the roles (real samples inside the
  fake manifold). Ties count as inside (``<=``), as in the paper's code and torch-fidelity.
* **density / coverage** (Naeem et al. 2020): density = (1/kM) Σ_j #{real balls holding fake j};
  coverage = fraction of real balls that hold at least one fake sample (``<``, as in their code).
* **KID** (Bińkowski et al. 2018): the unbiased MMD² between the two feature sets with the cubic
  polynomial kernel k(x, y) = (xᵀy / d + 1)³. torch-fidelity averages the same estimator over
  random subsets; here it is computed once over all samples (same expectation, no subset noise).

torch-fidelity computes precision/recall and KID from feature tensors too, and the tests check
that both agree to float precision; this module exists because it has no density/coverage and
because a mixture of generators needs the per-sample machinery below.

**Mixtures** (:class:`MixtureDiversity`). Moments mix linearly over mixture weights, but
recall and coverage depend on the whole sample set. The ensembler therefore keeps ``m``
feature samples per generator (drawn once) and scores a mixture ``w`` exactly on one concrete
sample set drawn from it: the first ``n_k`` samples of generator k, with ``n_k = round(w_k·m)``
(largest remainders, so Σ n_k = m). That is a stratified draw of m samples from the mixture.
Coverage then costs O(N·K) per evaluation from a precomputed "first sample of generator k
inside real ball i" table; recall needs the k-NN radii inside the selected set, i.e. one m×m
distance matrix per evaluation (a few ms at m = 1000).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

#: Neighbourhood size k of precision/recall/density/coverage (Naeem et al. recommend 5).
NEAREST_K = 5

#: The metrics :func:`prdc` returns, in order.
PRDC = ("precision", "recall", "density", "coverage")

_BLOCK = 2048  # rows per distance block (bounds memory at _BLOCK × N × 8 bytes)


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def distances(a, b) -> torch.Tensor:
    """Euclidean distances ``[len(a), len(b)]`` in float64 (‖a‖² + ‖b‖² − 2abᵀ, clipped at 0)."""
    a, b = _t(a), _t(b)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_(min=0).sqrt_()


def knn_radii(features, k: int = NEAREST_K) -> np.ndarray:
    """Distance of every row of ``features`` to its k-th nearest *other* row ``[N]``."""
    f = _t(features)
    n = f.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} samples for k-NN radii (got {n})")
    out = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, _BLOCK):
        d = distances(f[i:i + _BLOCK], f)
        rows = torch.arange(d.shape[0])
        d[rows, rows + i] = 0.0                        # self-distance exactly 0 (not rounding noise)
        out[i:i + _BLOCK] = d.kthvalue(k + 1, dim=1).values
    return out.numpy()


@dataclass
class RealManifold:
    """Real features and their k-NN radii: the fixed half of every PRDC computation."""

    features: np.ndarray   # [N, d] real feature vectors
    radii: np.ndarray      # [N] distance of each to its k-th nearest real neighbour
    k: int = NEAREST_K     # the neighbourhood size the radii were computed with

    @classmethod
    def of(cls, features, k: int = NEAREST_K) -> "RealManifold":
        """Compute the radii of ``features`` (``[N, d]``, N > k)."""
        f = np.asarray(features, np.float64)
        return cls(f, knn_radii(f, k), k)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


def prdc(real: RealManifold | np.ndarray, fake, k: int = NEAREST_K) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` features against ``real`` features.

    ``real`` may be a precomputed :class:`RealManifold` (its ``k`` then wins). Both sets need
    more than k samples.
    """
    real = real if isinstance(real, RealManifold) else RealManifold.of(real, k)
    k = real.k
    fake = np.asarray(fake, np.float64)
    if fake.ndim != 2 or fake.shape[1] != real.features.shape[1]:
        raise ValueError(f"fake features have shape {fake.shape}, real {real.features.shape}")
    fake_r = _t(knn_radii(fake, k))
    real_r = _t(real.radii)
    in_real = torch.zeros(fake.shape[0], dtype=torch.bool)      # fake j inside some real ball (<=)
    balls = torch.zeros(fake.shape[0], dtype=torch.float64)     # number of real balls holding fake j (<)
    covered = torch.zeros(real.n, dtype=torch.bool)             # real ball i holds some fake (<)
    recalled = torch.zeros(real.n, dtype=torch.bool)            # real i inside some fake ball (<=)
    for i in range(0, real.n, _BLOCK):
        d = distances(real.features[i:i + _BLOCK], fake)        # [b, M]
        r = real_r[i:i + _BLOCK, None]
        in_real |= (d <= r).any(0)
        strict = d < r
        balls += strict.sum(0)
        covered[i:i + _BLOCK] = strict.any(1)
        recalled[i:i + _BLOCK] = (d <= fake_r[None, :]).any(1)
    return {"precision": float(in_real.double().mean()), "recall": float(recalled.double().mean()),
            "density": float(balls.mean() / k), "coverage": float(covered.double().mean())}


def _poly_kernel_sums(x: torch.Tensor, y: torch.Tensor, same: bool) -> float:
    """Σ k(x_i, y_j) over all pairs (over i ≠ j when ``same``), k = (xᵀy/d + 1)³, blockwise."""
    d = x.shape[1]
    total = 0.0
    for i in range(0, x.shape[0], _BLOCK):
        kb = (x[i:i + _BLOCK] @ y.T / d + 1.0) ** 3
        if same:
            rows = torch.arange(kb.shape[0])
            kb[rows, rows + i] = 0.0
        total += float(kb.sum())
    return total


def kid(real, fake) -> float:
    """Kernel Inception Distance on any features: the unbiased MMD² with the cubic polynomial kernel.

    Equal to torch-fidelity's ``kid_features_to_metric`` with one subset holding every sample
    (tested); may be slightly negative for identical distributions (an unbiased estimate).
    """
    x, y = _t(real), _t(fake)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("KID needs at least 2 real and 2 fake samples")
    kxx = _poly_kernel_sums(x, x, True) / (n * (n - 1))
    kyy = _poly_kernel_sums(y, y, True) / (m * (m - 1))
    kxy = _poly_kernel_sums(x, y, False) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def diversity_scores(real: RealManifold, fake, tag: str, metrics: Iterable[str] = ("prdc", "kid"),
                     real_for_kid: np.ndarray | None = None) -> dict[str, float]:
    """Protocol-named metrics of ``fake`` features: ``precision_<tag>`` … ``coverage_<tag>``, ``kid_<tag>``.

    ``tag`` is e.g. ``cls1k`` (classifier features, 1000 fake samples) or ``incep10k``.
    """
    metrics = set(metrics)
    out: dict[str, float] = {}
    if "prdc" in metrics:
        out.update({f"{name}_{tag}": v for name, v in prdc(real, fake).items()})
    if "kid" in metrics:
        out[f"kid_{tag}"] = kid(real.features if real_for_kid is None else real_for_kid, fake)
    return out


# --------------------------------------------------------------------------- mixtures

def mixture_counts(weights, m: int) -> np.ndarray:
    """Samples per component for a mixture set of ``m`` samples: round(w·m) by largest remainders.

    Exact: the counts sum to ``m`` and each differs from ``w_k·m`` by less than 1.
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    raw = w * m
    n = np.floor(raw).astype(np.int64)
    short = int(m - n.sum())
    if short > 0:
        order = np.argsort(-(raw - n), kind="stable")
        n[order[:short]] += 1
    return n


class MixtureDiversity:
    """Precision/recall/density/coverage/KID of any mixture of K generators, from cached samples.

    Args:
        real: the real manifold (features + radii).
        fakes: ``K`` arrays ``[m, d]`` of each generator's features (same ``m`` for all, ``m > k``).
        neighbours: length of each fake sample's precomputed nearest-neighbour list (recall).

    A mixture ``w`` is scored on the set made of the first :func:`mixture_counts` ``(w, m)[k]``
    samples of each generator (a stratified draw of ``m`` samples from the mixture; see the
    module docstring). :meth:`coverage` and :meth:`recall` evaluate whole batches of weights and
    equal :func:`prdc` on :meth:`sample_set` exactly (tested).

    Precomputed once: real-to-fake distances ``[N, K·m]`` (float64, 8·N·K·m bytes) and, for every
    fake sample, its ``neighbours`` nearest fakes of the whole pool. A fake's k-NN radius inside
    a mixture set is the (k+1)-th entry of its list that belongs to the set (itself first), so
    recall costs O(m·neighbours + N·m) per mixture; the rare sample whose list holds too few
    members (a generator with a tiny weight among many) gets its radius computed directly.
    """

    def __init__(self, real: RealManifold, fakes: Sequence[np.ndarray], neighbours: int = 64):
        if not fakes:
            raise ValueError("no generators")
        m = {int(np.asarray(f).shape[0]) for f in fakes}
        if len(m) != 1:
            raise ValueError(f"every generator needs the same number of feature samples (got {sorted(m)})")
        self.real = real
        self.k = real.k
        self.m = m.pop()
        if self.m <= self.k:
            raise ValueError(f"need more than k={self.k} samples per generator (got {self.m})")
        self.K = len(fakes)
        self.fakes = torch.cat([_t(f) for f in fakes])                            # [K·m, d], generator-major
        total = self.K * self.m
        self._gen = np.repeat(np.arange(self.K), self.m)                           # generator of each fake
        self._pos = np.tile(np.arange(self.m), self.K)                             # its index in that generator
        # Real-to-fake distances and the coverage table first_hit[i, k]: index of generator k's
        # first sample strictly inside real ball i (m when none).
        self.d_rf = torch.cat([distances(real.features[i:i + _BLOCK], self.fakes)
                               for i in range(0, real.n, _BLOCK)]).numpy()        # [N, K·m]
        inside = (self.d_rf < real.radii[:, None]).reshape(real.n, self.K, self.m)
        self.first_hit = np.where(inside.any(2), inside.argmax(2), self.m)
        # Each fake's nearest fakes of the whole pool (itself first, at distance 0).
        L = min(total, int(neighbours))
        idx = np.empty((total, L), np.int64)
        dist = np.empty((total, L))
        for i in range(0, total, _BLOCK):
            d = distances(self.fakes[i:i + _BLOCK], self.fakes)
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = -1.0                                                # self sorts first
            v, j = d.topk(L, dim=1, largest=False)
            idx[i:i + _BLOCK], dist[i:i + _BLOCK] = j.numpy(), v.clamp(min=0).numpy()
        self._nbr_idx, self._nbr_dist = idx, dist

    def counts(self, weights) -> np.ndarray:
        """Samples each generator contributes to the mixture set of ``weights``."""
        return mixture_counts(weights, self.m)

    def members(self, weights) -> np.ndarray:
        """Global indices (into the stacked ``[K·m]`` fakes) of the mixture set of ``weights``."""
        n = self.counts(weights)
        return np.concatenate([k * self.m + np.arange(n[k]) for k in range(self.K)])

    def sample_set(self, weights) -> np.ndarray:
        """The mixture set's features ``[m, d]`` (first ``n_k`` samples of each generator)."""
        return self.fakes[self.members(weights)].numpy()

    def coverage(self, weights) -> np.ndarray:
        """Coverage of each row of ``weights [P, K]`` (or one ``[K]``): O(N·K) per row."""
        w = np.atleast_2d(np.asarray(weights, np.float64))
        n = np.stack([self.counts(row) for row in w])                             # [P, K]
        return (self.first_hit[None, :, :] < n[:, None, :]).any(2).mean(1)

    def _radii(self, sel: np.ndarray, n: np.ndarray) -> np.ndarray:
        """k-NN radius of each selected fake inside the selected set."""
        nbr = self._nbr_idx[sel]                                                   # [M, L]
        in_set = self._pos[nbr] < n[self._gen[nbr]]
        rank = np.cumsum(in_set, 1)
        found = rank[:, -1] > self.k
        col = np.argmax(rank > self.k, 1)                                          # (k+1)-th member
        radii = self._nbr_dist[sel, col]
        if not found.all():                                                        # list too short: direct
            rest = sel[~found]
            d = distances(self.fakes[rest], self.fakes[sel])
            radii[~found] = d.kthvalue(self.k + 1, dim=1).values.numpy()
        return radii

    def recall(self, weights) -> np.ndarray:
        """Recall of each row of ``weights [P, K]`` (O(m·L + N·m) per row)."""
        w = np.atleast_2d(np.asarray(weights, np.float64))
        out = np.empty(w.shape[0])
        for p, row in enumerate(w):
            n = self.counts(row)
            sel = self.members(row)
            r = self._radii(sel, n)
            hit = np.zeros(self.real.n, bool)
            start = 0
            for k in np.flatnonzero(n):                     # contiguous column blocks: no gather copy
                cols = self.d_rf[:, k * self.m:k * self.m + n[k]]
                hit |= (cols <= r[None, start:start + n[k]]).any(1)
                start += n[k]
            out[p] = float(hit.mean())
        return out

    def scores(self, weights, tag: str, metrics: Iterable[str] = ("prdc", "kid")) -> dict[str, float]:
        """Every metric of one mixture, computed directly on its sample set (protocol-named)."""
        return diversity_scores(self.real, self.sample_set(weights), tag, metrics)


__all__ = ["NEAREST_K", "PRDC", "RealManifold", "prdc", "kid", "knn_radii", "distances", "diversity_scores",
           "mixture_counts", "MixtureDiversity"]
