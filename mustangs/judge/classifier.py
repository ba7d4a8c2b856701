"""The evaluation classifier: a small CNN whose features and labels every metric is built on.

No Inception weights can be downloaded here, and Inception is the wrong yardstick for 28×28
grayscale images anyway (design.md §4). So FID/TVD/IS are measured on a small CNN trained by
the project (``trainer classifier train``, :mod:`mustangs.judge.classifier_training`). A classifier is two files the user owns:
``classifier-<dataset>.safetensors`` and a JSON beside it that records the dataset, the test
accuracy and the weights' sha256. Training writes them to ``$MUSTANGS_CACHE/classifiers/<dataset>/``
(never into the package); the Fashion-MNIST one also ships inside the package. Which file judges a
result is decided by :mod:`mustangs.judge.classifier_store` (explicit → cache → shipped), which also
loads them (:func:`~mustangs.judge.classifier_store.load_classifier`); loading checks
the hash, and caches of real-data statistics are keyed by it, so a retrained classifier never
meets stale statistics.

For the 2-D toys (``rings``, ``grid25``) no training is needed: :class:`PointModesClassifier` labels a point by its
nearest mode and uses the point itself as its feature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

# the shipped weights' folder, the analytic classifiers' keys and asset paths (re-exported)
from mustangs.judge.classifier_assets import ASSETS_DIR, POINT_HASHES, RINGS_HASH, asset_paths  # noqa: F401


# --------------------------------------------------------------------------- networks

class EvalClassifier(nn.Module):
    """Small CNN for ``[N, C, H, W]`` images in [-1, 1] (28×28×1 by default).

    Three 3×3 conv blocks (BatchNorm, ReLU; 2×2 max-pool after the 1st and 2nd), a
    ``feature_dim`` penultimate layer and a linear head. The features used for FID are the
    penultimate layer's pre-activations (dense, roughly Gaussian, no dead units). Only ever
    used in eval mode outside training, so BatchNorm is deterministic.
    """

    def __init__(self, num_classes: int = 10, feature_dim: int = 128, in_channels: int = 1,
                 image_size: int = 28, width: int = 16, dropout: float = 0.3):
        super().__init__()
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.input_shape = (int(in_channels), int(image_size), int(image_size))
        self.width = w = int(width)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
        )
        side = image_size // 4
        self.fc = nn.Linear(2 * w * side * side, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.to(memory_format=torch.channels_last)  # 2-3x faster convolutions on CPU

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features ``[N, feature_dim]`` and logits ``[N, num_classes]`` in one pass."""
        h = self.conv(x.contiguous(memory_format=torch.channels_last)).flatten(1)
        f = self.fc(h)
        return f, self.head(self.drop(F.relu(f)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]``."""
        return self.features_and_logits(x)[1]


class PointModesClassifier(nn.Module):
    """Analytic classifier for a 2-D toy of Gaussian modes (``rings``, ``grid25``): no training, no weights.

    Logits are minus the squared distance to each mode centre (the geometry of
    :func:`mustangs.data.datasets.point_modes`), divided by ``2·std²``: the softmax is then the exact
    posterior p(mode | x) of the equal-weight mixture, so real data scores IS ≈ the number of modes.
    Features are the 2-D point itself.
    """

    def __init__(self, dataset: str = "rings"):
        super().__init__()
        from mustangs.data.datasets import point_modes

        centres, std = point_modes(dataset)
        self.dataset = dataset
        self.num_classes = int(centres.shape[0])
        self.feature_dim = 2
        self.input_shape = (2,)
        self.std = float(std)
        self.register_buffer("centres", centres)
        self.scale = 1.0 / (2.0 * std * std)
        self.sha256 = POINT_HASHES[dataset]
        self.eval()

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The points ``[N, 2]`` and ``-‖x − centre_c‖² / (2·std²)`` as logits ``[N, modes]``."""
        x = x.reshape(x.shape[0], 2).to(self.centres.dtype)
        d2 = (x[:, None, :] - self.centres[None]).pow(2).sum(-1)
        return x, -self.scale * d2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, modes]``."""
        return self.features_and_logits(x)[1]


class RingsClassifier(PointModesClassifier):
    """The analytic classifier of the ``rings`` toy (kept for callers of the earlier class)."""

    def __init__(self):
        super().__init__("rings")


# --------------------------------------------------------------------------- shipped weights

def build_from_info(info: dict) -> EvalClassifier:
    """An untrained :class:`EvalClassifier` with the architecture recorded in ``info``."""
    shape = info.get("input_shape", [1, 28, 28])
    return EvalClassifier(num_classes=int(info["num_classes"]), feature_dim=int(info["feature_dim"]),
                          in_channels=int(shape[0]), image_size=int(shape[1]), width=int(info.get("width", 16)))


# --------------------------------------------------------------------------- accuracy

@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             to_float: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Fraction of ``images`` (uint8 or float in [-1, 1]) whose argmax logit equals ``labels``."""
    was_training = model.training
    model.eval()
    device = next(iter(model.buffers()), torch.zeros(())).device
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size]
        x = x.to(torch.float32).div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.to(torch.float32)
        correct += int((model(x.to(device)).argmax(1).cpu() == labels[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, images.shape[0])


__all__ = ["EvalClassifier", "RingsClassifier", "PointModesClassifier", "build_from_info", "asset_paths", "accuracy",
           "ASSETS_DIR", "POINT_HASHES", "RINGS_HASH"]
