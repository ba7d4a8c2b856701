"""Datasets: local lookup order, normalisation, corrupt files and the missing-data message."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from conftest import needs_fashion
from mustangs.data import datasets as data
from mustangs.data.datasets import load_dataset, make_rings, parse_source, read_idx
from mustangs.errors import UserError


def _write_idx(path, array: np.ndarray, gz: bool = True):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def _fake_mnist(folder, n=20):
    rng = np.random.default_rng(0)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), gz=False)


def test_data_dir_comes_first_and_is_normalised(tmp_path):
    _fake_mnist(tmp_path)
    ds = load_dataset("mnist", "test", data_dir=tmp_path)
    assert len(ds) == 20 and ds.sample_shape == (1, 28, 28) and ds.num_classes == 10
    x = ds.batch(slice(None))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1


def test_env_var_is_searched(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    _fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("MUSTANGS_DATA", str(tmp_path))
    assert len(load_dataset("mnist", "train")) == 20


def test_missing_data_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSTANGS_OFFLINE", "1")
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MUSTANGS_DATA", raising=False)
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "nowhere"])
    with pytest.raises(UserError) as exc:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path / "empty")
    msg = str(exc.value)
    assert "not found" in msg and str(tmp_path / "empty") in msg and "apt-get install dataset-fashion-mnist" in msg


def test_truncated_idx_is_refused(tmp_path):
    _fake_mnist(tmp_path)
    f = tmp_path / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world")
    with pytest.raises(UserError, match="IDX"):
        read_idx(junk)


def test_rings_modes_and_labels():
    ds = make_rings(4000, seed=3)
    assert ds.sample_shape == (2,) and ds.num_classes == 8
    radius = ds.data.norm(dim=1)
    assert (radius - 1).abs().max() < 0.15
    counts = torch.bincount(ds.labels, minlength=8)
    assert counts.min() > 400
    assert torch.equal(make_rings(10, seed=3).data, make_rings(10, seed=3).data)


def test_image_folder_resizes_and_crops(tmp_path):
    from PIL import Image

    for i in range(5):
        Image.fromarray(np.full((40, 60, 3), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    ds = load_dataset("image-folder", "train", data_dir=tmp_path, image_size=16)
    assert ds.sample_shape == (3, 16, 16) and len(ds) == 4
    (tmp_path / "0bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image"):
        load_dataset("image-folder", "train", data_dir=tmp_path, image_size=16)


def test_parse_source():
    assert parse_source("fashion-mnist:test") == ("fashion-mnist", "test")
    assert parse_source("rings") == ("rings", "train")
    with pytest.raises(UserError, match="unknown dataset"):
        parse_source("imagenet:train")
    with pytest.raises(UserError, match="unknown split"):
        parse_source("mnist:val")


@needs_fashion
def test_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10000
    assert torch.bincount(ds.labels).tolist() == [1000] * 10


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def test_digits_as_keras_npz_or_npy_files(tmp_path, monkeypatch):
    """A user with digits in Keras' mnist.npz (or four .npy files) needs no IDX files."""
    monkeypatch.setenv("MUSTANGS_OFFLINE", "1")
    (xtr, ytr), (xte, yte) = _digits(12, 0), _digits(5, 1)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    train, test = load_dataset("mnist", "train", data_dir=tmp_path), load_dataset("mnist", "test", data_dir=tmp_path)
    assert train.data.shape == (12, 1, 28, 28) and torch.equal(train.data[:, 0], torch.from_numpy(xtr))
    assert torch.equal(test.labels, torch.from_numpy(yte)) and test.num_classes == 10
    npy = tmp_path / "npy"
    npy.mkdir()
    for k, v in {"x_train": xtr, "y_train": ytr, "x_test": xte[:, None], "y_test": yte}.items():
        np.save(npy / f"{k}.npy", v)
    assert torch.equal(load_dataset("mnist", "test", data_dir=npy).data[:, 0], torch.from_numpy(xte))


@pytest.mark.parametrize("arrays, words", [
    ({"x_train": np.zeros((3, 28, 28), np.uint8), "y_train": np.zeros(4, np.int64)}, "3 images but 4 labels"),
    ({"x_train": np.zeros((3, 32, 32), np.uint8), "y_train": np.zeros(3, np.int64)}, "shape [N, 28, 28]"),
    ({"x_train": np.full((3, 28, 28), 300), "y_train": np.zeros(3, np.int64)}, "uint8"),
    ({"x_train": np.zeros((3, 28, 28), np.uint8), "y_train": np.full(3, 11)}, "integers 0..9"),
    ({"x_train": np.zeros((3, 28, 28), np.uint8)}, "lacks y_train"),
])
def test_bad_digit_arrays_are_refused_in_one_line(tmp_path, monkeypatch, arrays, words):
    monkeypatch.setenv("MUSTANGS_OFFLINE", "1")
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]")) as err:
        load_dataset("mnist", "train", data_dir=tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UserError, match="cannot read the mnist arrays"):
        load_dataset("mnist", "train", data_dir=tmp_path)
