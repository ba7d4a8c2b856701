"""Feature statistics of sample sets on the evaluation classifier, with a disk cache for real data.

Every metric (FID, TVD, IS) is a function of :class:`mustangs.judge.metrics.FeatureStats`; this module
computes those statistics from a tensor of samples, from a sampler (a generator), or from a
dataset split. Real-data statistics are fixed for a given classifier, so they are cached as
``.npz`` under ``$MUSTANGS_CACHE/stats/`` (no pickle), keyed by dataset, split, sample count and
the classifier's hash (a retrained classifier never meets stale statistics).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mustangs.errors import UserError
from mustangs.io.atomic import atomic_path
from mustangs.judge.metrics import FeatureStats, StatsAccumulator
from mustangs.names import SOURCE_HELP  # what a sample source may be (help and error text)

#: Seed of the fixed permutation whose first ``n`` samples form a real subset of size ``n``.
SUBSET_SEED = 20240607


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def module_hash(classifier: nn.Module) -> str:
    """The classifier's hash: its ``.sha256`` when loaded by ``load_classifier``, else a hash of its state."""
    sha = getattr(classifier, "sha256", None)
    if sha:
        return str(sha)
    h = hashlib.sha256()
    for name, t in sorted(classifier.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_input_shape(classifier: nn.Module, x: torch.Tensor) -> None:
    """Raise a ``UserError`` when samples ``x`` do not have the shape the classifier reads."""
    expected = tuple(getattr(classifier, "input_shape", ()) or ())
    if expected and tuple(x.shape[1:]) != expected:
        raise UserError(f"samples have shape {tuple(x.shape[1:])} but the evaluation classifier expects "
                        f"{expected}")


@torch.no_grad()
def _update(acc: StatsAccumulator, classifier: nn.Module, x: torch.Tensor, device: torch.device) -> None:
    acc.update(*classifier.features_and_logits(_as_input(x, device)))


def _as_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Samples as the classifier reads them: float32 in [-1, 1] on ``device`` (uint8 images rescaled)."""
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).div_(127.5).sub_(1.0)
    return x.to(device, torch.float32)


def classifier_outputs(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000):
    """``(features, logits)`` of samples ``x`` batch by batch, with the classifier in eval mode (its
    mode is restored afterwards); one pass that statistics and per-sample features share."""
    if x.shape[0] == 0:
        raise UserError("no samples to evaluate")
    check_input_shape(classifier, x)
    was_training = classifier.training
    classifier.eval()
    device = _device_of(classifier)
    try:
        for i in range(0, x.shape[0], batch_size):
            with torch.no_grad():
                out = classifier.features_and_logits(_as_input(x[i:i + batch_size], device))
            yield out
    finally:
        classifier.train(was_training)


def stats_of_tensor(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> FeatureStats:
    """:class:`FeatureStats` of samples ``x`` (float in [-1, 1], or uint8 images) on ``classifier``."""
    acc = StatsAccumulator(classifier.feature_dim, classifier.num_classes)
    for f, logits in classifier_outputs(classifier, x, batch_size):
        acc.update(f, logits)
    return acc.result()


def stats_of_sampler(classifier: nn.Module, sample_fn: Callable[[int], torch.Tensor], n: int,
                     batch_size: int = 1000, progress: bool = False) -> FeatureStats:
    """:class:`FeatureStats` of ``n`` samples drawn batch by batch from ``sample_fn``.

    ``sample_fn(b)`` returns ``b`` samples in [-1, 1] (e.g. a generator on fresh latents); only
    one batch is in memory at a time.
    """
    from tqdm import tqdm

    if n < 1:
        raise UserError(f"need at least one sample (got n={n})")
    was_training = classifier.training
    classifier.eval()
    device = _device_of(classifier)
    acc = StatsAccumulator(classifier.feature_dim, classifier.num_classes)
    try:
        with tqdm(total=n, desc="scoring", unit="img", disable=not progress, leave=False) as bar:
            done = 0
            while done < n:
                b = min(batch_size, n - done)
                with torch.no_grad():
                    x = sample_fn(b)
                if x.shape[0] != b:
                    raise ValueError(f"sample_fn({b}) returned {x.shape[0]} samples")
                check_input_shape(classifier, x)
                _update(acc, classifier, x, device)
                done += b
                bar.update(b)
    finally:
        classifier.train(was_training)
    return acc.result()


def subset_indices(total: int, n: int | None, labels: torch.Tensor | None = None) -> torch.Tensor | None:
    """Indices of the first ``n`` of a fixed seeded permutation of ``range(total)`` (None: everything).

    With ``labels`` the permutation is stratified: classes are interleaved evenly, so every prefix
    holds each class in the split's proportion (±1 sample). A real subset then carries no
    class-sampling noise (a random 10k of Fashion-MNIST's train split is off uniform by TVD
    ≈ 0.013 on average from sampling alone), and the prefix of size n is still a fixed subset.
    """
    if n is None or n >= total:
        return None
    if n < 1:
        raise UserError(f"need at least one sample (got n={n})")
    g = torch.Generator().manual_seed(SUBSET_SEED)
    perm = torch.randperm(total, generator=g)
    if labels is None:
        return perm[:n]
    # Sample i of class c (in permuted order) gets the key (rank_within_class + offset_c) / count_c;
    # sorting by key interleaves the classes in proportion. Offsets and ties are seeded.
    labels = labels[perm].to(torch.int64)
    order = torch.argsort(labels, stable=True)            # permuted positions grouped by class
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(total, dtype=torch.float64)
    rank[order] = torch.arange(total, dtype=torch.float64) - starts[labels[order]].to(torch.float64)
    offset = torch.rand(counts.numel(), generator=g, dtype=torch.float64)
    key = (rank + offset[labels]) / counts[labels].to(torch.float64)
    return perm[torch.argsort(key, stable=True)[:n]]


def stats_cache_path(dataset: str, split: str, n: int | None, classifier_hash: str) -> Path:
    """Where the cached real statistics for this key live (``$MUSTANGS_CACHE/stats/*.npz``)."""
    from mustangs.data.datasets import default_cache_dir

    count = "all" if n is None else f"{int(n)}s"  # "s": stratified subset
    return default_cache_dir() / "stats" / f"{dataset}-{split}-{count}-{classifier_hash[:16]}.npz"


def _read_cache(path: Path) -> FeatureStats | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            stats = FeatureStats.from_npz(data)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing or corrupt: recompute
    if not (np.all(np.isfinite(stats.mu)) and np.all(np.isfinite(stats.second))):
        return None
    return stats


def _write_cache(path: Path, stats: FeatureStats) -> None:
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **stats.to_npz())
    except OSError:
        pass  # a read-only cache only costs time


def real_stats(dataset: str, split: str, classifier: nn.Module | None = None, n: int | None = None,
               data_dir=None, batch_size: int = 1000, use_cache: bool = True) -> FeatureStats:
    """:class:`FeatureStats` of a real dataset split on the evaluation classifier (cached on disk).

    ``n=None`` uses the whole split; otherwise the first ``n`` samples of a fixed seeded
    permutation, stratified by label when the split has labels (the same subset every time). ``classifier`` defaults to the one shipped for
    ``dataset``. A corrupt cache file is recomputed and overwritten.
    """
    from mustangs.data.datasets import load_dataset
    from mustangs.judge.classifier_store import load_classifier

    if classifier is None:
        classifier = load_classifier(dataset)
    path = stats_cache_path(dataset, split, n, module_hash(classifier))
    if use_cache:
        cached = _read_cache(path)
        if cached is not None:
            return cached
    data = load_dataset(dataset, split, data_dir=data_dir)
    idx = subset_indices(len(data), n, data.labels)
    x = data.data if idx is None else data.data[idx]
    stats = stats_of_tensor(classifier, x, batch_size=batch_size)
    if use_cache:
        _write_cache(path, stats)
    return stats


# --------------------------------------------------------------------------- sample sources


def noise_samples(n: int, input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """``n`` samples of uniform noise in [-1, 1] with ``input_shape`` (a worst-case baseline)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *input_shape), generator=g) * 2 - 1


def _to_samples(arr: np.ndarray, input_shape: tuple[int, ...], where: str) -> torch.Tensor:
    """Check dtype/range/shape of an image array and return uint8 or float32 ``[N, *input_shape]``."""
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.asarray(arr, np.float32)
        if arr.size and not np.all(np.isfinite(arr)):
            raise UserError(f"{where} holds NaN or infinite values")
        is_image = len(tuple(input_shape)) == 3     # 2-D toy points are coordinates, not pixels
        if is_image and arr.size and (arr.min() < -1.001 or arr.max() > 1.001):
            raise UserError(f"{where}: float samples must lie in [-1, 1] (found {arr.min():.3g}..{arr.max():.3g}); "
                            f"save images as uint8 0..255 or rescale them")
    else:
        raise UserError(f"{where} has dtype {arr.dtype}; expected uint8 (0..255) or float (in [-1, 1])")
    shape = tuple(arr.shape[1:])
    want = tuple(input_shape)
    if len(want) == 3:
        c, h, w = want
        if shape == want:
            pass
        elif c == 1 and shape == (h, w):
            arr = arr[:, None]
        elif shape == (h, w, c):
            arr = np.moveaxis(arr, -1, 1)
        else:
            raise UserError(f"{where} holds samples of shape {shape}; the evaluation classifier expects "
                            f"{want} (as [N,{h},{w}]" + (f", [N,1,{h},{w}]" if c == 1 else f", [N,{c},{h},{w}]")
                            + f" or [N,{h},{w},{c}])")
    elif shape != want:
        raise UserError(f"{where} holds samples of shape {shape}; the evaluation classifier expects {want}")
    if arr.shape[0] == 0:
        raise UserError(f"{where} holds no samples")
    return torch.from_numpy(np.ascontiguousarray(arr))


def read_npy_samples(path: str | Path, input_shape: tuple[int, ...], n: int | None = None) -> torch.Tensor:
    """The first ``n`` samples of an ``.npy`` file (no pickle), checked against ``input_shape``."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read {path} as an .npy array: {str(exc).splitlines()[0]}") from None
    if not isinstance(arr, np.ndarray) or arr.ndim < 2:
        if hasattr(arr, "close"):
            arr.close()  # an .npz archive
        raise UserError(f"{path} is not an array of samples (need [N, ...])")
    try:
        arr = np.array(arr[:n] if n is not None else arr)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return _to_samples(arr, input_shape, str(path))


def read_png_folder(folder: str | Path, input_shape: tuple[int, ...], n: int | None = None) -> torch.Tensor:
    """The first ``n`` PNGs of ``folder`` (sorted by name) as uint8 ``[N, *input_shape]``."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if len(input_shape) != 3:
        raise UserError(f"a folder of PNGs cannot be scored by a classifier of {tuple(input_shape)} inputs")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not paths:
        raise UserError(f"no .png files in {folder}")
    paths = paths[:n] if n is not None else paths
    c, h, w = input_shape
    out = np.empty((len(paths), c, h, w), np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("L" if c == 1 else "RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise UserError(f"cannot read image {p}: {exc}") from None
        if arr.shape[:2] != (h, w):
            raise UserError(f"{p} is {arr.shape[1]}x{arr.shape[0]} pixels; the evaluation classifier expects {w}x{h}")
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(out)


def is_dataset_source(spec: str) -> bool:
    """Whether ``spec`` names a dataset split (``fashion-mnist:train``) rather than a file or folder."""
    from mustangs.data.datasets import DATASETS

    if Path(spec).exists():
        return False
    name = spec.partition(":")[0]
    return name in DATASETS or (":" in spec and "/" not in spec and not spec.endswith(".npy"))


def load_samples(spec: str, input_shape: tuple[int, ...], n: int | None, *, seed: int = 0,
                 data_dir=None) -> torch.Tensor:
    """Samples (uint8 or float in [-1, 1]) from a source spec: dataset split, ``.npy``, PNG folder or ``noise``.

    At most ``n`` samples (all when None; ``noise`` needs ``n``). Every user mistake — missing or
    corrupt file, unknown dataset, shape mismatch — is a one-line ``UserError``.
    """
    from mustangs.data.datasets import load_dataset, parse_source

    if spec == "noise":
        return noise_samples(n or 10000, tuple(input_shape), seed)
    if is_dataset_source(spec):
        name, split = parse_source(spec)
        data = load_dataset(name, split, data_dir=data_dir)
        idx = subset_indices(len(data), n, data.labels)
        x = data.data if idx is None else data.data[idx]
        check_input_shape_of(tuple(input_shape), x, spec)
        return x
    path = Path(spec)
    if path.is_dir():
        return read_png_folder(path, input_shape, n)
    if path.is_file():
        return read_npy_samples(path, input_shape, n)
    raise UserError(f"'{spec}': no such file or folder; a sample source is {SOURCE_HELP}")


def check_input_shape_of(expected: tuple[int, ...], x: torch.Tensor, where: str) -> None:
    """Raise a ``UserError`` when ``x``'s samples do not have shape ``expected``."""
    if tuple(x.shape[1:]) != tuple(expected):
        raise UserError(f"{where} holds samples of shape {tuple(x.shape[1:])}; the evaluation classifier "
                        f"expects {tuple(expected)}")


def source_stats(spec: str, classifier: nn.Module, n: int | None, *, seed: int = 0, data_dir=None,
                 batch_size: int = 1000) -> FeatureStats:
    """:class:`FeatureStats` of at most ``n`` samples from a source spec (see :func:`load_samples`).

    Dataset splits go through :func:`real_stats`, so they are cached like real statistics.
    """
    from mustangs.data.datasets import parse_source

    if spec != "noise" and is_dataset_source(spec):
        name, split = parse_source(spec)
        return real_stats(name, split, classifier, n=n, data_dir=data_dir, batch_size=batch_size)
    shape = tuple(getattr(classifier, "input_shape", ()))
    return stats_of_tensor(classifier, load_samples(spec, shape, n, seed=seed, data_dir=data_dir), batch_size)


def reference_scores(stats_fn: Callable[[torch.Tensor], FeatureStats], score_fn: Callable[[FeatureStats], dict],
                     dataset: str, input_shape: tuple[int, ...], sizes, *, data_dir=None, seed: int = 0
                     ) -> dict[str, dict[str, float]]:
    """What a metric's value means: the same protocol on real images and on uniform noise.

    For each sample count ``n`` in ``sizes``, ``n`` real images of the *train* split (scored
    against the test statistics inside ``score_fn``, like generated samples) give the best value
    one can hope for at that ``n`` (FID is biased upwards at small ``n``), and ``n`` samples of
    uniform noise the value of a generator that learnt nothing. Returns
    ``{"fid_cls1k": {"real": ..., "noise": ...}, "tvd_cls1k": {...}, ...}``.
    """
    out: dict[str, dict[str, float]] = {}
    for n in sorted(set(int(s) for s in sizes)):
        real = score_fn(stats_fn(load_samples(f"{dataset}:train", input_shape, n, seed=seed, data_dir=data_dir)))
        noise = score_fn(stats_fn(noise_samples(n, tuple(input_shape), seed)))
        for key in real:
            out[key] = {"real": float(real[key]), "noise": float(noise[key])}
    return out


__all__ = ["reference_scores", "stats_of_tensor", "stats_of_sampler", "real_stats", "subset_indices", "stats_cache_path",
           "module_hash", "check_input_shape", "load_samples", "source_stats", "read_npy_samples",
           "read_png_folder", "noise_samples", "SOURCE_HELP"]
