"""Turning samples into pictures: PIL images, PNG grids and scatter plots.

The pixel work is plain numpy so the torch-free ONNX runtime (``serving.sampler``) draws
exactly the same grids as the trainer; torch tensors are accepted and converted.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from mustangs.io.atomic import write_bytes_atomic


def _numpy(x) -> np.ndarray:
    """A torch tensor (any device) or array-like as a float32 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def to_uint8(x) -> np.ndarray:
    """Samples in [-1, 1], ``[N, C, H, W]`` → uint8 ``[N, H, W, C]`` (round half to even)."""
    arr = np.rint((np.clip(_numpy(x), -1, 1) + 1) * np.float32(127.5)).astype(np.uint8)
    return arr.transpose(0, 2, 3, 1)


def to_pil_images(x) -> list[Image.Image]:
    """One PIL image per sample (grayscale for one channel, RGB for three)."""
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in to_uint8(x)]


def grid_scale(height: int, width: int) -> int:
    """How many screen pixels per sample pixel a grid uses: 2 for small images (28x28, 32x32),
    which are too small to judge by eye at 1x, else 1."""
    return 2 if max(height, width) <= 32 else 1


def grid_pixels(x, nrow: int | None = None, padding: int = 2, scale: int | None = None) -> np.ndarray:
    """Tile image samples ``[N, C, H, W]`` in [-1, 1] into one uint8 picture ``[H', W', C]``.

    ``scale`` enlarges every sample by pixel repetition (None: :func:`grid_scale`)."""
    arr = to_uint8(x)
    scale = scale or grid_scale(arr.shape[1], arr.shape[2])
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y0:y0 + h, x0:x0 + w] = arr[i]
    return canvas


def scatter_pixels(points, size: int = 256, extent: float = 1.5) -> np.ndarray:
    """A plain grayscale scatter plot of 2-D points in [-extent, extent]² (black on white)."""
    canvas = np.full((size, size), 255, np.uint8)
    p = _numpy(points)
    ij = np.clip(np.rint((p + extent) / (2 * extent) * (size - 1)).astype(int), 0, size - 1)
    canvas[size - 1 - ij[:, 1], ij[:, 0]] = 0
    return canvas


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)


def grid_image(x, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """Samples as one picture: a grid of images, or a scatter plot for 2-D points (e.g. ``rings``)."""
    if len(x.shape) == 2 and x.shape[1] == 2:
        return scatter_image(x)
    return _image(grid_pixels(x, nrow, padding))


def scatter_image(points, size: int = 256, extent: float = 1.5) -> Image.Image:
    """:func:`scatter_pixels` as a PIL image."""
    return _image(scatter_pixels(points, size, extent))


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """Encode a PIL image or uint8 pixels (``[H, W]``, ``[H, W, 1|3]``) as PNG bytes (deterministic)."""
    if isinstance(image, np.ndarray):
        image = _image(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(x, path: str | Path, nrow: int | None = None) -> None:
    """Write a PNG grid of samples atomically."""
    write_bytes_atomic(path, png_bytes(grid_image(x, nrow)))
