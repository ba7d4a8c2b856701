"""Inception FID (``fid_incep<N>``) through pytorch-fid's InceptionV3 — only with local weights.

Nothing here downloads: the weights must already be at
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

from trainer.errors import UserError

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
    from tqdm import tqdm

    n, s1, s2 = 0, None, None
    for i in tqdm(range(0, x.shape[0], batch_size), desc="inception", disable=None if progress is None else not progress,
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


def real_inception_moments(model: nn.Module, dataset: str, split: str, x: Callable[[], torch.Tensor],
                           n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inception mean and covariance of a real split, cached under ``$MUSTANGS_CACHE/stats/`` (no pickle).

    ``x()`` loads the images only on a cache miss. The key holds dataset, split, count and the
    weights file's size (the file is fixed; its name already carries its hash prefix).
    """
    import zipfile

    from trainer.atomic import atomic_path
    from trainer.data import default_cache_dir

    count = "all" if n is None else f"{int(n)}s"
    path = default_cache_dir() / "stats" / f"{dataset}-{split}-{count}-incep.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, cov = np.asarray(data["mu"]), np.asarray(data["sigma"])
        if mu.shape == (2048,) and cov.shape == (2048, 2048) and np.all(np.isfinite(cov)):
            return mu, cov
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    mu, cov, _ = inception_moments(model, x())
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, mu=mu, sigma=cov)
    except OSError:
        pass
    return mu, cov


__all__ = ["weights_path", "require_weights", "load_inception", "inception_features", "inception_moments",
           "real_inception_moments", "default_device"]
