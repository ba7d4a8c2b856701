"""Known-answer tests of precision/recall/density/coverage and KID (mustangs/judge/manifold.py),
their agreement with torch-fidelity, and the mixture fast path against direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mustangs.judge.manifold import MixtureDiversity, RealManifold, kid, knn_radii, mixture_counts, prdc


def clusters(n: int, modes, seed: int, d: int = 8, spread: float = 0.3) -> np.ndarray:
    """``n`` points from equal-weight Gaussian clusters at the given mode indices (10 fixed, far-apart centres)."""
    rng = np.random.default_rng(seed)
    centres = clusters.centres[:, :d]
    which = np.asarray(modes)[rng.integers(0, len(modes), n)]
    return centres[which] + spread * rng.normal(size=(n, d))


clusters.centres = np.random.default_rng(99).normal(size=(10, 8)) * 10


def test_identical_sets_have_precision_recall_coverage_and_density_one():
    x = clusters(600, range(10), seed=0)
    out = prdc(x, x.copy())
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    assert out["density"] == pytest.approx(1.0)   # each real ball holds exactly itself + k-1 neighbours


def test_half_the_modes_gives_recall_and_coverage_near_one_half():
    real = clusters(2000, range(10), seed=1)
    fake = clusters(2000, range(5), seed=2)
    out = prdc(real, fake)
    assert out["recall"] == pytest.approx(0.5, abs=0.06)
    assert out["coverage"] == pytest.approx(0.5, abs=0.06)
    assert out["precision"] > 0.9                  # what it makes is realistic
    # the same distribution on fresh samples: everything near 1 (k-NN balls miss a few tail points)
    same = prdc(real, clusters(2000, range(10), seed=3))
    assert same["recall"] > 0.9 and same["coverage"] > 0.9 and same["precision"] > 0.9
    assert same["density"] == pytest.approx(1.0, abs=0.1)
    # exactly: half-mode recall = (share of real samples in the kept modes) x same-distribution recall
    share = np.isin(np.argmin(((real[:, None] - clusters.centres[None]) ** 2).sum(-1), 1), range(5)).mean()
    assert out["recall"] / same["recall"] == pytest.approx(share, abs=0.02)
    assert out["coverage"] / same["coverage"] == pytest.approx(share, abs=0.02)


def test_collapsed_fake_set_has_low_recall_but_high_precision():
    real = clusters(1000, range(10), seed=4)
    fake = clusters(1000, [3], seed=5, spread=0.05)  # one mode, shrunk
    out = prdc(real, fake)
    assert out["precision"] > 0.9 and out["recall"] < 0.15 and out["coverage"] < 0.15


def test_knn_radius_is_the_kth_neighbour_distance():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0], [15.0], [21.0]])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert knn_radii(x, k=2).tolist() == [3.0, 2.0, 3.0, 4.0, 5.0, 6.0, 11.0]


def test_kid_known_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 16))
    y = rng.normal(size=(800, 16))
    assert abs(kid(x, y)) < 0.01                     # same distribution: unbiased estimate of 0
    assert kid(x, y + 1.0) > 0.5                      # shifted: clearly positive
    assert kid(x, y + 1.0) < kid(x, y + 2.0)          # and growing with the shift


def test_agrees_with_torch_fidelity():
    tf_prc = pytest.importorskip("torch_fidelity.metric_prc")
    tf_kid = pytest.importorskip("torch_fidelity.metric_kid")
    real = clusters(700, range(10), seed=6)
    fake = clusters(500, range(7), seed=7, spread=0.5)
    ours = prdc(real, fake)
    theirs = tf_prc.prc_features_to_metric(torch.tensor(fake), torch.tensor(real), prc_neighborhood=5,
                                           prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    assert ours["precision"] == pytest.approx(theirs["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(theirs["recall"], abs=1e-6)
    k_theirs = tf_kid.kid_features_to_metric(torch.tensor(fake), torch.tensor(real), kid_subsets=1,
                                             kid_subset_size=500, verbose=False, rng_seed=0, kid_kernel="poly",
                                             kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                             kid_kernel_poly_coef0=1)
    # one subset of all 500 fakes vs 500 of the 700 reals: compare on the same real subset
    rng = np.random.RandomState(0)
    rng.choice(500, 500, replace=False)
    idx = rng.choice(700, 500, replace=False)
    assert kid(real[idx], fake) == pytest.approx(k_theirs["kernel_inception_distance_mean"], rel=1e-6)


def test_mixture_counts_are_exact_rounding():
    n = mixture_counts([0.5, 0.25, 0.25, 0.0], 1001)
    assert n.sum() == 1001 and n[3] == 0 and abs(n[0] - 500.5) < 1
    assert mixture_counts([1, 1, 1], 10).tolist() == [4, 3, 3]


def test_mixture_fast_path_equals_direct_computation():
    real = RealManifold.of(clusters(800, range(10), seed=8))
    fakes = [clusters(300, [c, c + 5], seed=10 + c) for c in range(5)]   # each covers 2 of 10 modes
    mix = MixtureDiversity(real, fakes)
    rng = np.random.default_rng(0)
    weights = np.vstack([np.eye(5)[0], np.ones(5), [0.98, 0.005, 0.005, 0.005, 0.005],
                         rng.dirichlet(np.ones(5), 6)])
    cov, rec = mix.coverage(weights), mix.recall(weights)
    for w, c, r in zip(weights, cov, rec):
        direct = prdc(real, mix.sample_set(w))
        assert c == direct["coverage"] and r == direct["recall"]
    assert cov[0] == pytest.approx(0.2, abs=0.03)         # one generator: 2 of 10 modes
    assert cov[1] > 3 * cov[0]                            # uniform: all modes (30 samples each)
    scores = mix.scores(np.ones(5), "cls300")
    assert set(scores) == {f"{m}_cls300" for m in ("precision", "recall", "density", "coverage", "kid")}
