"""Mustangs trainer: spatial coevolution of GANs (Lipizzaner / Mustangs).

The trainer owns configs, datasets, networks, losses, the grid, checkpoints, the pool
format, the evaluation classifier and the metric primitives.
"""

__version__ = "0.1.0"
