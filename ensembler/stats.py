"""Per-generator statistics on the evaluation classifier, computed once and cached on disk.

The ensembler never re-samples during its search (design.md §5). Each generator is sampled
once (``n`` samples, default 10k, batched, on the GPU when there is one) and reduced to a
:class:`mustangs.judge.metrics.FeatureStats`: class histogram, mean softmax and mean Σ p log p (for
IS), feature mean and feature second moment. Those mix linearly in the mixture weights, so
:mod:`ensembler.objectives` scores any mixture from them exactly (in expectation).

The cache is one ``.npz`` per generator (no pickle), named by a hash of everything the
statistics depend on: the generator's weights sha256, its network spec, the classifier's
hash, ``n`` and the latent seed. The same fields are stored inside the file and checked on
load, so a stale or foreign file is never used; a corrupt one is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mustangs.errors import UserError
from mustangs.io.atomic import atomic_path
from mustangs.judge.metrics import FeatureStats, StatsAccumulator
from mustangs.names import count
from mustangs.pool.networks import NetSpec

#: Version of the cache layout; bump when the way statistics are computed changes.
CACHE_VERSION = "ensembler-stats/1"


def default_cache_dir() -> Path:
    """``$MUSTANGS_CACHE/ensembler-stats`` (``~/.cache/mustangs/ensembler-stats`` by default)."""
    from mustangs.data.datasets import default_cache_dir as root

    return root() / "ensembler-stats"


def pick_device(device: str | None = "auto") -> torch.device:
    """``"auto"``/``None`` → CUDA when available, else CPU; anything else is passed to torch."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"bad --device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for CUDA but no GPU is available; use --device cpu or auto")
    return dev


# --------------------------------------------------------------------------- the evaluator

@dataclass
class Evaluator:
    """The evaluation classifier, its hash and the real data's statistics: what every metric needs.

    ``classifier`` is any module with ``features_and_logits(x) -> ([N, d], [N, C])``,
    ``feature_dim`` and ``num_classes`` (the shipped CNN, or a stand-in in tests). ``real`` is
    None when the real split is not available and no metric needs it (TVD against a uniform
    or given target, IS); ``missing_real`` then says why.
    """

    classifier: nn.Module
    classifier_hash: str
    real: FeatureStats | None    # statistics of the real test split (FID reference, "real" TVD target)
    dataset: str = ""
    device: torch.device = torch.device("cpu")
    classifier_record: dict = field(default_factory=dict)  # name, dataset, sha256, source, forced (results store it)
    missing_real: str | None = None                         # why ``real`` is None (the loader's message)
    real_features_fn: Callable[[int], np.ndarray] | None = None  # n -> [n, d] real features (prdc, kid)

    def no_real_note(self, without: str) -> str:
        """The one note a command prints when the real split is missing: what is skipped and the fix.

        Short on purpose: the loader's full message (every folder it looked in) comes only with an
        error that needs the split. A classifier trained with ``--data-dir`` does not remember it.
        """
        return (f"note: no real {self.dataset} test split found; {without} (pass --data-dir DIR again: "
                f"a classifier does not remember the folder it was trained from)")

    @property
    def num_classes(self) -> int:
        return int(self.classifier.num_classes)

    @property
    def feature_dim(self) -> int:
        return int(self.classifier.feature_dim)

    @property
    def record(self) -> dict:
        """The classifier record results carry (falls back to the hash for stand-in classifiers)."""
        return self.classifier_record or {"name": getattr(self.classifier, "name", type(self.classifier).__name__),
                                          "dataset": self.dataset, "sha256": self.classifier_hash,
                                          "source": "module", "forced": False}

    def require_real(self, why: str) -> FeatureStats:
        """The real statistics, or a ``UserError`` saying ``why`` they are needed and how to get them."""
        if self.real is None:
            raise UserError(f"{why} needs the real {self.dataset} test split: {self.missing_real or 'not loaded'}")
        return self.real

    def real_features(self, n: int) -> np.ndarray:
        """Features of ``n`` real test samples (the fixed stratified subset; cached on disk)."""
        if self.real_features_fn is None:
            raise UserError(f"precision/recall/density/coverage and kid need real {self.dataset} features: "
                            f"{self.missing_real or 'not available with this evaluator'}")
        return self.real_features_fn(n)

    @property
    def has_real_features(self) -> bool:
        return self.real_features_fn is not None


