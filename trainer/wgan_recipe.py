"""The Wasserstein recipes and their config section (torch-free, so CLIs parse configs fast).

The losses, the gradient penalty and the optimisers are in :mod:`trainer.wasserstein`,
which also explains the recipes and the fitness yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass

from mustangs.errors import ConfigError
from trainer.configio import option

LOSSES = ("wgan", "wgan-gp")

#: The published recipes (None in the config = these).
RECIPES = {
    "wgan": {"optimizer": "rmsprop", "lr": 5e-5, "n_critic": 5, "clip": 0.01, "gp_lambda": 0.0,
             "betas": (0.5, 0.999)},
    "wgan-gp": {"optimizer": "adam", "lr": 1e-4, "n_critic": 5, "clip": None, "gp_lambda": 10.0,
                "betas": (0.0, 0.9)},
}


@dataclass
class WassersteinConfig:
    """Knobs of ``coevolution.loss: wgan | wgan-gp`` (ignored by bce/mustangs); None = the recipe."""

    n_critic: int | None = option(None, ge=1)      # critic steps (mini-batches) per generator step (None = 5); >= 1
    clip: float | None = option(None, gt=0.0)      # wgan only: clip every critic weight to ±clip after each critic step (None = 0.01); > 0
    gp_lambda: float | None = option(None, ge=0.0)  # wgan-gp only: gradient-penalty weight λ (None = 10); >= 0
    lr_g: float | None = option(None, gt=0.0, le=1.0)  # initial generator lr (None = 5e-5 wgan, 1e-4 wgan-gp; coevolution.lr_g is not used); (0, 1]
    lr_d: float | None = option(None, gt=0.0, le=1.0)  # initial critic lr (None = as lr_g's recipe; coevolution.lr_d is not used); (0, 1]
    betas: list[float] | None = None               # wgan-gp only: Adam (beta1, beta2), each in [0, 1) (None = [0.0, 0.9])
    rmsprop_alpha: float = option(0.99, ge=0.0, le=0.9999)  # wgan only: RMSprop smoothing constant (torch's default); [0, 0.9999]


@dataclass(frozen=True)
class Recipe:
    """The resolved Wasserstein settings of a run."""

    loss: str                  # wgan | wgan-gp
    optimizer: str             # rmsprop | adam
    lr_g: float
    lr_d: float
    n_critic: int
    clip: float | None         # None = no clipping
    gp_lambda: float           # 0 = no penalty
    betas: tuple[float, float]
    alpha: float               # RMSprop smoothing constant


def resolve(loss: str, w: WassersteinConfig) -> Recipe | None:
    """The recipe of ``loss`` with the config's overrides; None for non-Wasserstein losses.
    Refuses settings that belong to the other recipe (say the fix)."""
    if loss not in LOSSES:
        return None
    r = RECIPES[loss]
    if loss == "wgan-gp" and w.clip is not None:
        raise ConfigError("wasserstein.clip is the wgan recipe's; wgan-gp uses the gradient penalty instead: "
                          "set wasserstein.clip=null (or coevolution.loss=wgan)")
    if loss == "wgan" and (w.gp_lambda or w.betas is not None):
        raise ConfigError("wasserstein.gp_lambda/betas are the wgan-gp recipe's; set them to null "
                          "(or coevolution.loss=wgan-gp)")
    betas = tuple(w.betas) if w.betas is not None else r["betas"]
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"wasserstein.betas: expected two numbers in [0, 1), got {list(betas)!r}")
    lr_g = w.lr_g if w.lr_g is not None else r["lr"]
    return Recipe(loss, r["optimizer"], lr_g, w.lr_d if w.lr_d is not None else r["lr"],
                  w.n_critic or r["n_critic"], w.clip if loss == "wgan" and w.clip is not None else r["clip"],
                  float(w.gp_lambda if w.gp_lambda is not None else r["gp_lambda"]), betas, w.rmsprop_alpha)
