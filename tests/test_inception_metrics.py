"""Inception metrics (fid_incep*, kid_incep*) for RGB data, with a small stand-in for InceptionV3.

The real weights cannot be downloaded here; a tiny convolutional network with pytorch-fid's
interface (``model(x)[0]`` is ``[N, D, 1, 1]`` pool features of images in [0, 1]) takes their
place, so everything around the network — when the metrics run, real-feature caching, FID and
KID of generators and mixtures, the pool's record — is exercised for real.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mustangs.pool.format import read_pool


class StandInInception(nn.Module):
    """pytorch-fid's InceptionV3 interface on a small random conv net (8-d features)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.sha256 = "stand-in-inception-v1"
        self.calls = 0

    def forward(self, x):
        assert x.min() >= 0 and x.max() <= 1 and x.shape[1] == 3
        self.calls += x.shape[0]
        return [self.net(x)]


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    from mustangs.judge import inception

    model = StandInInception().eval()
    monkeypatch.setattr(inception, "load_inception", lambda device="cpu": model)
    monkeypatch.setattr(inception, "available", lambda: True)
    monkeypatch.setattr(inception, "require_weights", lambda: tmp_path / "stand-in.pth")
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    return model


def image_folder(folder, n: int = 40, size: int = 64):
    """``n`` RGB PNGs of coloured squares on noise."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        im = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        im[y:y + size // 3, x:x + size // 3] = rng.integers(100, 255, 3, dtype=np.uint8)
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    return folder


def test_rgb_run_reports_inception_fid_and_kid_for_generators_and_mixtures(tmp_path, stand_in):
    from test_train import run_cli

    data = image_folder(tmp_path / "images")
    over = ["threads=1", "data.dataset=image-folder", f"data.data_dir={data}", "network.arch=dcgan64",
            "network.latent_dim=16", "grid.height=1", "grid.width=2", "coevolution.tournament_size=1",
            "data.batch_size=4", "coevolution.batches_per_generation=1", "coevolution.generations=1",
            "eval.fid_samples=16", "eval.inception_samples=12", "output.report=false", "output.samples_per_cell=2"]
    assert run_cli(tmp_path, "rgb", over) == 0
    pool = read_pool(tmp_path / "rgb" / "pool")
    for entry in pool.entries:
        assert {"fid_incep12", "kid_incep12"} <= set(entry.scores)
        assert entry.scores["fid_incep12"] > 0
    for mixture in pool.mixtures:
        assert {"fid_incep12", "kid_incep12"} <= set(mixture["scores"])
    assert pool.extra["summary"]["best_generator"]["fid_incep12"] == min(e.scores["fid_incep12"]
                                                                          for e in pool.entries)
    # 4 real test images (10% of 40) + 12 samples per generator went through the network, once each
    assert stand_in.calls == 4 + 2 * 12
    assert list((tmp_path / "cache" / "stats").glob("image-folder-test-12s-incep-*-features.npy"))


def test_inception_off_for_grayscale_unless_asked_and_never_when_false(tmp_path, stand_in):
    from trainer.pool_scores import inception_wanted

    assert inception_wanted(None, (3, 64, 64)) is True
    assert inception_wanted(None, (1, 28, 28)) is False
    assert inception_wanted(False, (3, 64, 64)) is False
    assert inception_wanted(None, (2,)) is False


def test_inception_scores_equal_direct_fid_and_kid(stand_in):
    from mustangs.judge import inception
    from mustangs.judge.manifold import kid
    from mustangs.judge.metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    real_x, fake_x = torch.rand(30, 3, 32, 32, generator=g) * 2 - 1, torch.rand(20, 3, 32, 32, generator=g) - 0.5
    real = inception.inception_feature_array(stand_in, real_x)
    out = inception.inception_scores(stand_in, real, fake_x)
    fake = inception.inception_feature_array(stand_in, fake_x)
    assert out["fid_incep20"] == pytest.approx(frechet_distance(*inception.moments(fake), *inception.moments(real)))
    assert out["kid_incep20"] == pytest.approx(kid(real, fake))
    same = inception.inception_scores(stand_in, real, real_x)
    assert same["fid_incep30"] == pytest.approx(0, abs=1e-6) and abs(same["kid_incep30"]) < 1e-3


def test_score_cli_on_rgb_data_without_a_classifier_reports_inception_only(tmp_path, stand_in, capsys):
    import json

    from trainer.cli import main

    data = image_folder(tmp_path / "images", n=30, size=64)
    assert main(["score", "--real", "image-folder:test", "--data-dir", str(data), "--fake", str(data),
                 "--samples", "10", "--inception", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert set(k for k in result if k.endswith("_incep10")) == {"fid_incep10", "kid_incep10"}
    assert result["classifier"] is None and "Inception metrics only" in err
