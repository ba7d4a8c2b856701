"""Turning sample tensors into pictures: PIL images and PNG grids."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainer.atomic import write_bytes_atomic


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Samples in [-1, 1], ``[N, C, H, W]`` → uint8 ``[N, H, W, C]``."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def to_pil_images(x: torch.Tensor) -> list[Image.Image]:
    """One PIL image per sample (grayscale for one channel, RGB for three)."""
    arr = to_uint8(x)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def grid_image(x: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """Tile image samples into one picture (``nrow`` per row, square by default).

    2-D point samples (e.g. ``rings``) are drawn as a scatter plot instead.
    """
    if x.dim() == 2 and x.shape[1] == 2:
        return scatter_image(x)
    arr = to_uint8(x)
    n, h, w, c = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y0:y0 + h, x0:x0 + w] = arr[i]
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def scatter_image(points: torch.Tensor, size: int = 256, extent: float = 1.5) -> Image.Image:
    """A plain scatter plot of 2-D points in [-extent, extent]², as a grayscale image."""
    canvas = np.full((size, size), 255, np.uint8)
    p = points.detach().cpu().numpy()
    ij = np.clip(((p + extent) / (2 * extent) * (size - 1)).round().astype(int), 0, size - 1)
    canvas[size - 1 - ij[:, 1], ij[:, 0]] = 0
    return Image.fromarray(canvas)


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes (deterministic for the same pixels)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(x: torch.Tensor, path: str | Path, nrow: int | None = None) -> None:
    """Write a PNG grid of samples atomically."""
    write_bytes_atomic(path, png_bytes(grid_image(x, nrow)))
