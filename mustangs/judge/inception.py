"""Inception FID and KID (``fid_incep<N>``, ``kid_incep<N>``) on pytorch-fid's InceptionV3 — local weights only.

These are the numbers papers report for RGB data (CIFAR-10, CelebA): Fréchet distance and the
unbiased polynomial-kernel MMD² on the 2048-d pool features. Nothing here downloads: the weights must already be at
``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (where pytorch-fid would
cache them). Without them :func:`require_weights` fails at once with one line saying where to
put the file. The weights are read with ``torch.load(weights_only=True)`` (no pickle code runs).
On CPU Inception costs ~250 ms per image, so this is an opt-in metric (``trainer score --inception``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mustangs.errors import UserError

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"


def weights_path() -> Path:
    """Where pytorch-fid's Inception weights must be: ``torch.hub.get_dir()/checkpoints/`` (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def require_weights() -> Path:
    """The weights file, or a ``UserError`` naming where to put it (never downloads)."""
    path = weights_path()
    if not path.is_file():
        raise UserError(f"Inception FID needs pytorch-fid's weights at {path} (not downloaded automatically); "
                        f"fetch {WEIGHTS_URL} there (or set TORCH_HOME), or drop --inception")
    return path


def load_inception(device: str | torch.device = "cpu") -> nn.Module:
    """pytorch-fid's InceptionV3 (2048-d pool features) with the local weights, in eval mode."""
    import pytorch_fid.inception as pi

    path = require_weights()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise UserError(f"cannot read Inception weights {path}: {str(exc).splitlines()[0]}") from None

    # Build the FID Inception without pytorch-fid's own loader (which would go to the network
    # when the cache is missing and unpickles without weights_only).
    original = pi.load_state_dict_from_url
    pi.load_state_dict_from_url = lambda *a, **k: state
    try:
        model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except RuntimeError as exc:
        raise UserError(f"{path} does not hold pytorch-fid's Inception weights: "
                        f"{str(exc).splitlines()[0]}") from None
    finally:
        pi.load_state_dict_from_url = original
    model.sha256 = WEIGHTS_NAME  # the file name carries its hash prefix; keys the real-feature cache
    return model.to(device).eval()


@torch.no_grad()
def inception_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """2048-d pool features of images ``x`` in [-1, 1] (uint8 accepted; 1 channel repeated to 3)."""
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 127.5 - 1
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"Inception FID needs images [N, 1|3, H, W], got shape {tuple(x.shape)}")
    x = (x.to(torch.float32).clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    device = next(model.parameters()).device
    return model(x.to(device))[0].flatten(1).cpu()


def default_device() -> torch.device:
    """CUDA when available (Inception is ~250 ms per image on CPU), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def inception_moments(model: nn.Module, x: torch.Tensor, batch_size: int = 50,
                      progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean, covariance (unbiased) and count of Inception features of images ``x`` in [-1, 1] (or uint8)."""
    from mustangs.console.progress import progress_bar

    n, s1, s2 = 0, None, None
    for i in progress_bar(range(0, x.shape[0], batch_size), desc="inception", unit="batch", progress=progress,
                          leave=False):
        f = inception_features(model, x[i:i + batch_size]).to(torch.float64)
        s1 = f.sum(0) if s1 is None else s1 + f.sum(0)
        s2 = f.T @ f if s2 is None else s2 + f.T @ f
        n += f.shape[0]
    if n < 2:
        raise UserError("Inception FID needs at least 2 samples")
    mu = (s1 / n).numpy()
    cov = ((s2 / n).numpy() - np.outer(mu, mu)) * (n / (n - 1))
    return mu, cov, n


def inception_feature_array(model: nn.Module, x: torch.Tensor, batch_size: int = 50,
                            progress: bool | None = None) -> np.ndarray:
    """Pool features ``[N, D]`` (float32) of images ``x`` in [-1, 1] (or uint8), batch by batch."""
    from mustangs.console.progress import progress_bar

    parts = [inception_features(model, x[i:i + batch_size]).to(torch.float32).numpy()
             for i in progress_bar(range(0, x.shape[0], batch_size), desc="inception", unit="batch",
                                   progress=progress, leave=False, ticker=True)]
    if not parts:
        raise UserError("Inception metrics need at least 2 samples")
    return np.concatenate(parts)


def moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature array (float64)."""
    f = np.asarray(features, np.float64)
    if f.shape[0] < 2:
        raise UserError("Inception FID needs at least 2 samples")
    return f.mean(0), np.cov(f, rowvar=False)


def real_inception_features(model: nn.Module, dataset: str, split: str, x: Callable[[], torch.Tensor],
                            n: int | None = None) -> np.ndarray:
    """Inception features of a real split, cached as ``.npy`` under ``$MUSTANGS_CACHE/stats/`` (no pickle).

    ``x()`` loads the images only on a cache miss. The key holds dataset, split, count and the
    network's identity (the weights file name, which carries its hash, or a hash of a stand-in's
    state), so a different network never meets these features.
    """
    from mustangs.data.datasets import default_cache_dir
    from mustangs.io.atomic import atomic_path
    from mustangs.judge.evaluation import module_hash

    count = "all" if n is None else f"{int(n)}s"
    ident = module_hash(model).replace(".pth", "")[-16:]
    path = default_cache_dir() / "stats" / f"{dataset}-{split}-{count}-incep-{ident}-features.npy"
    try:
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 2 and arr.shape[0] >= 2 and np.all(np.isfinite(arr)):
            return arr
    except (OSError, ValueError, EOFError):
        pass
    feats = inception_feature_array(model, x())
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, feats, allow_pickle=False)
    except OSError:
        pass
    return feats


def inception_scores(model: nn.Module, real: np.ndarray, fake_x: torch.Tensor,
                     metrics=("fid", "kid")) -> dict[str, float]:
    """``fid_incep<N>`` and ``kid_incep<N>`` of images ``fake_x`` against real Inception features."""
    from mustangs.judge.manifold import kid
    from mustangs.judge.metrics import frechet_distance, protocol_suffix

    fake = inception_feature_array(model, fake_x)
    tag = f"incep{protocol_suffix(fake.shape[0])}"
    out: dict[str, float] = {}
    if "fid" in metrics:
        mu_f, cov_f = moments(fake)
        mu_r, cov_r = moments(real)
        out[f"fid_{tag}"] = frechet_distance(mu_f, cov_f, mu_r, cov_r)
    if "kid" in metrics:
        out[f"kid_{tag}"] = kid(real, fake)
    return out


def available() -> bool:
    """Whether the Inception weights are on disk (Inception metrics are then computed where they apply)."""
    return weights_path().is_file()


__all__ = ["weights_path", "require_weights", "load_inception", "inception_features", "inception_moments",
           "inception_feature_array", "moments", "real_inception_features", "inception_scores", "available",
           "default_device"]
