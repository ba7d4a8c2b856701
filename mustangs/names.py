"""Plain data and wording the CLIs show (also while they build their parsers), free of torch and numpy.

``trainer --help`` must answer at once, so the argument definitions may import only this
module (and :mod:`mustangs.console.formatting` / :mod:`mustangs.errors`); the modules that do the work import it too,
so each fact is written once.
"""

from __future__ import annotations

#: Datasets the evaluation CNN can be trained on, with their input shape ``(channels, height, width)``.
TRAINABLE = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28)}

#: The 2-D toy datasets (point clouds whose classes are their modes).
POINT_DATASETS = ("rings", "grid25")


def default_cache_dir():
    """Where downloads, real-data statistics and trained classifiers go: ``$MUSTANGS_CACHE`` or
    ``~/.cache/mustangs`` (here, free of torch, so listing classifiers answers at once)."""
    import os
    from pathlib import Path

    return Path(os.environ.get("MUSTANGS_CACHE", Path.home() / ".cache" / "mustangs"))


#: What ``trainer score --fake`` (and every other sample source) accepts, for help and errors.
SOURCE_HELP = ("a dataset split (e.g. fashion-mnist:train), an .npy array of images (uint8 0..255 or float "
               "in [-1, 1]; [N,H,W], [N,C,H,W] or [N,H,W,C]), a folder of PNGs, or 'noise'")


#: The generator losses Mustangs draws from, in the order of the loss-mask columns (trainer/losses.py).
G_LOSSES = ("bce", "mse", "heuristic")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 generator``, ``3 generators``: a number with its noun in the right form."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
