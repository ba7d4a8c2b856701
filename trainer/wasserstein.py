"""Wasserstein GAN losses for the grid: ``coevolution.loss: wgan`` and ``wgan-gp``.

* ``wgan``    Arjovsky et al. 2017, Algorithm 1 (the recipe of the reference's ``lipizzaner_wgan``):
  a critic without sigmoid, RMSprop (lr 5e-5), every critic weight clipped to ±0.01 after
  each critic step, 5 critic steps per generator step.
* ``wgan-gp`` Gulrajani et al. 2017, Algorithm 1: no clipping, a gradient penalty
  λ·(‖∇D(x̂)‖₂ − 1)² on random interpolates x̂ = εx + (1 − ε)G(z) (λ = 10), Adam with
  β = (0, 0.9) and lr 1e-4, 5 critic steps per generator step. We take β = (0, 0.9) because
  it is the setting of the paper's Algorithm 1, the recipe we cite and test against; the
  DCGAN-style (0.5, 0.9) is one override away (``wasserstein.betas=[0.5,0.9]``).

Scores are raw critic outputs ``s`` (``[..., batch]``). Losses (lower is better):
critic ``E[s(G(z))] − E[s(x)]`` (+ the penalty), generator ``−E[s(G(z))]``.

**Fitness yardstick.** A critic's scores have no fixed scale or offset, so a Wasserstein
cell never uses BCE for fitness: a generator's fitness is ``−E[s(G(z))]`` averaged over the
sub-population's critics, a critic's is ``E[s(G(z))] − E[s(x)]`` (the negated estimate of
the Wasserstein distance, without the penalty) averaged over the sub-population's
generators, all on the one shared batch and latents of the generation. Every candidate of
a tournament or replacement meets the same opponents on the same data, so their values are
comparable with each other (they are not comparable across cells, and need not be).
"""

from __future__ import annotations

import torch

from trainer.batched import NetState, adam_step
from trainer.wgan_recipe import LOSSES, RECIPES, Recipe, WassersteinConfig, resolve  # noqa: F401 (re-exported)


# --------------------------------------------------------------------------- losses

def critic_loss(s_real: torch.Tensor, s_fake: torch.Tensor) -> torch.Tensor:
    """``E[s(fake)] − E[s(real)]`` over the last (batch) dim: the negated Wasserstein estimate."""
    return s_fake.mean(-1) - s_real.mean(-1)


def generator_loss(s_fake: torch.Tensor) -> torch.Tensor:
    """``−E[s(G(z))]`` over the last (batch) dim."""
    return -s_fake.mean(-1)


def interpolate(real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``x̂ = ε·real + (1 − ε)·fake`` with one ``ε`` per sample (``eps`` has ``real``'s leading dims)."""
    e = eps.to(real.dtype).view(*eps.shape, *([1] * (real.dim() - eps.dim())))
    return e * real + (1.0 - e) * fake


def gradient_penalty(critic, x_hat: torch.Tensor, features: int | None = None) -> torch.Tensor:
    """``E[(‖∇ₓ critic(x̂)‖₂ − 1)²]`` per member over the batch dim, kept differentiable
    (the norm over the first ``features`` inputs only, when given: not over a packed label).

    ``critic`` maps ``x̂ [..., B, *shape]`` to scores ``[..., B]``; each score depends on its
    own sample only, so the gradient of their sum is every sample's own gradient.
    """
    with torch.enable_grad():
        x_hat = x_hat.detach().requires_grad_(True)
        s = critic(x_hat)
        (g,) = torch.autograd.grad(s.sum(), x_hat, create_graph=True)
        g = g.flatten(s.dim())
        if features is not None:   # conditional critics: the sample's part of the packed input
            g = g[..., :features]
        norm = g.pow(2).sum(-1).add(1e-12).sqrt()
        return (norm - 1.0).pow(2).mean(-1)


# --------------------------------------------------------------------------- optimisers

@torch.no_grad()
def rmsprop_step(state: NetState, grads: dict[str, torch.Tensor], lr: torch.Tensor, alpha: float = 0.99,
                 eps: float = 1e-8) -> None:
    """One RMSprop step (torch.optim.RMSprop's formula, no momentum, not centred) per member, in
    place, with a per-member learning rate ``lr [P]``. The square average lives in ``state.v``
    (``state.m`` stays zero), so checkpoints and selection copy it like Adam's moments."""
    state.step.add_(1.0)
    for k, p in state.params.items():
        g = grads[k]
        v = state.v[k]
        v.mul_(alpha).addcmul_(g, g, value=1.0 - alpha)
        shape = (-1,) + (1,) * (p.dim() - 1)
        p.sub_(lr.to(p.dtype).view(shape) * g / (v.sqrt().add_(eps)))


def optimizer_step(recipe: Recipe, state: NetState, grads: dict[str, torch.Tensor], lr: torch.Tensor,
                   fused: bool) -> None:
    """The recipe's optimiser step for every member of ``state``."""
    if recipe.optimizer == "rmsprop":
        rmsprop_step(state, grads, lr, recipe.alpha)
    else:
        adam_step(state, grads, lr, recipe.betas, fused=fused)


@torch.no_grad()
def clip_(state: NetState, c: float) -> None:
    """Clip every parameter of every member to ``[−c, c]`` in place (wgan's Lipschitz constraint)."""
    for p in state.params.values():
        p.clamp_(-c, c)
