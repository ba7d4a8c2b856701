"""GAN losses on discriminator probabilities (D outputs sigmoid probabilities).

Discriminators always use binary cross-entropy. Generators use one of three losses:

* ``bce``       non-saturating BCE   −log D(G(z))
* ``mse``       least squares        (D(G(z)) − 1)²
* ``heuristic`` E-GAN heuristic      −½ log D(G(z))

Mustangs draws one of the three per generator per generation. In a batched population the
draw is a one-hot mask ``[cells, 3]`` so every cell runs the same ops (:func:`generator_loss_masked`).
Probabilities are clamped to ``[EPS, 1 − EPS]`` before logs so saturated outputs stay finite.
"""

from __future__ import annotations

import torch

from mustangs.names import G_LOSSES  # order of the mask columns

EPS = 1e-7


def _log(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp(EPS, 1.0 - EPS))


def discriminator_loss(p_real: torch.Tensor, p_fake: torch.Tensor) -> torch.Tensor:
    """BCE of D: −log D(x) − log(1 − D(G(z))), averaged over the last dim (batch)."""
    return -(_log(p_real).mean(-1) + _log(1.0 - p_fake).mean(-1))


def generator_losses(p_fake: torch.Tensor) -> torch.Tensor:
    """All three generator losses stacked on a new last dim: ``[..., 3]`` (bce, mse, heuristic)."""
    lp = _log(p_fake).mean(-1)
    mse = (p_fake - 1.0).pow(2).mean(-1)
    return torch.stack([-lp, mse, -0.5 * lp], -1)


def generator_loss(p_fake: torch.Tensor, name: str) -> torch.Tensor:
    """One named generator loss (``bce`` | ``mse`` | ``heuristic``), averaged over the batch dim."""
    return generator_losses(p_fake)[..., G_LOSSES.index(name)]


def generator_loss_masked(p_fake: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-cell generator loss from a one-hot ``mask [cells, 3]`` over (bce, mse, heuristic).

    ``p_fake`` is ``[cells, batch]``. Unselected losses get weight 0, so their gradient is 0.
    """
    return (generator_losses(p_fake) * mask.to(p_fake.dtype)).sum(-1)


def draw_losses(mode: str, generators: list[torch.Generator]) -> torch.Tensor:
    """Each cell's generator loss index for this generation (``[cells]`` long).

    ``mustangs``: uniform over the three, drawn from each cell's own RNG; ``bce``: all 0;
    ``wgan``/``wgan-gp``: all 0 and unused (their generator loss is trainer/wasserstein.py's).
    """
    if mode in ("bce", "wgan", "wgan-gp"):
        return torch.zeros(len(generators), dtype=torch.long)
    if mode != "mustangs":
        raise ValueError(f"unknown loss mode {mode!r}")
    return torch.stack([torch.randint(len(G_LOSSES), (), generator=g) for g in generators])


def loss_mask(choice: torch.Tensor) -> torch.Tensor:
    """One-hot ``[cells, 3]`` float mask from loss indices."""
    return torch.nn.functional.one_hot(choice, len(G_LOSSES)).to(torch.float32)
