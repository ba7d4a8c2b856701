"""Mustangs trainer: spatial coevolution of GANs (Lipizzaner / Mustangs), and its ``trainer`` CLI.

Owns the training config, grid topology, losses, batched engines, the coevolution step, runs,
checkpoints and distribution. May import the foundation (:mod:`mustangs`) only.
"""