def load_evaluator(dataset: str, device: str | torch.device | None = "auto", *, classifier: str | None = None,
                   force: bool = False, data_dir=None, need_real: bool = True,
                   log: Callable[[str], None] | None = None) -> Evaluator:
    """The evaluation classifier for ``dataset`` with the (cached) statistics of its test split.

    ``classifier`` is a ``--classifier NAME_OR_DIR`` spec (default: the one found for
    ``dataset``: user cache, then the package); one trained for another dataset is refused unless
    ``force``. With ``need_real=False`` a missing test split is not an error: ``real`` is None
    and the metrics that need it are skipped. Raises a ``UserError`` with the remedy otherwise.
    """
    from mustangs.judge import classifier_store
    from mustangs.judge.evaluation import module_hash, real_stats

    dev = device if isinstance(device, torch.device) else pick_device(device)
    if not dataset:
        raise UserError("the pool does not say which dataset it was trained on; cannot pick a classifier")
    clf, record = classifier_store.load_checked(classifier, dataset, dev, force, what="the pool",
                                                log=log)
    real, missing = None, None
    try:
        real = real_stats(dataset, "test", clf, data_dir=data_dir)
    except UserError as exc:
        if need_real:
            raise
        missing = str(exc)
    features_fn = None
    if real is not None:
        from mustangs.judge.features import real_features

        def features_fn(n: int) -> np.ndarray:
            return real_features(dataset, "test", clf, n, data_dir=data_dir)

    return Evaluator(clf, module_hash(clf), real, dataset, dev, record, missing, features_fn)


# --------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample_stats(sample_fn: Callable[[int], torch.Tensor], evaluator: Evaluator, n: int, batch_size: int = 1000,
                 *, keep: bool = False, progress=None, desc: str = "sampling"):
    """Statistics of ``n`` samples from ``sample_fn(b) -> [b, ...]`` on the evaluator's classifier.

    With ``keep=True`` also returns the per-sample features ``[n, d]`` and labels / log-probs
    (float64 numpy) so callers can bootstrap the sampling noise of a metric.
    """
    from mustangs.console.progress import progress_bar

    if n < 2:
        raise UserError(f"need at least 2 samples for statistics (got {n})")
    clf = evaluator.classifier
    acc = StatsAccumulator(evaluator.feature_dim, evaluator.num_classes)
    feats, logps = [], []
    with progress_bar(total=n, desc=desc, unit="img", progress=progress, leave=False, ticker=True) as bar:
        done = 0
        while done < n:
            b = min(batch_size, n - done)
            x = sample_fn(b).to(evaluator.device, torch.float32)
            f, logits = clf.features_and_logits(x)
            acc.update(f, logits)
            if keep:
                feats.append(f.detach().to("cpu", torch.float64).numpy())
                logps.append(torch.log_softmax(logits.detach().to("cpu", torch.float64), 1).numpy())
            done += b
            bar.update(b)
    stats = acc.result()
    if keep:
        return stats, np.concatenate(feats), np.concatenate(logps)
    return stats


def generator_sampler(generator: nn.Module, latent_dim: int, seed: int, device: torch.device):
    """``sample_fn`` for one generator: latents from a CPU ``torch.Generator`` seeded with ``seed``.

    Latents are drawn on the CPU so the statistics do not depend on the device.
    """
    g = torch.Generator().manual_seed(int(seed))
    generator = generator.to(device).eval()

    def sample_fn(b: int) -> torch.Tensor:
        z = torch.randn(b, latent_dim, generator=g)
        return generator(z.to(device))

    return sample_fn


def generator_stats(generator: nn.Module, latent_dim: int, evaluator: Evaluator, n: int = 10_000, seed: int = 0,
                    batch_size: int = 1000, progress=None, desc: str = "sampling") -> FeatureStats:
    """Statistics of ``n`` samples of one generator (latents seeded by ``seed``)."""
    fn = generator_sampler(generator, latent_dim, seed, evaluator.device)
    stats = sample_stats(fn, evaluator, n, batch_size, progress=progress, desc=desc)
    if not (np.all(np.isfinite(stats.mu)) and np.all(np.isfinite(stats.second))):
        raise UserError(f"{desc}: the generator's samples give non-finite classifier features")
    return stats


