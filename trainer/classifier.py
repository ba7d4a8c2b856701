"""The evaluation classifier: a small CNN whose features and labels every metric is built on.

No Inception weights can be downloaded here, and Inception is the wrong yardstick for 28×28
grayscale images anyway (design.md §4). So FID/TVD/IS are measured on a small CNN trained by
the project (``trainer classifier train``). A classifier is two files the user owns:
``classifier-<dataset>.safetensors`` and a JSON beside it that records the dataset, the test
accuracy and the weights' sha256. Training writes them to ``$MUSTANGS_CACHE/classifiers/<dataset>/``
(never into the package); the Fashion-MNIST one also ships inside the package. Which file judges a
result is decided by :mod:`trainer.classifier_store` (explicit → cache → shipped); loading checks
the hash, and caches of real-data statistics are keyed by it, so a retrained classifier never
meets stale statistics.

For the 2-D toys (``rings``, ``grid25``) no training is needed: :class:`PointModesClassifier` labels a point by its
nearest mode and uses the point itself as its feature.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from trainer.atomic import sha256_file, write_bytes_atomic, write_text_atomic
from trainer.errors import UserError
from trainer.names import TRAINABLE  # datasets the CNN can be trained on → input shape (C, H, W)

#: Folder of the shipped classifier weights (``classifier-<dataset>.safetensors`` + ``.json``).
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

#: Hash that keys caches for the analytic ``rings`` classifier (bump when its definition changes).
RINGS_HASH = "analytic-rings-v1-std0.02"
#: Cache keys of the analytic classifiers of the 2-D toys.
POINT_HASHES = {"rings": RINGS_HASH, "grid25": "analytic-grid25-v1-std0.0125"}


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
    :func:`trainer.data.point_modes`), divided by ``2·std²``: the softmax is then the exact
    posterior p(mode | x) of the equal-weight mixture, so real data scores IS ≈ the number of modes.
    Features are the 2-D point itself.
    """

    def __init__(self, dataset: str = "rings"):
        super().__init__()
        from trainer.data import point_modes

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

def asset_paths(dataset: str, folder: str | Path | None = None) -> tuple[Path, Path]:
    """Paths of the weights and JSON of the classifier for ``dataset`` (in ``folder`` or the assets)."""
    folder = Path(folder) if folder is not None else ASSETS_DIR
    return folder / f"classifier-{dataset}.safetensors", folder / f"classifier-{dataset}.json"


def _train_hint(dataset: str) -> str:
    return f"train it with: trainer classifier train --dataset {dataset}"


def read_classifier_info(dataset: str, folder: str | Path | None = None) -> dict:
    """The JSON beside the classifier for ``dataset`` (dataset, test_accuracy, sha256, feature_dim, ...).

    ``folder`` given: ``classifier-<dataset>.json`` in it. Otherwise the lookup of
    :func:`trainer.classifier_store.resolve` (``$MUSTANGS_CACHE/classifiers/<dataset>/``, then
    the package).
    """
    from trainer import classifier_store

    if dataset not in TRAINABLE:
        raise UserError(f"no evaluation classifier for dataset '{dataset}'; classifiers exist for "
                        f"{', '.join(TRAINABLE)} (trained) and {', '.join(POINT_HASHES)} (analytic)")
    if folder is None:
        return dict(classifier_store.resolve(None, dataset).info)
    weights, meta = asset_paths(dataset, folder)
    if not meta.is_file() or not weights.is_file():
        raise UserError(f"no evaluation classifier for {dataset} ({weights} missing); {_train_hint(dataset)}")
    info = classifier_store._read_info(meta, weights)
    if info.get("dataset", dataset) != dataset:
        raise UserError(f"{meta} describes a classifier for {info.get('dataset')}, not {dataset}; "
                        f"{_train_hint(dataset)}")
    return info


def classifier_sha256(dataset: str) -> str:
    """The hash that identifies the classifier for ``dataset`` (keys caches of real statistics).

    The sha256 recorded in the JSON of the classifier the default lookup finds; a fixed string
    for ``rings``.
    """
    from trainer import classifier_store

    return classifier_store.resolve(None, dataset).sha256


def build_from_info(info: dict) -> EvalClassifier:
    """An untrained :class:`EvalClassifier` with the architecture recorded in ``info``."""
    shape = info.get("input_shape", [1, 28, 28])
    return EvalClassifier(num_classes=int(info["num_classes"]), feature_dim=int(info["feature_dim"]),
                          in_channels=int(shape[0]), image_size=int(shape[1]), width=int(info.get("width", 16)))


def load_classifier(dataset: str = "fashion-mnist", device: str | torch.device = "cpu",
                    folder: str | Path | None = None) -> nn.Module:
    """The evaluation classifier for ``dataset``, in eval mode on ``device``.

    Without ``folder`` the default lookup (user cache, then the package; see
    :mod:`trainer.classifier_store`); with ``folder`` the ``classifier-<dataset>.*`` files in it.
    The sha256 of the weights is checked against the JSON (a mismatch means a corrupt or foreign
    file: refuse rather than produce wrong metrics). The 2-D toys get the analytic
    :class:`PointModesClassifier`. The module carries ``.sha256`` and ``.ref``.
    """
    from trainer import classifier_store

    if dataset in POINT_HASHES:
        return classifier_store.load(classifier_store.resolve(None, dataset), device)
    if folder is None:
        return classifier_store.load(classifier_store.resolve(None, dataset), device)
    info = read_classifier_info(dataset, folder)
    _, meta = asset_paths(dataset, folder)
    ref = classifier_store.ClassifierRef(Path(folder).resolve().name, dataset, str(info["sha256"]), "explicit",
                                         meta.with_suffix(".safetensors"), meta, info)
    return classifier_store.load(ref, device)


