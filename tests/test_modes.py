"""Mode-coverage metrics of the 2-D toys (VEEGAN/PacGAN protocol) and the grid25 dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mustangs.data.datasets import load_dataset, make_points, point_modes
from mustangs.judge.metrics import HQ_RADIUS, ModeStats, mode_scores, mode_stats

#: Share of an isotropic 2-D Gaussian within HQ_RADIUS·σ of its centre (Euclidean): 1 − e^(−r²/2).
TRUE_HQ = 1.0 - math.exp(-HQ_RADIUS ** 2 / 2)


@pytest.mark.parametrize("name,modes", [("rings", 8), ("grid25", 25)])
def test_a_draw_from_the_true_mixture_covers_every_mode(name, modes):
    x = make_points(name, 10_000, seed=7).data
    s = mode_scores(mode_stats(x.numpy(), *point_modes(name)))
    assert s["modes_covered10k"] == modes
    assert s["tvd_modes10k"] < 0.03
    # Euclidean 3σ holds 98.89% of a 2-D Gaussian: the true mixture scores that, within sampling noise
    assert abs(s["high_quality10k"] - TRUE_HQ) < 4 * math.sqrt(TRUE_HQ * (1 - TRUE_HQ) / 10_000)


def test_a_single_mode_draw_covers_one_of_eight():
    centres, std = point_modes("rings")
    x = centres[3] + std * torch.randn(10_000, 2, generator=torch.Generator().manual_seed(0))
    s = mode_scores(mode_stats(x.numpy(), centres, std))
    assert s["modes_covered10k"] == 1
    assert s["tvd_modes10k"] == pytest.approx(0.875)
    assert s["high_quality10k"] > 0.98


def test_points_between_modes_are_not_high_quality_and_rare_modes_are_not_covered():
    centres, std = point_modes("rings")
    c = centres.numpy()
    between = (c[0] + c[1]) / 2 * np.ones((9_950, 2))     # far from every mode
    rare = c[2] + np.zeros((50, 2))                       # 0.5% of the samples: below the 1% threshold
    s = mode_scores(mode_stats(np.concatenate([between, rare]), c, std))
    assert s["modes_covered10k"] == 0
    assert s["high_quality10k"] == pytest.approx(0.005)


def test_mode_stats_mix_like_the_samples_they_come_from():
    centres, std = point_modes("grid25")
    g = torch.Generator().manual_seed(1)
    a = centres[0] + std * torch.randn(4000, 2, generator=g)
    b = centres[7] + 5 * std * torch.randn(4000, 2, generator=g)
    sa, sb = mode_stats(a.numpy(), centres, std), mode_stats(b.numpy(), centres, std)
    mixed = ModeStats.mix([sa, sb], [1.0, 3.0])
    joint = mode_stats(torch.cat([a[:1000], b[:3000]]).numpy(), centres, std)
    assert np.allclose(mixed.nearest, joint.nearest, atol=0.02)
    assert np.allclose(mixed.close, joint.close, atol=0.02)


def test_grid25_loads_with_mode_labels():
    train, test = load_dataset("grid25", "train"), load_dataset("grid25", "test")
    assert train.data.shape == (60_000, 2) and test.data.shape == (10_000, 2)
    assert train.num_classes == 25 and int(train.labels.max()) == 24
    centres, _ = point_modes("grid25")
    # every point sits near the centre its label names
    assert (train.data - centres[train.labels]).norm(dim=1).max() < 0.1
    assert torch.equal(load_dataset("grid25", "test").data, test.data)   # fixed seed per split


def test_score_cli_reports_mode_coverage_for_a_toy(tmp_path, capsys):
    import json

    from trainer.cli import main

    np.save(tmp_path / "fake.npy", make_points("rings", 2000, seed=9).data.numpy())
    assert main(["score", "--real", "rings:test", "--fake", str(tmp_path / "fake.npy"), "--samples", "2000",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modes_covered2k"] == 8 and out["high_quality2k"] > 0.97