# --------------------------------------------------------------------------- cache

def cache_key(generator_sha256: str, spec: NetSpec, classifier_hash: str, n: int, seed: int) -> dict:
    """Everything a generator's statistics depend on (stored in the cache file and hashed for its name)."""
    return {"version": CACHE_VERSION, "generator_sha256": generator_sha256, "network": spec.to_json(),
            "classifier_sha256": classifier_hash, "n": int(n), "seed": int(seed)}


class StatsCache:
    """One ``.npz`` per generator under ``root``; files whose stored key differs are ignored."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.root / f"{digest[:32]}.npz"

    def get(self, key: dict) -> FeatureStats | None:
        """The cached statistics for ``key``, or None when missing, stale or corrupt."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = json.loads(str(data["key"]))
                if stored != key:
                    return None
                stats = FeatureStats.from_npz(data)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
            return None
        if not all(np.all(np.isfinite(a)) for a in (stats.mu, stats.second, stats.hist)):
            return None
        return stats

    def put(self, key: dict, stats: FeatureStats) -> None:
        """Write atomically; a read-only cache folder only costs time."""
        try:
            with atomic_path(self.path(key)) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, key=np.array(json.dumps(key, sort_keys=True)), **stats.to_npz())
        except OSError:
            pass


@dataclass
class Source:
    """A generator to compute statistics for: a loader (so weights are read only on a cache miss)."""

    id: str
    sha256: str
    spec: NetSpec
    load: Callable[[], nn.Module]


HELD_OUT_OFFSET = 7_919  # the held-out statistics' latent seed is the search's + this (see held_out_seed)


def held_out_seed(seed: int) -> int:
    """The latent seed of the held-out statistics for a search on ``seed``: samples the search never saw.

    ``ensembler optimize`` reports its estimates on them (the search's own samples flatter the weights it
    chose), and ``serving export`` measures its statistics with ``held_out_seed(0)`` by default, so the
    served estimates of an optimised ensemble are held-out too and reuse the same cache entries.
    """
    return (int(seed) + HELD_OUT_OFFSET) % (2**63)


def pool_stats(sources: Sequence[Source], evaluator: Evaluator, n: int = 10_000, seed: int = 0,
               batch_size: int = 1000, cache: StatsCache | None = None, progress=None,
               log: Callable[[str], None] | None = None) -> list[FeatureStats]:
    """Statistics of every source (from the cache when fresh, else sampled and cached).

    All generators share the latent seed (common random numbers), which lowers the noise of
    comparisons between them.
    """
    from mustangs.console.progress import nested, progress_bar

    out: list[FeatureStats] = []
    misses = 0
    for src in progress_bar(sources, desc="statistics", unit="generator", progress=progress, ticker=True):
        key = cache_key(src.sha256, src.spec, evaluator.classifier_hash, n, seed)
        stats = cache.get(key) if cache is not None else None
        if stats is None:
            misses += 1
            stats = generator_stats(src.load(), src.spec.latent_dim, evaluator, n, seed, batch_size,
                                    progress=nested(progress), desc=f"sampling {src.id}")
            if cache is not None:
                cache.put(key, stats)
        out.append(stats)
    if log is not None:
        log(f"statistics: {len(sources) - misses} of {count(len(sources), 'generator')} from cache, {misses} sampled "
            f"({n} samples each)")
    return out


def stack(stats: Sequence[FeatureStats]) -> dict[str, np.ndarray]:
    """Per-generator statistics as stacked arrays (``hist [K, C]``, ``mu [K, d]``, ``second [K, d, d]``, ...)."""
    return {
        "n": np.array([s.n for s in stats], np.int64),
        "hist": np.stack([s.hist for s in stats]).astype(np.float64),
        "mu": np.stack([s.mu for s in stats]).astype(np.float64),
        "second": np.stack([s.second for s in stats]).astype(np.float64),
        "mean_probs": np.stack([s.mean_probs for s in stats]).astype(np.float64),
        "mean_plogp": np.array([s.mean_plogp for s in stats], np.float64),
    }


__all__ = ["Evaluator", "load_evaluator", "StatsCache", "Source", "pool_stats", "generator_stats", "sample_stats",
           "generator_sampler", "cache_key", "stack", "pick_device", "default_cache_dir"]
