"""Mixture objectives scored from per-generator statistics, without re-sampling.

For mixture weights ``w`` over K generators with statistics (histogram p_k, mean softmax,
mean Σ p log p, feature mean μ_k, feature second moment S_k), the mixture's statistics are

    p = Σ w_k p_k,   μ = Σ w_k μ_k,   Σ = c · (Σ w_k S_k − μ μᵀ)      (c = n / (n − 1))

exactly in expectation (design.md §5). Objectives are *losses* (lower is better):

* ``tvd`` — ½ Σ_c |p(c) − target(c)|, target uniform, the real split's histogram, or given;
* ``fid`` — Fréchet distance to the real split's features;
* ``is``  — **minus** the inception score (so minimising it maximises IS);
* ``recall``, ``coverage`` — 1 − recall / 1 − coverage (Kynkäänniemi et al. 2019; Naeem et al.
  2020) on the classifier's features: these depend on samples, not moments, and are scored on
  per-generator cached feature samples mixed by weights (:mod:`ensembler.diversity`);
* weighted sums of those, e.g. ``"tvd+0.01*fid"``, ``"fid + 10*tvd"`` or ``"tvd+coverage"``.

The Fréchet distance avoids scipy's d×d ``sqrtm`` of a non-symmetric product: with
A = Σ_r^{1/2} computed once, tr (Σ Σ_r)^{1/2} = tr (A Σ A)^{1/2} = Σ √λ_i(A Σ A), and
A Σ A = c (Σ w_k A S_k A − (Aμ)(Aμ)ᵀ) is a weighted sum of matrices precomputed per
generator, so one evaluation is a weighted sum plus one symmetric eigenvalue problem —
and a whole CMA-ES population is one batched ``eigvalsh``.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mustangs.errors import UserError
from mustangs.judge.metrics import FeatureStats, inception_score_from_moments, protocol_suffix, score

from ensembler.mixture_math import FidTerms, frechet_distance_eigh, sqrt_psd, tvd_batch

#: The metrics an objective can be built from (each enters as a loss; ``is`` as −IS, ``recall`` and
#: ``coverage`` as 1 − value).
METRICS = ("tvd", "fid", "is", "recall", "coverage")

_TERM = re.compile(r"^\s*(?:(?P<c1>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[a-z]+)"
                   r"(?:\s*\*\s*(?P<c2>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?\s*$")


@dataclass(frozen=True)
class Term:
    """One summand of an objective: ``coef`` × the loss of ``metric``."""

    coef: float
    metric: str  # one of METRICS


def parse_objective(text: str) -> tuple[Term, ...]:
    """``"tvd+0.01*fid"`` → ``(Term(1, "tvd"), Term(0.01, "fid"))``.

    Terms are joined by ``+``; each is ``NAME``, ``COEF*NAME`` or ``NAME*COEF`` with a positive
    coefficient. Raises a one-line ``UserError`` naming the legal metrics otherwise.
    """
    legal = (f"legal metrics: {', '.join(METRICS)}; combine as e.g. 'tvd+0.01*fid' (is, recall and coverage are "
             f"maximised)")
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"empty objective; {legal}")
    terms: dict[str, float] = {}
    for part in text.lower().split("+"):
        m = _TERM.match(part)
        if m is None:
            raise UserError(f"cannot parse objective '{text}' at '{part.strip()}'; {legal}")
        name = m.group("name")
        if name not in METRICS:
            raise UserError(f"unknown objective '{name}' in '{text}'; {legal}")
        coef = float(m.group("c1") or 1.0) * float(m.group("c2") or 1.0)
        if not np.isfinite(coef) or coef <= 0:
            raise UserError(f"objective coefficients must be positive (got {coef} for {name})")
        terms[name] = terms.get(name, 0.0) + coef
    return tuple(Term(c, m) for m, c in terms.items())


def describe(terms: Sequence[Term]) -> str:
    """The loss being minimised, spelled out (e.g. ``"tvd + 0.01*fid - is"``)."""
    out = []
    for t in terms:
        name = f"(1-{t.metric})" if t.metric in ("recall", "coverage") else t.metric
        body = name if t.coef == 1 else f"{t.coef:g}*{name}"
        sign = "-" if t.metric == "is" else "+"
        out.append((sign, body))
    text = " ".join(f"{s} {b}" for s, b in out).strip()
    if text.startswith("+ "):
        return text[2:]
    return "-" + text[2:] if text.startswith("- ") else text  # "-is", not "- is"


@contextlib.contextmanager
def single_threaded_blas():
    """Run BLAS/LAPACK on one thread inside the block (when ``threadpoolctl`` is installed).

    The objective's matrices are small (d×d, d ≈ 128): there, multi-threaded LAPACK only adds
    synchronisation and, on a busy machine, is 5-20× slower than one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it we only lose speed
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class MixtureObjective:
    """A loss over mixture weights, evaluated from per-generator statistics.

    Args:
        stats: one :class:`FeatureStats` per generator (same classifier, same feature size).
        real: statistics of the real data (FID reference); None when no term needs them.
        terms: parsed objective (see :func:`parse_objective`).
        target: class distribution for ``tvd`` (uniform when None).
        diversity: a :class:`mustangs.judge.manifold.MixtureDiversity` over the same generators, for
            ``recall``/``coverage`` terms and the precision/recall/density/coverage/KID report.
    """

    def __init__(self, stats: Sequence[FeatureStats], real: FeatureStats | None, terms: Sequence[Term],
                 target: np.ndarray | None = None, diversity=None):
        if not stats:
            raise UserError("no generators to build an objective from")
        needs = {t.metric for t in terms}
        if "fid" in needs and real is None:
            raise UserError("objective fid needs the real test split's statistics; pass --data-dir")
        if needs & {"recall", "coverage"} and diversity is None:
            raise UserError("objectives recall and coverage need per-sample features of the real test split; "
                            "pass --data-dir")
        self.diversity = diversity
        self.stats = list(stats)
        self.real = real
        self.terms = tuple(terms)
        self.metrics = tuple(t.metric for t in self.terms)
        self.K = len(self.stats)
        self.hist = np.stack([s.hist for s in stats]).astype(np.float64)          # [K, C]
        self.n = np.array([s.n for s in stats], np.float64)                        # [K]
        C = self.hist.shape[1]
        self.target = np.full(C, 1.0 / C) if target is None else np.asarray(target, np.float64)
        if self.target.shape != (C,):
            raise UserError(f"the target has {self.target.size} classes but the classifier has {C}")
        self.mean_probs = np.stack([s.mean_probs for s in stats]).astype(np.float64)  # [K, C]
        self.mean_plogp = np.array([s.mean_plogp for s in stats], np.float64)        # [K]
        if "fid" in self.metrics:
            self._prepare_fid()

    def _prepare_fid(self) -> None:
        self.fid_terms = FidTerms(np.stack([s.mu for s in self.stats]), np.stack([s.second for s in self.stats]),
                                  self.n, self.real.mu, self.real.sigma)

    # ------------------------------------------------------------------ evaluation
    def _check(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, np.float64)
        if w.ndim == 1:
            w = w[None]
        if w.shape[1] != self.K:
            raise ValueError(f"expected {self.K} weights, got {w.shape[1]}")
        if not np.all(np.isfinite(w)):
            raise UserError("mixture weights contain NaN or infinite values")
        return w / w.sum(1, keepdims=True)

    def losses(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric's loss for a batch of weights ``[P, K]`` (``is`` as −IS)."""
        w = self._check(weights)
        out: dict[str, np.ndarray] = {}
        for metric in self.metrics:
            if metric == "tvd":
                out["tvd"] = tvd_batch(w, self.hist, self.target)
            elif metric == "is":
                pbar = np.clip(w @ self.mean_probs, 1e-12, None)
                out["is"] = -np.exp(w @ self.mean_plogp - (pbar * np.log(pbar)).sum(1))
            elif metric == "fid":
                out["fid"] = self.fid_terms.batch(w)
            elif metric == "recall":
                out["recall"] = 1.0 - self.diversity.recall(w)
            elif metric == "coverage":
                out["coverage"] = 1.0 - self.diversity.coverage(w)
        return out

    def batch(self, weights: np.ndarray) -> np.ndarray:
        """The objective for each row of ``weights [P, K]``."""
        losses = self.losses(weights)
        return sum(t.coef * losses[t.metric] for t in self.terms)

    def __call__(self, weights: np.ndarray) -> float:
        """The objective for one weight vector ``[K]``."""
        return float(self.batch(np.asarray(weights, np.float64)[None])[0])

    # ------------------------------------------------------------------ reporting
    def mixture_stats(self, weights: np.ndarray) -> FeatureStats:
        """The mixture's :class:`FeatureStats` (for reporting with the shared metric code)."""
        return FeatureStats.mix(self.stats, self._check(weights)[0])

    def report(self, weights: np.ndarray) -> dict[str, float]:
        """Estimated metrics with protocol names (``fid_cls10k``, ``tvd_cls10k``, ``is_cls10k``, and with
        a diversity evaluator ``precision_cls1k`` … ``kid_cls1k``) plus ``objective``; FID here is
        pytorch-fid's, as in verified metrics. FID is left out when there are no real statistics."""
        mix = self.mixture_stats(weights)
        out = score(mix, self.real, self.target,
                    metrics=("fid", "tvd", "is") if self.real is not None else ("tvd", "is"))
        if self.diversity is not None:
            w = self._check(weights)[0]
            out.update(self.diversity.scores(w, f"cls{protocol_suffix(self.diversity.m)}"))
        out["objective"] = self(weights)
        return out


def single_metric_name(metric: str, n: int) -> str:
    """Protocol name of ``metric`` for ``n`` samples (``"tvd", 10000`` → ``"tvd_cls10k"``)."""
    return f"{metric}_cls{protocol_suffix(n)}"


def is_score(stats: FeatureStats) -> float:
    """Inception score (on the evaluation classifier) of one set of statistics."""
    return inception_score_from_moments(stats.mean_probs, stats.mean_plogp)


__all__ = ["single_threaded_blas", "METRICS", "Term", "parse_objective", "describe", "MixtureObjective", "frechet_distance_eigh",
           "sqrt_psd", "single_metric_name", "is_score"]
