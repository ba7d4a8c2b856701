"""Datasets by name, as tensors normalised to [-1, 1].

Image datasets are read from local copies first (``--data-dir``, ``$MUSTANGS_DATA``, the
Debian dataset packages), then downloaded by torchvision when online (unless
``MUSTANGS_OFFLINE=1``). When nothing works the error says where we looked and how to get
the data. Nothing here unpickles: CIFAR-10 is read from its binary release.
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mustangs.errors import UserError

DATASETS = ("fashion-mnist", "mnist", "cifar10", "image-folder", "rings", "grid25")
#: 2-D toy datasets made of Gaussian modes (mode-coverage metrics apply; see :func:`point_modes`).
from mustangs.names import POINT_DATASETS, default_cache_dir  # noqa: E402,F401 (re-exported)
SPLITS = ("train", "test")

#: Where Debian's dataset packages put their files (apt-get install dataset-fashion-mnist).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
    "cifar10": [Path("/usr/share/datasets/cifar10")],
}

HOW_TO_GET = {
    "fashion-mnist": "on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist; or put the four "
    "*-ubyte(.gz) files of https://github.com/zalandoresearch/fashion-mnist in a folder and pass "
    "--data-dir DIR (or set MUSTANGS_DATA)",
    "mnist": "put the four MNIST *-ubyte(.gz) files (or Keras' mnist.npz, or x_train/y_train/x_test/y_test.npy) "
    "in a folder and pass --data-dir DIR (or set MUSTANGS_DATA), or run once with internet access so "
    "torchvision can download them",
    "cifar10": "unpack cifar-10-binary.tar.gz (the binary release) into a folder and pass --data-dir "
    "DIR (or set MUSTANGS_DATA), or run once with internet access",
}


@dataclass
class ArrayDataset:
    """A whole dataset in memory.

    ``data`` is uint8 ``[N, C, H, W]`` for images (kept small; normalised per batch) or
    float32 ``[N, D]`` for point clouds such as ``rings``.
    """

    name: str
    data: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int | None

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)`` or ``(2,)``."""
        return tuple(self.data.shape[1:])

    def batch(self, index: torch.Tensor | slice | Sequence[int]) -> torch.Tensor:
        """Samples at ``index`` as float32 in [-1, 1]."""
        x = self.data[index]
        if x.dtype == torch.uint8:
            return x.to(torch.float32).div_(127.5).sub_(1.0)
        return x.to(torch.float32)

    def subset(self, index: torch.Tensor) -> "ArrayDataset":
        """A dataset holding only the samples at ``index``."""
        labels = self.labels[index] if self.labels is not None else None
        return ArrayDataset(self.name, self.data[index], labels, self.num_classes)


def parse_source(spec: str) -> tuple[str, str]:
    """Split ``"fashion-mnist:test"`` into ``("fashion-mnist", "test")`` (split defaults to train)."""
    name, _, split = spec.partition(":")
    split = split or "train"
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; known datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' in '{spec}'; legal splits: {', '.join(SPLITS)}")
    return name, split


def _candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir))
    env = os.environ.get("MUSTANGS_DATA")
    if env:
        roots.append(Path(env))
    roots.append(default_cache_dir())
    dirs: list[Path] = []
    subdirs = {
        "fashion-mnist": ["", "fashion-mnist", "FashionMNIST/raw"],
        "mnist": ["", "mnist", "MNIST/raw"],
        "cifar10": ["", "cifar-10-batches-bin", "cifar10/cifar-10-batches-bin"],
    }[name]
    for root in roots:
        dirs.extend(root / sub if sub else root for sub in subdirs)
    dirs.extend(SYSTEM_DIRS.get(name, []))
    return dirs


def _offline() -> bool:
    return os.environ.get("MUSTANGS_OFFLINE", "").lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------- IDX (MNIST-like)

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = math.prod(dims)
    if len(raw) - offset != expected:
        raise UserError(f"{path} is truncated or corrupt ({len(raw) - offset} bytes of data, "
                        f"expected {expected})")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _array_files(folder: Path, name: str, split: str) -> tuple[Path, str, str] | tuple[Path, Path] | None:
    """Digits kept as numpy arrays instead of IDX files: Keras' ``mnist.npz`` layout (``NAME.npz``
    holding ``x_train, y_train, x_test, y_test``) or the same four names as ``.npy`` files."""
    x, y = ("x_train", "y_train") if split == "train" else ("x_test", "y_test")
    npz = folder / f"{name}.npz"
    if npz.is_file():
        return npz, x, y
    if (folder / f"{x}.npy").is_file() and (folder / f"{y}.npy").is_file():
        return folder / f"{x}.npy", folder / f"{y}.npy"
    return None


