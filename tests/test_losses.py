"""Generator/discriminator losses and the Mustangs per-generator draw."""

from __future__ import annotations

import math

import torch

from trainer import losses


def test_loss_values():
    p = torch.tensor([[0.25, 0.25]])
    assert math.isclose(float(losses.generator_loss(p, "bce")), -math.log(0.25), rel_tol=1e-6)
    assert math.isclose(float(losses.generator_loss(p, "mse")), 0.75 ** 2, rel_tol=1e-6)
    assert math.isclose(float(losses.generator_loss(p, "heuristic")), -0.5 * math.log(0.25), rel_tol=1e-6)
    d = losses.discriminator_loss(torch.tensor([[0.8]]), torch.tensor([[0.1]]))
    assert math.isclose(float(d), -math.log(0.8) - math.log(0.9), rel_tol=1e-6)


def test_saturated_probabilities_stay_finite():
    p = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss = losses.generator_loss(p, "bce") + losses.discriminator_loss(p, p)
    loss.backward()
    assert torch.isfinite(loss).all() and torch.isfinite(p.grad).all()


def test_masked_loss_picks_each_cells_own_loss_and_only_its_gradient():
    p = torch.full((3, 4), 0.3, requires_grad=True)
    mask = losses.loss_mask(torch.tensor([0, 1, 2]))
    out = losses.generator_loss_masked(p, mask)
    want = torch.stack([losses.generator_loss(p[i:i + 1], n)[0] for i, n in enumerate(losses.G_LOSSES)])
    assert torch.allclose(out, want)
    (g,) = torch.autograd.grad(out[1], p)
    assert g[0].abs().sum() == 0 and g[2].abs().sum() == 0 and g[1].abs().sum() > 0


def test_mustangs_draws_are_per_generator_and_cover_all_three():
    gens = [torch.Generator().manual_seed(i) for i in range(9)]
    draws = torch.stack([losses.draw_losses("mustangs", gens) for _ in range(30)])  # [generations, cells]
    assert set(draws.flatten().tolist()) == {0, 1, 2}
    # per generator: cells draw independently (not one draw for the whole grid)
    assert any(len(set(row.tolist())) > 1 for row in draws)
    counts = torch.bincount(draws.flatten(), minlength=3).float() / draws.numel()
    assert (counts - 1 / 3).abs().max() < 0.12
    assert (losses.draw_losses("bce", gens) == 0).all()
