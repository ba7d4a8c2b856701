"""Test data standing in for MNIST and for Lipizzaner's published generators.

* :func:`write_mnist_idx` turns scikit-learn's 1797 real 8×8 digits into the four MNIST IDX files
  (each digit scaled into a 20×20 box centred on 28×28, as MNIST does), split 1500 / 297.
* :func:`write_lipizzaner_generators` saves ``torch.save(state_dict)`` files of Lipizzaner's
  ``four_layer_perceptron`` (keys ``0.weight`` … ``4.bias``, no ``net.`` prefix); generator c
  draws digit c (a real test image plus latent-driven noise), so a classifier can tell them apart.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

N_TRAIN = 1500


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 ``[1797, 28, 28]`` (white on black, 20×20 box, 4-pixel margin) and labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.zeros((len(d.images), 28, 28), np.uint8)
    for i, im in enumerate(d.images):
        small = Image.fromarray((im * (255 / 16)).clip(0, 255).astype(np.uint8))
        images[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.BILINEAR))
    return images, d.target.astype(np.uint8)


def _idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">I", 0x00000800 | arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    path.write_bytes(header + np.ascontiguousarray(arr, np.uint8).tobytes())


def write_mnist_idx(folder: Path) -> Path:
    """The four MNIST IDX files (uncompressed) in ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = digits_28()
    _idx(folder / "train-images-idx3-ubyte", images[:N_TRAIN])
    _idx(folder / "train-labels-idx1-ubyte", labels[:N_TRAIN])
    _idx(folder / "t10k-images-idx3-ubyte", images[N_TRAIN:])
    _idx(folder / "t10k-labels-idx1-ubyte", labels[N_TRAIN:])
    return folder


def digit_generator_state(image: np.ndarray, seed: int, latent_dim: int = 64, noise: float = 0.08) -> dict:
    """A Lipizzaner ``four_layer_perceptron`` state dict whose samples are ``image`` (uint8 28×28) plus noise."""
    from mustangs.pool.networks import MLPGenerator

    torch.manual_seed(seed)
    g = MLPGenerator(latent_dim, (1, 28, 28))
    target = torch.from_numpy(image.astype(np.float32) / 127.5 - 1).reshape(-1)
    with torch.no_grad():
        g.net[4].weight.mul_(noise)
        g.net[4].bias.copy_(torch.atanh(target.clamp(-0.995, 0.995)))
    return {k.removeprefix("net."): v.clone() for k, v in g.state_dict().items()}


def write_lipizzaner_generators(folder: Path, duplicate: int | None = 3) -> Path:
    """Ten generator files ``generator-<c>.pkl`` (digit c each) plus, with ``duplicate``, a byte-identical
    copy of that one (``generator-copy.pkl``), as Lipizzaner's output folders sometimes hold."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = digits_28()
    test_x, test_y = images[N_TRAIN:], labels[N_TRAIN:]
    for c in range(10):
        image = test_x[np.flatnonzero(test_y == c)[0]]
        torch.save(digit_generator_state(image, seed=c), folder / f"generator-{c}.pkl")
    if duplicate is not None:
        (folder / "generator-copy.pkl").write_bytes((folder / f"generator-{duplicate}.pkl").read_bytes())
    return folder


__all__ = ["digits_28", "write_mnist_idx", "write_lipizzaner_generators", "digit_generator_state", "N_TRAIN"]