def _checked_arrays(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) of 0..255 and labels ``[N]`` of 0..9, or one line."""
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(f"{where}: images must have shape [N, 28, 28], got {list(images.shape)}")
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu" or images.size and (images.min() < 0 or images.max() > 255):
            raise UserError(f"{where}: images must be uint8 (0..255), got {images.dtype}")
        images = images.astype(np.uint8)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{where}: labels must be integers 0..9 of shape [N], got {labels.dtype} {list(labels.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def _read_arrays(found, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Read what :func:`_array_files` found, without pickle and within the size bound."""
    import io as _io
    import zipfile

    from mustangs.io.loaders import read_bounded

    limit = 1 << 30
    try:
        if len(found) == 3:
            path, x, y = found
            with np.load(_io.BytesIO(read_bounded(path, limit, f"{name} arrays")), allow_pickle=False) as z:
                missing = [k for k in (x, y) if k not in z.files]
                if missing:
                    raise UserError(f"{path} lacks {', '.join(missing)} (expected Keras' layout: "
                                    f"x_train, y_train, x_test, y_test)")
                images, labels, where = z[x], z[y], f"{path} [{x}, {y}]"
        else:
            img, lbl = found
            images = np.load(_io.BytesIO(read_bounded(img, limit, f"{name} images")), allow_pickle=False)
            labels = np.load(_io.BytesIO(read_bounded(lbl, limit, f"{name} labels")), allow_pickle=False)
            where = f"{img} and {lbl}"
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read the {name} arrays in {found[0]}: {str(exc).splitlines()[0]}") from None
    return _checked_arrays(images, labels, where)


def _load_idx_dataset(name: str, split: str, data_dir) -> ArrayDataset:
    img_stem, lbl_stem = _IDX_FILES[split]
    looked: list[Path] = []
    for folder in _candidate_dirs(name, data_dir):
        looked.append(folder)
        arrays = _array_files(folder, name, split)
        if arrays is not None:
            images, labels = _read_arrays(arrays, name)
            return ArrayDataset(name, torch.from_numpy(images.copy()).unsqueeze(1),
                                torch.from_numpy(labels.astype(np.int64)), 10)
        img, lbl = _find_file(folder, img_stem), _find_file(folder, lbl_stem)
        if img and lbl:
            images, labels = read_idx(img), read_idx(lbl)
            if images.shape[0] != labels.shape[0]:
                raise UserError(f"{img} and {lbl} hold different numbers of samples")
            data = torch.from_numpy(images.copy()).unsqueeze(1)
            return ArrayDataset(name, data, torch.from_numpy(labels.astype(np.int64)), 10)
    if not _offline():
        folder = _download_idx(name)
        if folder is not None:
            return _load_idx_dataset(name, split, folder)
    raise _missing(name, looked)


def _download_idx(name: str) -> Path | None:
    import torchvision

    cls = {"fashion-mnist": torchvision.datasets.FashionMNIST, "mnist": torchvision.datasets.MNIST}[name]
    root = default_cache_dir()
    try:
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception:  # no network, checksum mismatch, ...
        return None
    return root / cls.__name__ / "raw"


def _missing(name: str, looked: list[Path]) -> UserError:
    where = ", ".join(str(p) for p in dict.fromkeys(looked))
    tried = "download disabled (MUSTANGS_OFFLINE=1)" if _offline() else "download failed (offline?)"
    return UserError(f"{name} data not found (looked in {where}; {tried}). To get it: {HOW_TO_GET[name]}")


# --------------------------------------------------------------------------- CIFAR-10 (binary)

