"""Tests of the ensembler: objectives from statistics, search methods, pools in, ensemble.json out.

A stand-in evaluation classifier keeps these fast and independent of the shipped CNN: logits
are minus the distance to Fashion-MNIST class means, features a fixed random projection.
Pools are real pools (``write_pool``) of MLP generators: random ones, and "class generators"
whose output is a real image of one class plus a little latent-driven noise.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import needs_fashion

from mustangs.judge.metrics import FeatureStats, frechet_distance
from mustangs.pool.format import write_pool
from mustangs.pool.networks import MLPGenerator, NetSpec

SPEC = NetSpec("mlp", 64, (1, 28, 28))
N_STATS = 3000     # samples per generator in these tests (the protocol uses 10k)


# --------------------------------------------------------------------------- fixtures

class TemplateClassifier(nn.Module):
    """Nearest-class-mean classifier with random-projection features (a fast stand-in CNN)."""

    def __init__(self, means: torch.Tensor, feature_dim: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("means", means.reshape(means.shape[0], -1).float())
        self.register_buffer("proj", torch.randn(self.means.shape[1], feature_dim, generator=g) / 28.0)
        self.num_classes, self.feature_dim = means.shape[0], feature_dim
        self.input_shape = (1, 28, 28)

    def features_and_logits(self, x: torch.Tensor):
        x = x.reshape(x.shape[0], -1).float()
        return torch.tanh(x @ self.proj) * 3, -torch.cdist(x, self.means).pow(2) / 50.0


@pytest.fixture(scope="module")
def fashion():
    from mustangs.data.datasets import load_dataset

    return load_dataset("fashion-mnist", "test")


@pytest.fixture(scope="module")
def evaluator(fashion):
    from mustangs.judge.evaluation import module_hash, stats_of_tensor

    from ensembler.stats import Evaluator

    x, y = fashion.batch(slice(0, 5000)), fashion.labels[:5000]
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    clf = TemplateClassifier(means).eval()
    real = stats_of_tensor(clf, fashion.data[5000:])
    return Evaluator(clf, module_hash(clf), real, "fashion-mnist", torch.device("cpu"))


def class_generator(image: torch.Tensor, other: torch.Tensor | None = None, p_other: float = 0.0,
                    noise: float = 0.05, seed: int = 0, sharpness: float = 20.0) -> MLPGenerator:
    """An MLP generator that outputs a real ``image`` (in [-1, 1]) plus small latent-driven noise.

    With ``other``, it outputs ``other`` instead for the fraction ``p_other`` of latents: the
    first latent coordinate passes a hard step built from two LeakyReLU units,
    s = clamp(a·z₀ + b, 0, 1) = (lrelu(u) − lrelu(u − 1) − 0.2) / 0.8, which switches the output
    bias between the two images (a blend only in a thin band of z₀).
    """
    torch.manual_seed(seed)
    g = MLPGenerator(64, (1, 28, 28))
    base = torch.atanh(image.reshape(-1).clamp(-0.995, 0.995))
    with torch.no_grad():
        l0, l2, l4 = g.net[0], g.net[2], g.net[4]
        l4.weight.mul_(noise)
        l4.bias.copy_(base)
        if other is not None:
            threshold = float(torch.distributions.Normal(0, 1).icdf(torch.tensor(1 - p_other)))
            b0 = -sharpness * threshold
            l0.weight[:2] = 0
            l0.weight[:2, 0] = sharpness
            l0.bias[0], l0.bias[1] = b0 + 0.5, b0 - 0.5          # u = a·z₀ + b0 + 0.5, and u − 1
            l2.weight[:, :2] = 0                                  # only unit 0 of layer 2 reads them
            l2.weight[0] = 0
            l2.weight[0, 0], l2.weight[0, 1] = 1 / 0.8, -1 / 0.8
            l2.bias[0] = -0.2 / 0.8                               # = s in [0, 1]
            l4.weight[:, 0] = torch.atanh(other.reshape(-1).clamp(-0.995, 0.995)) - base
    return g.eval()


def random_generator(seed: int) -> MLPGenerator:
    torch.manual_seed(seed)
    return MLPGenerator(64, (1, 28, 28)).eval()


@pytest.fixture(scope="module")
def class_pool(tmp_path_factory, fashion, evaluator):
    """Pool: pure generators of classes 0 and 3, three two-class generators and one random MLP."""
    x, y = fashion.batch(slice(5000, 6000)), fashion.labels[5000:6000]
    _, logits = evaluator.classifier.features_and_logits(x)
    pred = logits.argmax(1)
    img = {c: x[int(((y == c) & (pred == c)).nonzero()[0])] for c in (0, 3, 5, 8)}
    gens = [(f"class{c}", class_generator(img[c], seed=c), {"origin": {"class": c}}) for c in (0, 3)]
    for a, b, p in ((0, 5, 0.4), (3, 8, 0.5), (5, 8, 0.3)):
        gens.append((f"mix{a}{b}", class_generator(img[a], img[b], p, seed=10 * a + b),
                     {"origin": {"classes": [a, b], "p": p}}))
    gens.append(("rand1", random_generator(1), {}))
    return write_pool(tmp_path_factory.mktemp("pools") / "classes" / "pool", SPEC, "fashion-mnist", gens).root


@pytest.fixture(scope="module")
def random_pool(tmp_path_factory):
    gens = [(f"g{s}", random_generator(10 + s), {}) for s in range(4)]
    return write_pool(tmp_path_factory.mktemp("pools") / "random" / "pool", SPEC, "fashion-mnist", gens).root


@pytest.fixture
def use_evaluator(monkeypatch, evaluator, tmp_path):
    """Make the CLI use the stand-in evaluator and a private cache."""
    from ensembler import stats

    monkeypatch.setattr(stats, "load_evaluator", lambda dataset, device="auto", **kw: evaluator)
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    return evaluator


def run_cli(*argv) -> int:
    from ensembler.cli import main

    return main([str(a) for a in argv])


# --------------------------------------------------------------------------- objectives

def test_parse_objective():
    from ensembler.objectives import Term, describe, parse_objective
    from mustangs.errors import UserError

    assert parse_objective("tvd") == (Term(1.0, "tvd"),)
    assert parse_objective("tvd+0.01*fid") == (Term(1.0, "tvd"), Term(0.01, "fid"))
    assert parse_objective(" fid*2 + is ") == (Term(2.0, "fid"), Term(1.0, "is"))
    assert describe(parse_objective("tvd+0.5*is")) == "tvd - 0.5*is"
    for bad in ("", "kl", "tvd+", "tvd-fid", "0*tvd", "2**fid"):
        with pytest.raises(UserError):
            parse_objective(bad)


def _random_psd(rng, d, n=400):
    f = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    return f.mean(0), np.cov(f, rowvar=False)


def test_eigen_frechet_matches_pytorch_fid():
    from ensembler.objectives import frechet_distance_eigh

    rng = np.random.default_rng(0)
    for d in (4, 32, 128):
        (m1, s1), (m2, s2) = _random_psd(rng, d, 4 * d), _random_psd(rng, d, 4 * d)
        ref = frechet_distance(m1, s1, m2, s2)
        assert frechet_distance_eigh(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-6, abs=1e-8)
    assert frechet_distance_eigh(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-6)


def _fake_stats(rng, K=5, d=12, C=10, n=1000):
    out = []
    for k in range(K):
        f = rng.standard_normal((n, d)) * rng.uniform(0.5, 2) + rng.standard_normal(d)
        p = rng.dirichlet(np.ones(C) * 0.5, size=n)
        out.append(FeatureStats(n, f.mean(0), f.T @ f / n, np.bincount(p.argmax(1), minlength=C) / n,
                                p.mean(0), float((p * np.log(p)).sum(1).mean())))
    return out


def test_mixture_objective_equals_metrics_of_mixed_statistics():
    from ensembler.objectives import MixtureObjective, parse_objective
    from mustangs.judge.metrics import inception_score_from_moments, tvd

    rng = np.random.default_rng(1)
    stats = _fake_stats(rng)
    real = _fake_stats(rng, K=1, n=3000)[0]
    target = rng.dirichlet(np.ones(10))
    obj = MixtureObjective(stats, real, parse_objective("tvd+0.1*fid+2*is"), target)
    W = rng.dirichlet(np.ones(5), size=7)
    W[0] = [0, 0, 1, 0, 0]
    losses = obj.losses(W)
    for w, l_tvd, l_fid, l_is, total in zip(W, losses["tvd"], losses["fid"], losses["is"], obj.batch(W)):
        mix = FeatureStats.mix(stats, w)
        assert l_tvd == pytest.approx(tvd(mix.hist, target), abs=1e-12)
        assert l_fid == pytest.approx(frechet_distance(mix.mu, mix.sigma, real.mu, real.sigma), rel=1e-6)
        assert -l_is == pytest.approx(inception_score_from_moments(mix.mean_probs, mix.mean_plogp), rel=1e-9)
        assert total == pytest.approx(l_tvd + 0.1 * l_fid + 2 * l_is, rel=1e-9)
    assert obj(W[1]) == pytest.approx(obj.batch(W[1:2])[0])


def test_decode_stays_on_simplex_and_respects_max_size():
    from ensembler.methods import decode

    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 6))
    for param in ("clip", "softmax"):
        w = decode(x, param)
        assert np.all(w >= 0) and np.allclose(w.sum(1), 1)
        w3 = decode(x, param, max_size=3)
        assert np.all((w3 > 0).sum(1) <= 3) and np.allclose(w3.sum(1), 1)
    assert np.allclose(decode(-np.ones(4), "clip"), 0.25)  # all clipped → uniform


@pytest.mark.parametrize("method", ["cma", "es", "greedy", "uniform"])
def test_methods_reduce_a_tvd_objective(method):
    from ensembler.methods import make_method
    from ensembler.objectives import MixtureObjective, parse_objective
    from ensembler.optimize import search

    rng = np.random.default_rng(3)
    stats = _fake_stats(rng, K=6)
    obj = MixtureObjective(stats, stats[0], parse_objective("tvd"))
    m = make_method(method, 6, seed=0, budget=600, max_size=3)
    res = search(obj.batch, m, 6, 600, max_size=3, progress=False)
    assert res.evaluations <= 600 and (res.weights > 0).sum() <= 3
    assert np.isclose(res.weights.sum(), 1) and res.loss == pytest.approx(obj(res.weights))
    if method != "uniform":
        assert res.loss <= min(obj(np.eye(6)[k]) for k in range(6)) + 1e-12


def test_cma_is_isolated_from_the_global_numpy_rng():
    from ensembler.methods import decode, make_method

    rng = np.random.default_rng(4)
    H = rng.dirichlet(np.ones(10) * 0.3, size=8)

    def run(disturb: bool):
        np.random.seed(99)
        m = make_method("cma", 8, seed=7, budget=300)
        xs_all = []
        for _ in range(20):
            xs = m.ask()
            if disturb:
                np.random.seed(1)
                np.random.rand(17)
            xs_all.append(xs)
            m.tell(xs, 0.5 * np.abs(decode(xs) @ H - 0.1).sum(1))
        return np.concatenate(xs_all)

    a, b = run(False), run(True)
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------- statistics and cache

def test_stats_cache_hits_and_never_serves_stale(evaluator, tmp_path, monkeypatch):
    from ensembler import stats as S

    calls = []
    real_fn = S.generator_stats

    def counting(*a, **k):
        calls.append(1)
        return real_fn(*a, **k)

    monkeypatch.setattr(S, "generator_stats", counting)
    gen = random_generator(5)
    src = [S.Source("g", "a" * 64, SPEC, lambda: gen)]
    cache = S.StatsCache(tmp_path)
    s1 = S.pool_stats(src, evaluator, 500, 0, cache=cache, progress=False)[0]
    s2 = S.pool_stats(src, evaluator, 500, 0, cache=cache, progress=False)[0]
    assert len(calls) == 1 and np.array_equal(s1.second, s2.second) and np.array_equal(s1.hist, s2.hist)
    # Any change of what the statistics depend on is a miss: n, seed, generator hash, classifier hash.
    S.pool_stats(src, evaluator, 400, 0, cache=cache, progress=False)
    S.pool_stats(src, evaluator, 500, 1, cache=cache, progress=False)
    S.pool_stats([S.Source("g", "b" * 64, SPEC, lambda: gen)], evaluator, 500, 0, cache=cache, progress=False)
    other = S.Evaluator(evaluator.classifier, "other-classifier", evaluator.real)
    S.pool_stats(src, other, 500, 0, cache=cache, progress=False)
    assert len(calls) == 5
    # A corrupt file is recomputed, not trusted.
    path = cache.path(S.cache_key("a" * 64, SPEC, evaluator.classifier_hash, 500, 0))
    path.write_bytes(b"not an npz")
    s3 = S.pool_stats(src, evaluator, 500, 0, cache=cache, progress=False)[0]
    assert len(calls) == 6 and np.array_equal(s3.second, s1.second)


# --------------------------------------------------------------------------- must-show

@needs_fashion
def test_same_seed_same_weights_even_with_global_rng_draws(class_pool, use_evaluator, tmp_path, monkeypatch):
    import ensembler.optimize as O

    args = [class_pool, "--objective", "tvd+0.01*fid", "--method", "cma", "--budget", "300", "--seed", "3",
            "--samples", N_STATS, "--verify-samples", 0]
    assert run_cli("optimize", *args, "--out", tmp_path / "a.json") == 0
    real_decode = O.decode

    def noisy_decode(*a, **k):  # other code drawing from (and re-seeding) numpy's global RNG
        np.random.seed(np.random.randint(1000))
        np.random.standard_normal(13)
        return real_decode(*a, **k)

    monkeypatch.setattr(O, "decode", noisy_decode)
    assert run_cli("optimize", *args, "--out", tmp_path / "b.json") == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert [m["weight"] for m in a["members"]] == [m["weight"] for m in b["members"]]
    assert a["pool_weights"] == b["pool_weights"]


@needs_fashion
@pytest.mark.parametrize("objective", ["fid", "tvd"])
def test_estimated_and_verified_agree_within_sampling_noise(class_pool, use_evaluator, tmp_path, objective):
    out = tmp_path / "e.json"
    # A target the pool can only approach with a mixture, so TVD is sensitive to the weights.
    assert run_cli("optimize", class_pool, "--objective", objective, "--target", "0:0.4,3:0.3,5:0.2,8:0.1",
                   "--method", "es", "--budget", 150, "--samples", N_STATS, "--verify-samples", N_STATS,
                   "--out", out) == 0
    metrics = json.loads(out.read_text())["metrics"]
    est, ver, std = metrics["estimated"], metrics["verified"], metrics["verified_std"]
    for name in ("fid_cls3k", "tvd_cls3k"):
        # Both sides carry sampling noise of about the same size: allow 4 standard deviations of the difference.
        tol = 4 * math.sqrt(2) * std[name] + 1e-3
        assert abs(est[name] - ver[name]) <= tol, (name, est[name], ver[name], std[name])


@needs_fashion
def test_two_class_target_is_met_by_the_verified_histogram(class_pool, use_evaluator, tmp_path):
    out, plot = tmp_path / "two.json", tmp_path / "curve.png"
    assert run_cli("optimize", class_pool, "--objective", "tvd", "--target", "0:0.5,3:0.5", "--method", "cma",
                   "--budget", 400, "--samples", N_STATS, "--verify-samples", N_STATS, "--out", out,
                   "--plot", plot) == 0
    data = json.loads(out.read_text())
    assert data["metrics"]["verified"]["tvd_cls3k"] <= 0.05
    assert data["target_distribution"][0] == 0.5 and data["target_distribution"][3] == 0.5
    assert {m["id"] for m in data["members"] if m["weight"] > 0.05} == {"class0", "class3"}
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert data["method"] == "cma" and data["budget"] == 400 and data["evaluations"] <= 400
    assert data["history"][-1][1] == pytest.approx(data["metrics"]["estimated"]["objective"])


@needs_fashion
def test_evaluate_and_sample_verbs(class_pool, random_pool, use_evaluator, tmp_path, capsys):
    from ensembler.ensemble import Ensemble

    out = tmp_path / "u.json"
    assert run_cli("optimize", class_pool, "--method", "uniform", "--samples", 500, "--verify-samples", 0,
                   "--out", out) == 0
    ens = Ensemble.load(out)
    assert np.allclose(ens.weights, 1 / 6)
    capsys.readouterr()
    assert run_cli("evaluate", out, "-n", 500, "--json") == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["name"] for r in rows] == ["class0", "class3", "mix05", "mix38", "mix58", "rand1", "uniform",
                                         "ensemble"]
    assert set(rows[0]) == {"name", "kind", "fid_cls500", "tvd_cls500", "is_cls500"}
    assert run_cli("evaluate", random_pool, "-n", 300) == 0
    table = capsys.readouterr().out.splitlines()
    assert "fid_cls300" in table[0] and table[-1].startswith("uniform")
    assert run_cli("sample", out, "-n", 16, "--seed", 1, "--out", tmp_path / "grid.png") == 0
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


@needs_fashion
def test_pools_merge_when_architectures_agree(class_pool, random_pool, use_evaluator, tmp_path):
    out = tmp_path / "m.json"
    assert run_cli("optimize", class_pool, random_pool, "--method", "greedy", "--max-size", 2, "--budget", 200,
                   "--samples", 500, "--verify-samples", 0, "--out", out) == 0
    data = json.loads(out.read_text())
    assert len(data["pool_weights"]) == 10 and len(data["pools"]) == 2
    assert 1 <= len(data["members"]) <= 2
    for m in data["members"]:
        assert (out.parent / m["path"]).resolve().is_file() and len(m["sha256"]) == 64


# --------------------------------------------------------------------------- import-lipizzaner

@pytest.mark.parametrize("zipfile_format", [False, True])
def test_import_lipizzaner_reproduces_the_reference_mlp(tmp_path, zipfile_format):
    from mustangs.pool.format import read_pool

    src = tmp_path / "lipizzaner"
    src.mkdir()
    refs = []
    for i in range(2):
        torch.manual_seed(100 + i)
        ref = MLPGenerator(64, (1, 28, 28)).eval()
        # Lipizzaner's four_layer_perceptron is an nn.Sequential: keys without our "net." prefix.
        state = {k.removeprefix("net."): v for k, v in ref.state_dict().items()}
        torch.save(state, src / f"generator-{i}.pkl", _use_new_zipfile_serialization=zipfile_format)
        refs.append(ref)
    assert run_cli("import-lipizzaner", src, "--out", tmp_path / "pool") == 0
    pool = read_pool(tmp_path / "pool")
    assert pool.spec == SPEC and len(pool) == 2
    z = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i, ref in enumerate(refs):
            assert torch.equal(pool.load_generator(i)(z), ref(z))


class _NotATensor:
    pass


def test_import_lipizzaner_refuses_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"0.weight": torch.zeros(256, 64)}, bad / "generator-0.pkl")  # missing keys
    assert run_cli("import-lipizzaner", bad, "--out", tmp_path / "pool") == 2
    assert "keys do not match" in capsys.readouterr().err
    (bad / "generator-0.pkl").unlink()
    torch.save({"x": _NotATensor()}, bad / "g.pt")  # arbitrary pickled object: weights_only refuses
    assert run_cli("import-lipizzaner", bad, "--out", tmp_path / "pool") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pool").exists()


# --------------------------------------------------------------------------- errors

def _assert_one_line_error(capsys, code, *words):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for w in words:
        assert w in err, err


def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, random_pool, use_evaluator, capsys):
    out = tmp_path / "out.json"
    # Empty pool.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"format": "mustangs-pool/1", "network": SPEC.to_json(),
                                                     "dataset": "fashion-mnist", "generators": []}))
    _assert_one_line_error(capsys, run_cli("optimize", empty, "--out", out), "no generators")
    # Pools with different architectures.
    torch.manual_seed(0)
    other = write_pool(tmp_path / "z32", NetSpec("mlp", 32, (1, 28, 28)), "fashion-mnist",
                       [("a", MLPGenerator(32), {})]).root
    _assert_one_line_error(capsys, run_cli("optimize", random_pool, other, "--out", out), "different architectures")
    # NaN weights in a generator file.
    g = random_generator(0)
    with torch.no_grad():
        g.net[2].weight[0, 0] = float("nan")
    nan_pool = write_pool(tmp_path / "nan", SPEC, "fashion-mnist", [("ok", random_generator(1), {}),
                                                                  ("bad", g, {})]).root
    _assert_one_line_error(capsys, run_cli("optimize", nan_pool, "--out", out), "NaN")
    # Unknown objective / method / target.
    _assert_one_line_error(capsys, run_cli("optimize", random_pool, "--objective", "kl", "--out", out),
                           "unknown objective")
    _assert_one_line_error(capsys, run_cli("optimize", random_pool, "--method", "pso", "--out", out),
                           "unknown method")
    _assert_one_line_error(capsys, run_cli("optimize", random_pool, "--target", "12:1", "--samples", 300,
                                           "--out", out), "out of range")
    # Not a pool, not an ensemble.
    _assert_one_line_error(capsys, run_cli("optimize", tmp_path / "nowhere", "--out", out), "not a pool")
    _assert_one_line_error(capsys, run_cli("sample", tmp_path / "nowhere.json", "--out", tmp_path / "g.png"))
    assert not out.exists() and not (tmp_path / "g.png").exists()
    # Mixture weights with NaN never reach an ensemble.
    from ensembler.pools import open_pools
    from mustangs.errors import UserError

    with pytest.raises(UserError):
        open_pools([random_pool]).ensemble(np.array([np.nan, 1, 1, 1]))


def test_single_generator_pool_and_softmax_param(random_pool, use_evaluator, tmp_path):
    one = write_pool(tmp_path / "one", SPEC, "fashion-mnist", [("only", random_generator(3), {})]).root
    out = tmp_path / "one.json"
    assert run_cli("optimize", one, "--samples", 300, "--verify-samples", 300, "--out", out) == 0
    data = json.loads(out.read_text())
    assert [m["weight"] for m in data["members"]] == [1.0] and data["stop"] == "single"
    out2 = tmp_path / "soft.json"
    assert run_cli("optimize", random_pool, "--param", "softmax", "--objective", "is", "--budget", 60,
                   "--samples", 300, "--verify-samples", 0, "--out", out2) == 0
    data = json.loads(out2.read_text())
    assert data["objective_minimised"] == "-is" and data["evaluations"] <= 60
    assert abs(sum(m["weight"] for m in data["members"]) - 1) < 1e-9


def test_real_evaluator_path_on_a_rings_pool(tmp_path, monkeypatch):
    """The un-mocked path: load_evaluator → shipped (analytic) rings classifier and cached real stats."""
    from conftest import rings_pool

    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    pool = rings_pool(tmp_path / "rings")
    out = tmp_path / "r.json"
    assert run_cli("optimize", pool, "--objective", "tvd+0.1*fid", "--budget", 100, "--samples", 2000,
                   "--verify-samples", 2000, "--device", "cpu", "--out", out) == 0
    data = json.loads(out.read_text())
    assert set(data["metrics"]["verified"]) == {"fid_cls2k", "tvd_cls2k", "is_cls2k", "precision_cls1k",
                                                "recall_cls1k", "density_cls1k", "coverage_cls1k", "kid_cls1k"}
    assert set(data["metrics"]["estimated"]) == set(data["metrics"]["verified"]) | {"objective"}
    assert data["statistics"]["classifier_sha256"]
    assert data["classifier"] == {"name": "rings", "dataset": "rings", "sha256": data["statistics"]["classifier_sha256"],
                                  "source": "analytic", "forced": False}
    assert list((tmp_path / "cache" / "ensembler-stats").glob("*.npz"))


# --------------------------------------------------------------------------- diversity objectives

@pytest.fixture
def use_diversity_evaluator(monkeypatch, evaluator, fashion, tmp_path):
    """The stand-in evaluator plus real features (test images 5000+, as its real statistics)."""
    from dataclasses import replace

    from mustangs.judge.features import features_of_tensor

    from ensembler import stats

    ev = replace(evaluator, real_features_fn=lambda n: features_of_tensor(evaluator.classifier,
                                                                         fashion.data[5000:5000 + n]))
    monkeypatch.setattr(stats, "load_evaluator", lambda dataset, device="auto", **kw: ev)
    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    return ev


@needs_fashion
def test_coverage_objective_beats_every_single_generator_and_verifies(class_pool, use_diversity_evaluator,
                                                                      tmp_path, capsys):
    out = tmp_path / "cov.json"
    assert run_cli("optimize", class_pool, "--objective", "coverage", "--budget", 150, "--samples", 500,
                   "--diversity-samples", 500, "--verify-samples", 1000, "--out", out) == 0
    data = json.loads(out.read_text())
    est, ver = data["metrics"]["estimated"], data["metrics"]["verified"]
    assert data["objective_minimised"] == "(1-coverage)"
    assert est["objective"] == pytest.approx(1 - est["coverage_cls500"])
    assert abs(est["coverage_cls500"] - ver["coverage_cls500"]) < 0.06
    # recall rests on the fake k-NN balls, which a few outlying fakes (the blends of the two-class
    # generators) make large: it is the noisiest of the four at 500 samples
    assert abs(est["recall_cls500"] - ver["recall_cls500"]) < 0.1
    assert set(est) >= {f"{m}_cls500" for m in ("precision", "recall", "density", "coverage", "kid")}
    capsys.readouterr()
    assert run_cli("evaluate", out, "-n", 500, "--diversity-samples", 500, "--json") == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    singles = [r["coverage_cls500"] for r in rows.values() if r["kind"] == "single"]
    assert est["coverage_cls500"] > max(singles)          # a mixture covers more than any one generator
    assert rows["ensemble"]["coverage_cls500"] >= rows["uniform"]["coverage_cls500"] - 0.03
    # recall as an objective, combined with tvd
    assert run_cli("optimize", class_pool, "--objective", "tvd+recall", "--budget", 30, "--samples", 500,
                   "--diversity-samples", 300, "--verify-samples", 0, "--out", tmp_path / "rec.json") == 0
    assert json.loads((tmp_path / "rec.json").read_text())["objective_minimised"] == "tvd + (1-recall)"


def test_sample_objectives_need_real_features_said_in_one_line(random_pool, use_evaluator, tmp_path, capsys):
    assert run_cli("optimize", random_pool, "--objective", "coverage", "--budget", 10, "--samples", 100,
                   "--out", tmp_path / "x.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "coverage" in err[-1] and "--data-dir" in err[-1]
    assert run_cli("optimize", random_pool, "--objective", "recall", "--diversity-samples", 0,
                   "--out", tmp_path / "x.json") == 2
    assert not (tmp_path / "x.json").exists()


def test_identical_generators_are_merged_with_a_line_and_recorded(tmp_path, use_evaluator, capsys):
    gens = [("a", random_generator(1), {}), ("b", random_generator(2), {}), ("a-again", random_generator(1), {})]
    pool = write_pool(tmp_path / "dup" / "pool", SPEC, "fashion-mnist", gens).root
    out = tmp_path / "e.json"
    assert run_cli("optimize", pool, "--budget", 20, "--samples", 200, "--verify-samples", 0, "--out", out) == 0
    err = capsys.readouterr().err
    assert "merged identical generators: a, a-again" in err
    data = json.loads(out.read_text())
    assert [m["kept"] for m in data["merged"]] == ["a"] and data["merged"][0]["merged"] == ["a-again"]
    assert sorted(data["pool_weights"]) == ["a", "b"]