# --------------------------------------------------------------------------- training

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


def _augment(x: torch.Tensor, g: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero-padded with -1 = background)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=-1.0)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None])  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None])  # [n, w]
    idx_n = torch.arange(n)[:, None, None]
    return padded[idx_n, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_classifier(dataset: str = "fashion-mnist", *, epochs: int = 8, seed: int = 0, batch_size: int = 128,
                     lr: float = 2e-3, augment: bool = True, data_dir=None, out_dir: str | Path | None = None,
                     feature_dim: int = 128, progress: bool | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the evaluation CNN on ``dataset``'s train split and write weights + JSON atomically.

    ``out_dir`` defaults to ``$MUSTANGS_CACHE/classifiers/<dataset>/`` (the user's cache, never the
    installed package), where every scoring command finds it by the dataset's name.

    Adam with a one-cycle learning-rate schedule, dropout and (optionally) random ±2-pixel
    shifts; everything seeded by ``seed``. Returns the JSON written beside the weights
    (dataset, test_accuracy, sha256, feature_dim, num_classes, epochs, seed, torch_version).
    """
    from safetensors.torch import save
    from trainer.progress import progress_bar

    from trainer.data import load_dataset

    if dataset not in TRAINABLE:
        raise UserError(f"cannot train a classifier for '{dataset}'; legal datasets: {', '.join(TRAINABLE)}")
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1 (got {epochs})")
    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    if train.labels is None or train.num_classes is None:
        raise UserError(f"dataset {dataset} has no labels; cannot train a classifier on it")
    shape = tuple(train.sample_shape)
    if shape != TRAINABLE[dataset]:
        raise UserError(f"{dataset} samples have shape {shape}, expected {TRAINABLE[dataset]}")

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = EvalClassifier(num_classes=train.num_classes, feature_dim=feature_dim, in_channels=shape[0],
                           image_size=shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        total, count = 0.0, 0
        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                           progress=progress, leave=False)
        for step in bar:
            idx = perm[step * batch_size:(step + 1) * batch_size]
            x, y = train.batch(idx), train.labels[idx]
            if augment:
                x = _augment(x, g)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        acc = accuracy(model, test.data, test.labels)
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / count:.4f}, test accuracy {acc:.4f} "
            f"({time.time() - start:.0f} s)")

    model.eval()
    test_acc = accuracy(model, test.data, test.labels)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    blob = save(state, metadata={"dataset": dataset})
    info = {
        "dataset": dataset,
        "test_accuracy": round(test_acc, 6),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "feature_dim": model.feature_dim,
        "num_classes": model.num_classes,
        "input_shape": list(model.input_shape),
        "width": model.width,
        "epochs": epochs,
        "seed": seed,
        "augment": augment,
        "train_seconds": round(time.time() - start, 1),
        "torch_version": torch.__version__,
    }
    if out_dir is None:
        from trainer.classifier_store import default_out_dir

        out_dir = default_out_dir(dataset)
    weights, meta = asset_paths(dataset, out_dir)
    write_bytes_atomic(weights, blob)
    write_text_atomic(meta, json.dumps(info, indent=2) + "\n")
    return info


def evaluate_classifier(dataset: str | None = None, *, data_dir=None, n: int | None = None,
                        folder: str | Path | None = None, classifier: str | None = None) -> dict:
    """Test accuracy of a classifier on a dataset's test split (first ``n`` test images when given).

    ``classifier`` is a ``--classifier NAME_OR_DIR`` spec (default: the one found for
    ``dataset``); ``folder`` is the older ``--weights-dir`` form. ``dataset`` defaults to the
    classifier's own dataset.
    """
    from trainer import classifier_store
    from trainer.data import load_dataset

    if folder is not None:
        model = load_classifier(dataset or "fashion-mnist", folder=folder)
        ref = model.ref
    else:
        ref = classifier_store.resolve(classifier, dataset or (None if classifier else "fashion-mnist"))
        model = classifier_store.load(ref)
    dataset = dataset or ref.dataset
    test = load_dataset(dataset, "test", data_dir=data_dir)
    x, y = test.data, test.labels
    if n is not None:
        x, y = x[:n], y[:n]
    return {"accuracy": accuracy(model, x, y), "dataset": dataset, "sha256": model.sha256, "n": int(x.shape[0]),
            "classifier": ref.record(forced=ref.dataset != dataset)}


__all__ = ["EvalClassifier", "RingsClassifier", "PointModesClassifier", "load_classifier", "classifier_sha256", "train_classifier",
           "evaluate_classifier", "read_classifier_info", "asset_paths", "accuracy", "ASSETS_DIR"]
