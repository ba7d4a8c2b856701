"""Training the evaluation classifier (``trainer classifier train``) and measuring it on a test split
(``trainer classifier evaluate``).

The weights and their JSON go to ``$MUSTANGS_CACHE/classifiers/<dataset>/`` by default, where
:mod:`mustangs.judge.classifier_store` finds them by the dataset's name.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from mustangs.errors import UserError
from mustangs.io.atomic import write_files_atomic
from mustangs.judge.classifier import EvalClassifier, accuracy, asset_paths
from mustangs.names import TRAINABLE


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
    from mustangs.console.progress import progress_bar

    from mustangs.data.datasets import load_dataset

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
        from mustangs.judge.classifier_store import default_out_dir

        out_dir = default_out_dir(dataset)
    weights, meta = asset_paths(dataset, out_dir)
    # Both or neither: a full disk while writing the JSON must not leave new weights beside old JSON.
    write_files_atomic({Path(weights): blob, Path(meta): (json.dumps(info, indent=2) + "\n").encode()})
    return info


def evaluate_classifier(dataset: str | None = None, *, data_dir=None, n: int | None = None,
                        folder: str | Path | None = None, classifier: str | None = None) -> dict:
    """Test accuracy of a classifier on a dataset's test split (first ``n`` test images when given).

    ``classifier`` is a ``--classifier NAME_OR_DIR`` spec (default: the one found for
    ``dataset``); ``folder`` is the older ``--weights-dir`` form. ``dataset`` defaults to the
    classifier's own dataset.
    """
    from mustangs.judge import classifier_store
    from mustangs.data.datasets import load_dataset

    if folder is not None:
        model = classifier_store.load_classifier(dataset or "fashion-mnist", folder=folder)
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


__all__ = ["train_classifier", "evaluate_classifier"]