def _load_cifar10(split: str, data_dir) -> ArrayDataset:
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    looked = []
    for folder in _candidate_dirs("cifar10", data_dir):
        looked.append(folder)
        if all((folder / f).is_file() for f in files):
            raw = np.concatenate([np.fromfile(folder / f, np.uint8) for f in files])
            if raw.size % 3073:
                raise UserError(f"CIFAR-10 files in {folder} are truncated or corrupt")
            rec = raw.reshape(-1, 3073)
            data = torch.from_numpy(rec[:, 1:].reshape(-1, 3, 32, 32).copy())
            return ArrayDataset("cifar10", data, torch.from_numpy(rec[:, 0].astype(np.int64)), 10)
    if not _offline():
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            root = default_cache_dir() / "cifar10"
            download_and_extract_archive("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                                         str(root), md5="c32a1d4ab5d03f1284b67883e8d87530")
            return _load_cifar10(split, root / "cifar-10-batches-bin")
        except Exception:
            pass
    raise _missing("cifar10", looked)


# --------------------------------------------------------------------------- image folder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _load_image_folder(split: str, data_dir, image_size: int | None, channels: int = 3) -> ArrayDataset:
    from PIL import Image, UnidentifiedImageError

    if not data_dir:
        raise UserError("dataset image-folder needs a folder of images: set data.data_dir (or --data-dir)")
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root}")
    size = image_size or 64
    # Deterministic 90/10 split so a "test" split exists for scoring.
    cut = max(1, int(round(len(paths) * 0.9))) if len(paths) > 1 else len(paths)
    paths = paths[:cut] if split == "train" else (paths[cut:] or paths[:1])
    out = np.empty((len(paths), channels, size, size), np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB" if channels == 3 else "L")
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                arr = np.asarray(im.crop((left, top, left + size, top + size)))
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"cannot read image {p}: {exc}") from None
        out[i] = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
    return ArrayDataset("image-folder", torch.from_numpy(out), None, None)


# --------------------------------------------------------------------------- 2-D toys (rings, grid25)

def point_modes(name: str) -> tuple[torch.Tensor, float]:
    """Centres ``[M, 2]`` and per-axis std of the Gaussian modes of a 2-D toy dataset.

    ``rings``: 8 modes evenly spaced on the unit circle, std 0.02 (VEEGAN's ring at radius 1).
    ``grid25``: a 5×5 grid with centres in {-1, -0.5, 0, 0.5, 1}², std 0.0125 — the VEEGAN/PacGAN
    grid (centres -4..4 step 2, std 0.05) scaled by 1/4, so both toys live in [-1, 1]².
    """
    if name == "rings":
        modes = 8
        angle = torch.arange(modes, dtype=torch.float32) * (2 * math.pi / modes)
        return torch.stack([torch.cos(angle), torch.sin(angle)], 1), 0.02
    if name == "grid25":
        axis = torch.linspace(-1.0, 1.0, 5)
        return torch.cartesian_prod(axis, axis).to(torch.float32), 0.0125
    raise UserError(f"'{name}' is not a 2-D toy dataset; toys: {', '.join(POINT_DATASETS)}")


def make_points(name: str, n: int, *, seed: int = 0) -> ArrayDataset:
    """``n`` points from the equal-weight Gaussian mixture of toy ``name``; labels are the mode index,
    so class-based metrics (TVD over modes) apply."""
    centres, std = point_modes(name)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, centres.shape[0], (n,), generator=g)
    points = centres[labels] + std * torch.randn(n, 2, generator=g)
    return ArrayDataset(name, points, labels, int(centres.shape[0]))


def make_rings(n: int, *, seed: int = 0) -> ArrayDataset:
    """The classic mode-collapse toy: 8 Gaussians evenly spaced on the unit circle."""
    return make_points("rings", n, seed=seed)


# --------------------------------------------------------------------------- entry point

def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 image_size: int | None = None, channels: int = 3) -> ArrayDataset:
    """Load dataset ``name`` (one of :data:`DATASETS`), split ``train`` or ``test``."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; known datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; legal splits: {', '.join(SPLITS)}")
    if name in ("fashion-mnist", "mnist"):
        return _load_idx_dataset(name, split, data_dir)
    if name == "cifar10":
        return _load_cifar10(split, data_dir)
    if name == "image-folder":
        return _load_image_folder(split, data_dir, image_size, channels)
    return make_points(name, 60000 if split == "train" else 10000, seed=0 if split == "train" else 1)
