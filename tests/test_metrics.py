"""Known-answer tests of the metric primitives and the feature-statistics pipeline (no data needed)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from mustangs.errors import UserError
from mustangs.judge.metrics import (FeatureStats, StatsAccumulator, frechet_distance, inception_score_from_moments,
                             parse_target, score, tvd)


def _stats(features: torch.Tensor, logits: torch.Tensor) -> FeatureStats:
    acc = StatsAccumulator(features.shape[1], logits.shape[1])
    acc.update(features, logits)
    return acc.result()


# --------------------------------------------------------------------------- FID

def test_fid_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 8))
    mu, sigma = a.mean(0), np.cov(a, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_gaussian_shift_is_squared_mean_difference():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1000, 6))
    sigma = np.cov(a, rowvar=False)
    mu1 = rng.standard_normal(6)
    delta = np.array([0.5, -1.0, 2.0, 0.0, 0.25, 3.0])
    expected = float(delta @ delta)
    assert frechet_distance(mu1, sigma, mu1 + delta, sigma) == pytest.approx(expected, rel=1e-6)


def test_fid_of_scaled_covariance_matches_closed_form():
    # Σ1 = I, Σ2 = s²I: FID = d (1 − s)².
    d, s = 5, 3.0
    assert frechet_distance(np.zeros(d), np.eye(d), np.zeros(d), s * s * np.eye(d)) == pytest.approx(d * (1 - s) ** 2)


# --------------------------------------------------------------------------- TVD

def test_tvd_of_target_itself_is_zero():
    target = np.array([0.5, 0.0, 0.25, 0.25])
    assert tvd(target, target) == 0.0
    assert tvd(np.full(10, 0.1)) == pytest.approx(0.0)


def test_tvd_single_class_vs_uniform_over_ten_is_point_nine():
    hist = np.zeros(10)
    hist[3] = 1.0
    assert tvd(hist) == pytest.approx(0.9)
    assert tvd(hist, parse_target("uniform", 10)) == pytest.approx(0.9)


# --------------------------------------------------------------------------- IS

def test_inception_score_is_one_for_constant_predictions():
    logits = torch.tensor([[2.0, -1.0, 0.5]]).repeat(100, 1)
    s = _stats(torch.randn(100, 4), logits)
    assert inception_score_from_moments(s.mean_probs, s.mean_plogp) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_is_num_classes_for_confident_uniform_predictions():
    c = 10
    labels = torch.arange(1000) % c
    logits = 60.0 * torch.nn.functional.one_hot(labels, c).double()
    s = _stats(torch.randn(1000, 4), logits)
    assert inception_score_from_moments(s.mean_probs, s.mean_plogp) == pytest.approx(c, rel=1e-6)
    assert s.hist == pytest.approx(np.full(c, 0.1))


# --------------------------------------------------------------------------- FeatureStats

def test_mix_equals_statistics_of_concatenated_samples():
    g = torch.Generator().manual_seed(0)
    f1, l1 = torch.randn(300, 5, generator=g), torch.randn(300, 4, generator=g) * 3
    f2, l2 = torch.randn(700, 5, generator=g) + 2, torch.randn(700, 4, generator=g) * 3 + 1
    s1, s2 = _stats(f1, l1), _stats(f2, l2)
    both = _stats(torch.cat([f1, f2]), torch.cat([l1, l2]))
    mixed = FeatureStats.mix([s1, s2], [0.3, 0.7])
    for field in ("mu", "second", "hist", "mean_probs"):
        np.testing.assert_allclose(getattr(mixed, field), getattr(both, field), rtol=1e-10, atol=1e-12)
    assert mixed.mean_plogp == pytest.approx(both.mean_plogp, rel=1e-10)


def test_score_names_carry_the_protocol():
    g = torch.Generator().manual_seed(1)
    s = _stats(torch.randn(10000, 3, generator=g), torch.randn(10000, 10, generator=g))
    out = score(s, s)
    assert set(out) == {"fid_cls10k", "tvd_cls10k", "is_cls10k"}
    assert out["fid_cls10k"] == pytest.approx(0.0, abs=1e-6)
    s2 = _stats(torch.randn(2500, 3, generator=g), torch.randn(2500, 10, generator=g))
    assert set(score(s2, s, metrics=["fid"])) == {"fid_cls2.5k"}


# --------------------------------------------------------------------------- parse_target

def test_parse_target_forms():
    np.testing.assert_allclose(parse_target(None, 4), [0.25] * 4)
    np.testing.assert_allclose(parse_target("uniform", 4), [0.25] * 4)
    np.testing.assert_allclose(parse_target("real", 3, np.array([2.0, 1.0, 1.0])), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(parse_target("0:0.5,3:0.5", 4), [0.5, 0, 0, 0.5])
    np.testing.assert_allclose(parse_target("0:1, 2:3", 4), [0.25, 0, 0.75, 0])
    np.testing.assert_allclose(parse_target("1,1,2", 3), [0.25, 0.25, 0.5])


@pytest.mark.parametrize("spec", ["bogus", "0:0.5,12:0.5", "0:-1,1:2", "0:0", "1,2", "0:1,0.5", "a:b", "real"])
def test_parse_target_rejects_bad_specs_with_one_line(spec):
    with pytest.raises(UserError) as info:
        parse_target(spec, 10)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- evaluation pipeline (rings)

@pytest.mark.parametrize("name,modes", [("rings", 8), ("grid25", 25)])
def test_toy_classifier_labels_modes_and_gives_is_near_the_mode_count(name, modes):
    from mustangs.data.datasets import make_points
    from mustangs.judge.classifier import PointModesClassifier
    from mustangs.judge.classifier_store import load_classifier
    from mustangs.judge.evaluation import stats_of_tensor

    clf = load_classifier(name)
    assert isinstance(clf, PointModesClassifier) and clf.num_classes == modes and clf.feature_dim == 2
    data = make_points(name, 4000, seed=3)
    f, logits = clf.features_and_logits(data.data)
    assert torch.equal(f, data.data)
    assert torch.equal(logits, clf(data.data))
    assert (logits.argmax(1) == data.labels).float().mean() == 1.0
    s = stats_of_tensor(clf, data.data)
    assert inception_score_from_moments(s.mean_probs, s.mean_plogp) == pytest.approx(modes, rel=0.02)
    assert tvd(s.hist) < 0.05


def test_stats_of_sampler_equals_stats_of_tensor():
    from mustangs.data.datasets import make_rings
    from mustangs.judge.classifier_store import load_classifier
    from mustangs.judge.evaluation import stats_of_sampler, stats_of_tensor

    clf = load_classifier("rings")
    x = make_rings(2500, seed=5).data
    pos = {"i": 0}

    def sample_fn(b):
        out = x[pos["i"]:pos["i"] + b]
        pos["i"] += b
        return out

    a = stats_of_sampler(clf, sample_fn, 2500, batch_size=700)
    b = stats_of_tensor(clf, x, batch_size=1000)
    assert a.n == b.n == 2500
    np.testing.assert_allclose(a.mu, b.mu, atol=1e-12)
    np.testing.assert_allclose(a.second, b.second, atol=1e-12)
    np.testing.assert_allclose(a.hist, b.hist)


def test_stats_reject_wrong_sample_shape():
    from mustangs.judge.classifier_store import load_classifier
    from mustangs.judge.evaluation import stats_of_tensor

    with pytest.raises(UserError, match="shape"):
        stats_of_tensor(load_classifier("rings"), torch.zeros(10, 3))


def test_real_stats_cache_written_reused_and_recomputed_when_corrupt(tmp_path, monkeypatch):
    from mustangs.judge import evaluation
    from mustangs.judge.classifier_store import load_classifier

    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path))
    clf = load_classifier("rings")
    s1 = evaluation.real_stats("rings", "test", clf, n=3000)
    path = evaluation.stats_cache_path("rings", "test", 3000, clf.sha256)
    assert path.is_file() and path.parent == tmp_path / "stats"
    with np.load(path, allow_pickle=False) as data:
        assert int(data["n"]) == 3000

    calls = []
    real_stats_of_tensor = evaluation.stats_of_tensor
    monkeypatch.setattr(evaluation, "stats_of_tensor", lambda *a, **k: calls.append(1) or real_stats_of_tensor(*a, **k))
    s2 = evaluation.real_stats("rings", "test", clf, n=3000)
    assert calls == []  # served from the cache
    np.testing.assert_array_equal(s1.mu, s2.mu)

    path.write_bytes(b"not a zip file")
    s3 = evaluation.real_stats("rings", "test", clf, n=3000)
    assert calls == [1]  # recomputed
    np.testing.assert_allclose(s3.second, s1.second)
    with np.load(path, allow_pickle=False) as data:  # and rewritten
        assert int(data["n"]) == 3000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_real_subset_is_a_fixed_permutation_prefix():
    from mustangs.judge.evaluation import subset_indices

    a, b = subset_indices(1000, 100), subset_indices(1000, 200)
    assert torch.equal(a, b[:100])
    assert len(set(a.tolist())) == 100
    assert subset_indices(1000, None) is None and subset_indices(1000, 5000) is None


def test_noise_source_is_seeded_and_in_range():
    from mustangs.judge.evaluation import noise_samples

    a, b = noise_samples(10, (1, 28, 28), seed=4), noise_samples(10, (1, 28, 28), seed=4)
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1


# --------------------------------------------------------------------------- Inception weights gate

def test_inception_without_weights_fails_at_once_with_one_line(tmp_path, monkeypatch):
    from mustangs.judge import inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as info:
        inception.load_inception()
    msg = str(info.value)
    assert "\n" not in msg and inception.WEIGHTS_NAME in msg and str(tmp_path) in msg
    assert not any(tmp_path.rglob("*.pth"))


def test_labelled_subset_is_stratified_and_a_fixed_prefix():
    from mustangs.judge.evaluation import subset_indices

    labels = torch.tensor([0] * 900 + [1] * 100 + [2] * 1000)[torch.randperm(2000, generator=torch.Generator().manual_seed(0))]
    for n in (20, 200, 777):
        idx = subset_indices(2000, n, labels)
        assert len(set(idx.tolist())) == n
        counts = np.bincount(labels[idx].numpy(), minlength=3)
        np.testing.assert_allclose(counts, n * np.array([0.45, 0.05, 0.5]), atol=1)
    assert torch.equal(subset_indices(2000, 50, labels), subset_indices(2000, 500, labels)[:50])


@pytest.mark.slow
def test_inception_path_with_weights_on_disk(tmp_path, monkeypatch):
    """With a (stand-in, random) weights file where pytorch-fid caches it, Inception features flow."""
    import pytorch_fid.inception as pi

    from mustangs.judge import inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    path = inception.weights_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read Inception weights"):
        inception.load_inception()

    # A random state dict of the FID Inception's exact structure stands in for the real file.
    monkeypatch.setattr(pi, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(pi.torchvision.models.inception.Inception3, "load_state_dict", lambda self, sd, **k: None)
    state = pi.fid_inception_v3().state_dict()
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    torch.save(state, path)

    model = inception.load_inception()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    mu, cov, n = inception.inception_moments(model, x, batch_size=2, progress=False)
    assert n == 3 and mu.shape == (2048,) and cov.shape == (2048, 2048)
    assert np.all(np.isfinite(cov))
    loaded = []
    f1 = inception.real_inception_features(model, "rings", "test", lambda: loaded.append(1) or x)
    f2 = inception.real_inception_features(model, "rings", "test", lambda: loaded.append(1) or x)
    assert loaded == [1]  # second call served from the cache
    np.testing.assert_allclose(f1, f2)
    m1, _ = inception.moments(f1)
    np.testing.assert_allclose(m1, mu, rtol=1e-5, atol=1e-6)
