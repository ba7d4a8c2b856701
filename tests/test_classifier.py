"""The evaluation classifier: shipped weights load with their hash checked and are accurate;
training writes weights + JSON that load back; mistakes give one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import needs_fashion
from mustangs.data.datasets import ArrayDataset
from mustangs.errors import UserError
from mustangs.judge.classifier import ASSETS_DIR, EvalClassifier, asset_paths
from mustangs.judge.classifier_store import classifier_sha256, load_classifier
from mustangs.judge.classifier_training import train_classifier


def test_eval_classifier_shapes_and_forward_matches_features_and_logits():
    torch.manual_seed(0)
    model = EvalClassifier().eval()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    f, logits = model.features_and_logits(x)
    assert f.shape == (5, model.feature_dim) and logits.shape == (5, model.num_classes)
    assert torch.allclose(model(x), logits)


def test_shipped_fashion_classifier_metadata_and_hash():
    weights, meta = asset_paths("fashion-mnist")
    info = json.loads(meta.read_text())
    assert info["dataset"] == "fashion-mnist" and info["test_accuracy"] >= 0.90
    assert info["num_classes"] == 10 and info["feature_dim"] > 0
    assert classifier_sha256("fashion-mnist") == info["sha256"]
    model = load_classifier("fashion-mnist")
    assert not model.training and model.sha256 == info["sha256"]
    assert model.num_classes == 10 and model.feature_dim == info["feature_dim"]
    # Loading twice gives the same function (no randomness in eval mode).
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert torch.equal(model(x), load_classifier("fashion-mnist")(x))


@needs_fashion
def test_shipped_fashion_classifier_is_accurate_on_a_test_subset():
    from mustangs.data.datasets import load_dataset
    from mustangs.judge.classifier import accuracy

    test = load_dataset("fashion-mnist", "test")
    model = load_classifier("fashion-mnist")
    assert accuracy(model, test.data[:2000], test.labels[:2000]) >= 0.88


def test_tampered_weights_are_refused(tmp_path):
    for p in asset_paths("fashion-mnist"):
        shutil.copy(p, tmp_path / p.name)
    weights, _ = asset_paths("fashion-mnist", tmp_path)
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="sha256") as info:
        load_classifier("fashion-mnist", folder=tmp_path)
    assert "\n" not in str(info.value)


def test_missing_classifier_says_how_to_train_it(tmp_path):
    with pytest.raises(UserError, match="trainer classifier train --dataset mnist"):
        load_classifier("mnist", folder=tmp_path)
    with pytest.raises(UserError, match="no evaluation classifier"):
        load_classifier("cifar10")


def test_rings_hash_is_fixed():
    assert classifier_sha256("rings") == load_classifier("rings").sha256


def _tiny_dataset(n: int, seed: int) -> ArrayDataset:
    """Two easy classes: bright top half vs bright bottom half (a few hundred images)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    data = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    for c in range(10):
        rows = slice(c * 2 + 4, c * 2 + 6)
        data[labels == c, :, rows, :] = 255
    return ArrayDataset("fashion-mnist", data, labels, 10)


def test_train_writes_loadable_weights_and_json(tmp_path, monkeypatch):
    import mustangs.data.datasets

    monkeypatch.setattr(mustangs.data.datasets, "load_dataset",
                        lambda name, split, data_dir=None: _tiny_dataset(256 if split == "train" else 128,
                                                                         0 if split == "train" else 1))
    info = train_classifier("fashion-mnist", epochs=1, seed=3, out_dir=tmp_path, progress=False, log=lambda s: None)
    weights, meta = asset_paths("fashion-mnist", tmp_path)
    assert weights.is_file() and meta.is_file()
    assert json.loads(meta.read_text()) == info
    for key in ("dataset", "test_accuracy", "sha256", "feature_dim", "num_classes", "epochs", "seed", "torch_version"):
        assert key in info
    assert info["epochs"] == 1 and info["seed"] == 3
    model = load_classifier("fashion-mnist", folder=tmp_path)
    assert model.sha256 == info["sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # Same seed, same weights.
    again = train_classifier("fashion-mnist", epochs=1, seed=3, out_dir=tmp_path / "again", progress=False,
                             log=lambda s: None)
    assert again["sha256"] == info["sha256"]


def test_train_refuses_untrainable_dataset():
    with pytest.raises(UserError, match="legal datasets"):
        train_classifier("cifar10", epochs=1)


def test_assets_folder_is_inside_the_package():
    assert ASSETS_DIR.parent.parent.name == "mustangs" and ASSETS_DIR.parent.name == "judge"


def test_augmentation_is_a_random_shift_of_each_image():
    import itertools

    import torch.nn.functional as F

    from mustangs.judge.classifier_training import _augment

    x = torch.rand(16, 1, 28, 28) * 2 - 1
    y = _augment(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(16):
        assert any(torch.equal(padded[i, :, dy:dy + 28, dx:dx + 28], y[i])
                   for dx, dy in itertools.product(range(5), range(5)))


@needs_fashion
def test_classifier_eval_cli_json(capsys):
    from trainer.cli import main

    assert main(["classifier", "eval", "--dataset", "fashion-mnist", "--samples", "1000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "fashion-mnist" and out["n"] == 1000 and out["accuracy"] >= 0.88
    assert out["sha256"] == classifier_sha256("fashion-mnist")


def test_classifier_eval_cli_missing_weights_is_one_line(capsys, tmp_path):
    from trainer.cli import main

    assert main(["classifier", "eval", "--dataset", "mnist", "--weights-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trainer classifier train --dataset mnist" in err[0]
