"""Request-time re-purposing: the numpy mixture math, targets and weights, the exported statistics,
OnnxSampler(target=...), POST /sample + /solve over HTTP, and the trade-off front.

The closed-loop tests use the ensembler tests' "class pool" (generators that output real images of
given classes) and their stand-in classifier, so a solved target can be checked by classifying
what the served model draws.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ensembler.mixture_math import FidTerms, frechet_distance_eigh, solve_target, solve_tvd, tvd_batch
from mustangs.errors import UserError
from serving.repurpose import (Repurposer, RepurposeStats, decode_payload, encode_payload, parse_target_text,
                               resolve_target, resolve_weights)

from test_ensembler import class_pool, evaluator, fashion, use_evaluator  # noqa: F401 - fixtures
from service_client import service_client

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# --------------------------------------------------------------------------- mixture math

def _lp_by_scipy(H, t):
    from scipy.optimize import linprog

    K, C = H.shape
    A = np.zeros((C + 1, K + 2 * C))
    A[:C, :K], A[:C, K:K + C], A[:C, K + C:], A[C, :K] = H.T, -np.eye(C), np.eye(C), 1
    c = np.concatenate([np.zeros(K), np.full(2 * C, 0.5)])
    return linprog(c, A_eq=A, b_eq=np.r_[t, 1], bounds=(0, None), method="highs").fun


@pytest.mark.parametrize("K", [1, 4, 25, 100])
def test_tvd_solver_is_exact_and_sparse(K):
    """The numpy simplex method reaches the LP optimum (scipy's HiGHS as the referee) on random pools."""
    rng = np.random.default_rng(K)
    for trial in range(12):
        H = rng.dirichlet(np.full(10, 0.3), size=K)
        t = [np.full(10, 0.1), np.eye(10)[trial % 10], rng.dirichlet(np.full(10, 0.5))][trial % 3]
        w = solve_tvd(H, t)
        assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
        assert np.count_nonzero(w) <= 11                       # a vertex: at most C + 1 generators
        assert tvd_batch(w[None], H, t)[0] == pytest.approx(_lp_by_scipy(H, t), abs=1e-9)
        assert np.array_equal(w, solve_tvd(H, t))             # deterministic


def _fid_problem(K=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(K, d))
    second = []
    for k in range(K):
        x = rng.normal(size=(200, d)) @ rng.normal(size=(d, d)) * 0.3 + mu[k]
        second.append(x.T @ x / 200)
    real = rng.normal(size=(500, d))
    return mu, np.array(second), np.full(K, 200), real.mean(0), np.cov(real.T)


def test_fid_terms_value_and_gradient():
    mu, second, n, mu_r, s_r = _fid_problem()
    fid = FidTerms(mu, second, n, mu_r, s_r)
    w = np.random.default_rng(1).dirichlet(np.ones(len(mu)))
    m = w @ mu
    sigma = (np.einsum("k,kij->ij", w, second) - np.outer(m, m)) * 200 / 199
    value, grad = fid.value_and_grad(w)
    assert value == pytest.approx(frechet_distance_eigh(m, sigma, mu_r, s_r), rel=1e-9)
    assert fid.batch(w[None])[0] == pytest.approx(value, rel=1e-12)
    d = np.random.default_rng(2).normal(size=len(w))
    eps = 1e-6
    numeric = (fid.batch((w + eps * d)[None])[0] - fid.batch((w - eps * d)[None])[0]) / (2 * eps)
    assert grad @ d == pytest.approx(numeric, rel=1e-4)


def test_fid_weight_trades_tvd_for_fid():
    mu, second, n, mu_r, s_r = _fid_problem(K=8)
    fid = FidTerms(mu, second, n, mu_r, s_r)
    H = np.random.default_rng(3).dirichlet(np.full(10, 0.3), size=8)
    t = np.eye(10)[2]
    plain = solve_target(H, t, fid, 0.0)
    mixed = solve_target(H, t, fid, 0.05)
    assert plain.iterations == 0 and plain.tvd <= mixed.tvd + 1e-12
    assert mixed.objective <= plain.tvd + 0.05 * plain.fid + 1e-9   # never worse than its start
    assert np.array_equal(mixed.weights, solve_target(H, t, fid, 0.05).weights)
    with pytest.raises(ValueError):
        solve_target(H, t, None, 0.1)


def test_mixture_math_and_serving_runtime_import_without_torch():
    code = ("import sys; import ensembler.mixture_math, serving.repurpose, serving.sampler; "
            "bad = [m for m in ('torch', 'scipy') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------- targets and weights

def test_targets_resolve_by_name_index_list_and_text():
    uni = np.full(10, 0.1)
    assert resolve_target("uniform", NAMES) == pytest.approx(uni)
    two = resolve_target({"Sneaker": 1, "Bag": 1}, NAMES)
    assert two[7] == two[8] == 0.5 and two.sum() == pytest.approx(1)
    assert resolve_target({"7": 2, "8": 2}, NAMES) == pytest.approx(two)
    assert resolve_target({"sneaker": 0.5, "BAG": 0.5}, NAMES) == pytest.approx(two)
    assert resolve_target("Sneaker:0.5,Bag:0.5", NAMES) == pytest.approx(two)
    assert resolve_target([0, 0, 0, 0, 0, 0, 0, 3, 3, 0], NAMES) == pytest.approx(two)
    assert resolve_target("real", NAMES, np.arange(10.0)) == pytest.approx(np.arange(10) / 45)
    assert parse_target_text('{"Bag": 1}') == {"Bag": 1}


@pytest.mark.parametrize("spec, message", [
    ({"Sneakers": 1}, "unknown class 'Sneakers'"),
    ({"12": 1}, "index 12 is out of range"),
    ({"Bag": -0.5}, "negative"),
    ({"Bag": 0, "Coat": 0}, "sum to 0"),
    ({}, "names no class"),
    ({"Bag": 1, "8": 1}, "given twice"),
    ({"Bag": "lots"}, "must be a number"),
    ({"Bag": True}, "must be a number"),
    ({"Bag": float("inf")}, "finite"),
    ({"Bag": float("nan")}, "finite"),
    ([1, 2, 3], "one weight per class (10), got 3"),
    ("everything", "unknown class"),
    ("Bag:x", "cannot read the weight"),
    (42, "target must be"),
])
def test_bad_targets_name_the_problem(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_target(spec, NAMES)


@pytest.mark.parametrize("spec, message", [
    ([1, 2], "one entry per generator (3), got 2"),
    ([1, -1, 0], "negative"),
    ([0, 0, 0], "sum to 0"),
    ([1, float("nan"), 0], "finite"),
    ("1,2,3", "must be a list"),
    ([1, 1e308, 1e308], "overflows"),
])
def test_bad_weights_name_the_problem(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_weights(spec, 3)


def _random_stats(K=3, d=6, C=10, seed=0) -> RepurposeStats:
    mu, second, n, mu_r, s_r = _fid_problem(K, d, seed)
    H = np.random.default_rng(seed).dirichlet(np.ones(C), size=K)
    info = {"classifier": {"name": "x", "sha256": "0" * 64}, "class_names": NAMES[:C], "samples_per_generator": 200,
            "seed": 0}
    return RepurposeStats(H, mu, second, n, mu_r, s_r, np.full(C, 1 / C), info)


def test_payload_round_trip_is_float32_and_hash_checked():
    stats = _random_stats()
    meta = encode_payload(stats)
    back = decode_payload(meta)
    assert back.hist == pytest.approx(stats.hist)
    assert back.second == pytest.approx(stats.second, rel=1e-6)
    assert np.array_equal(back.second, np.swapaxes(back.second, 1, 2))
    assert back.class_names == NAMES and back.info == stats.info
    assert decode_payload({}) is None
    tampered = dict(meta, **{"mustangs.repurpose": meta["mustangs.repurpose"][:-8] + "AAAAAAA="})
    with pytest.raises(UserError, match="sha256"):
        decode_payload(tampered)


def test_repurposer_caches_and_refuses_mixed_requests():
    r = Repurposer(_random_stats(), np.full(3, 1 / 3))
    a = r.plan(target={"Bag": 1})
    b = r.plan(target={"8": 5})
    assert not a.cached and b.cached and np.array_equal(a.weights, b.weights)
    assert a.estimated_tvd == pytest.approx(r.estimate_tvd(a.weights, np.eye(10)[8]))
    with pytest.raises(UserError, match="not both"):
        r.plan(target="uniform", weights=[1, 1, 1])
    with pytest.raises(UserError, match="only applies to a target"):
        r.plan(fid_weight=1.0)
    with pytest.raises(UserError, match="fid_weight"):
        r.plan(target="uniform", fid_weight=-1)


# --------------------------------------------------------------------------- export → sampler → HTTP

@pytest.fixture(scope="module")
def class_model(tmp_path_factory, class_pool, evaluator):  # noqa: F811 - fixtures
    """The class pool exported (all 6 generators) with statistics on the stand-in classifier."""
    from serving.cli import main

    folder = tmp_path_factory.mktemp("repurpose")
    with pytest.MonkeyPatch.context() as mp:
        from ensembler import stats

        mp.setattr(stats, "load_evaluator", lambda dataset, device="auto", **kw: evaluator)
        mp.setenv("MUSTANGS_CACHE", str(folder / "cache"))
        assert main(["export", str(class_pool), "--out", str(folder / "pool.onnx"), "--stats-samples", "3000",
                     "--threads", "1", "--no-check"]) == 0
    return folder / "pool.onnx"


def _classify(evaluator, x: np.ndarray) -> np.ndarray:
    _, logits = evaluator.classifier.features_and_logits(torch.from_numpy(x))
    return np.bincount(logits.argmax(1).numpy(), minlength=10) / len(x)


def test_sampler_reaims_and_the_estimate_matches_what_is_drawn(class_model, evaluator):  # noqa: F811
    from serving.sampler import OnnxSampler

    s = OnnxSampler(class_model, threads=1)
    info = s.info()
    assert info["repurpose"] and info["classes"] == NAMES and len(info["generators"]) == 6
    assert info["source"] == "pool" and info["weights"] == pytest.approx([1 / 6] * 6)
    for target in ({"T-shirt/top": 1}, {"0": 0.5, "Dress": 0.5}, "uniform"):
        plan = s.plan(target=target)
        x = s.sample(2000, seed=3, plan=plan)
        got = _classify(evaluator, x)
        measured = 0.5 * np.abs(got - plan.target).sum()
        assert abs(measured - plan.estimated_tvd) < 0.04, (target, measured, plan.estimated_tvd)
    one = s.plan(target={"Dress": 1})
    uniform_share = _classify(evaluator, s.sample(2000, seed=4))[3]
    assert _classify(evaluator, s.sample(2000, seed=4, plan=one))[3] >= 2 * uniform_share
    assert np.array_equal(s.sample(50, seed=9, target={"Bag": 1}), s.sample(50, seed=9, target={"8": 1}))
    w = [0, 0, 0, 0, 0, 1]
    assert np.array_equal(s.sample(20, seed=1, weights=w), OnnxSampler(class_model, weights=w).sample(20, seed=1))


def test_cli_sample_with_target_and_refusals(class_model, tmp_path, capsys):
    from serving.cli import main
    from serving.sampler import OnnxSampler

    out = tmp_path / "t.npy"
    assert main(["sample", str(class_model), "-n", "12", "--seed", "2", "--target", "Dress", "--out", str(out)]) == 0
    assert "estimated tvd" in capsys.readouterr().out
    want = OnnxSampler(class_model, threads=1).sample(12, seed=2, target={"Dress": 1})
    assert np.array_equal(np.load(out, allow_pickle=False), want)
    for flags, words in ((["--target", "Dresses:1"], "unknown class 'Dresses'"),
                         (["--target", "Dress:-1"], "negative"),
                         (["--weights", "1,2"], "one entry per generator (6)"),
                         (["--weights", "1,x"], "comma-separated numbers")):
        bad = tmp_path / "bad.png"
        assert main(["sample", str(class_model), "--out", str(bad), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and words in err and len(err.splitlines()) == 1
        assert not bad.exists()


@pytest.fixture(scope="module")
def client(class_model, tmp_path_factory):
    with service_client(class_model, tmp_path_factory.mktemp("bentoml-home")) as c:
        yield c


def test_http_target_header_and_same_bytes(client, class_model):
    from serving.sampler import OnnxSampler

    body = {"n": 64, "seed": 5, "format": "npy", "target": {"T-shirt/top": 0.5, "Dress": 0.5}}
    a, b = client.post("/sample", json=body), client.post("/sample", json=body)
    assert a.status_code == 200 and a.content == b.content
    tvd = float(a.headers["x-mustangs-estimated-tvd"])
    assert a.headers["x-mustangs-weights-source"] == "target"
    local = OnnxSampler(class_model, threads=1)
    plan = local.plan(target={"0": 1, "3": 1})
    assert tvd == pytest.approx(plan.estimated_tvd, abs=1e-6)
    assert np.array_equal(np.load(io.BytesIO(a.content)), local.sample(64, seed=5, plan=plan))
    png = client.post("/sample", json={"n": 4, "seed": 1, "target": "uniform"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    solved = client.post("/solve", json={"target": {"Dress": 1}}).json()
    assert solved["source"] == "target" and len(solved["weights"]) == 6 and solved["target"]["Dress"] == 1
    assert solved["estimated_tvd"] < 0.8 and solved["estimated_class_histogram"]["Dress"] > 0.2
    w = client.post("/sample", json={"n": 8, "seed": 1, "format": "npy", "weights": [0, 0, 1, 0, 0, 0]})
    assert w.status_code == 200 and w.headers["x-mustangs-weights-source"] == "weights"
    info = client.post("/info").json()
    assert info["classes"] == NAMES and "class_histogram" in info["generators"][0]


@pytest.mark.parametrize("body, field, words", [
    ({"target": {"Sneakers": 1}}, "target", "unknown class 'Sneakers'"),
    ({"target": {"Bag": -1}}, "target", "negative"),
    ({"target": {"Bag": 0}}, "target", "sum to 0"),
    ({"target": {"99": 1}}, "target", "out of range"),
    ({"target": [1, 2]}, "target", "one weight per class"),
    ({"target": "most"}, "target", "unknown class"),
    ({"weights": [1, 2]}, "weights", "one entry per generator (6)"),
    ({"weights": [1, 0, 0, 0, 0, -1]}, "weights", "negative"),
    ({"weights": [0] * 6}, "weights", "sum to 0"),
    ({"weights": [1e308] * 6}, "weights", "overflows"),
    ({"target": "uniform", "weights": [1] * 6}, "", "not both"),
    ({"fid_weight": 1}, "fid_weight", "only applies to a target"),
])
def test_http_bad_targets_and_weights_are_400_with_message(client, body, field, words):
    for path, extra in (("/sample", {"n": 2}), ("/solve", {})):
        r = client.post(path, json={**extra, **body})
        assert r.status_code == 400, (path, r.content[:300])
        data = r.json()
        assert words in data["error"] and data["detail"][0]["loc"] == ([field] if field else [])
    assert client.post("/sample", json={"n": 1}).status_code == 200


@pytest.mark.parametrize("body", [{"target": {"Bag": "x"}}, {"weights": "1,2"}, {"fid_weight": -1},
                                  {"target": None, "extra": 1}])
def test_http_schema_level_refusals_stay_400(client, body):
    assert client.post("/sample", json={"n": 2, **body}).status_code == 400


def test_model_without_statistics_refuses_targets_but_takes_weights(class_model, tmp_path):
    import onnx

    from serving.sampler import OnnxSampler

    model = onnx.load(str(class_model))
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("mustangs.repurpose")]
    del model.metadata_props[:]
    for key, value in keep:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "m.onnx"))
    s = OnnxSampler(tmp_path / "m.onnx", threads=1)
    with pytest.raises(UserError, match="no class statistics"):
        s.plan(target="uniform")
    assert s.plan(weights=[0, 1, 0, 0, 0, 0]).weights.tolist() == [0.0, 1.0, 0, 0, 0, 0]
    assert not s.info()["repurpose"]
    tampered = [(k, v + ("x" if k == "mustangs.repurpose_sha256" else "")) for k, v in
                ((p.key, p.value) for p in onnx.load(str(class_model)).metadata_props)]
    del model.metadata_props[:]
    for key, value in tampered:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "t.onnx"))
    with pytest.raises(UserError, match="sha256"):
        OnnxSampler(tmp_path / "t.onnx")


# --------------------------------------------------------------------------- the front

def test_front_cli_json_plot_and_export_of_a_point(class_pool, use_evaluator, tmp_path, capsys):  # noqa: F811
    from ensembler.cli import main as ens_main
    from ensembler.front import load_front_point, non_dominated, read_front
    from serving.cli import main as serve_main
    from serving.sampler import OnnxSampler

    out, plot = tmp_path / "front.json", tmp_path / "front.png"
    assert ens_main(["front", str(class_pool), "--objectives", "tvd,fid", "--scalarisations", "4", "--budget", "60",
                     "--samples", "3000", "--out", str(out), "--plot", str(plot), "--max-size", "3"]) == 0
    doc = json.loads(out.read_text())
    assert read_front(out).points[0].members[0].sha256 == doc["points"][0]["members"][0]["sha256"]  # schema-checked
    pts = doc["points"]
    assert len(pts) >= 2 and plot.stat().st_size > 1000
    xy = np.array([[p["objectives"]["tvd"], p["objectives"]["fid"]] for p in pts])
    assert len(non_dominated(xy)) == len(xy)                              # nothing on it is dominated
    assert np.all(np.diff(xy[:, 0]) > 0) and np.all(np.diff(xy[:, 1]) < 0)
    assert all(1 <= p["size"] <= 3 and p["size"] == len(p["members"]) for p in pts)
    ens = load_front_point(out, len(pts) - 1)
    assert len(ens.members) == pts[-1]["size"]
    capsys.readouterr()
    assert serve_main(["export", str(out), "--point", "0", "--out", str(tmp_path / "p0.onnx"), "--stats-samples",
                       "3000", "--no-check", "--threads", "1"]) == 0
    s = OnnxSampler(tmp_path / "p0.onnx", threads=1)
    assert s.source == "front" and s.weights == pytest.approx([m["weight"] for m in pts[0]["members"]])
    assert serve_main(["export", str(out), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--point" in capsys.readouterr().err
    assert serve_main(["export", str(out), "--point", "99", "--out", str(tmp_path / "x.onnx")]) == 2
    assert ens_main(["front", str(class_pool), "--objectives", "tvd", "--out", str(tmp_path / "f.json")]) == 2
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "f.json").exists()


# --------------------------------------------------------------------------- with the judges and guards of main

def _with_meta(src: Path, dst: Path, changes: dict[str, str | None]) -> Path:
    """A copy of the ONNX model ``src`` with metadata entries replaced (``None``: removed)."""
    import onnx

    model = onnx.load(str(src))
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in changes]
    del model.metadata_props[:]
    for key, value in keep + [(k, v) for k, v in changes.items() if v is not None]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    return dst


def test_statistics_without_the_real_split_serve_targets_but_not_fid(class_model, tmp_path):
    """A model exported where the test split was missing: class targets work, fid_weight and 'real' say why not."""
    import onnxruntime as ort

    from serving.sampler import OnnxSampler

    meta = ort.InferenceSession(str(class_model), providers=["CPUExecutionProvider"]).get_modelmeta()
    stats = decode_payload(meta.custom_metadata_map)
    stats.real_mu = stats.real_sigma = stats.real_hist = None
    stats.info["real_statistics"] = False
    m = _with_meta(class_model, tmp_path / "noreal.onnx", encode_payload(stats))
    s = OnnxSampler(m, threads=1)
    full = OnnxSampler(class_model, threads=1)
    plan = s.plan(target={"Dress": 1})
    assert plan.estimated_fid is None and np.array_equal(plan.weights, full.plan(target={"Dress": 1}).weights)
    assert s.plan().estimated_fid is None and not s.info()["statistics"]["real_statistics"]
    with pytest.raises(UserError, match="^fid_weight needs the real data"):
        s.plan(target="uniform", fid_weight=1.0)
    with pytest.raises(UserError, match="'real' needs the real data"):
        s.plan(target="real")


@pytest.mark.parametrize("changes, words", [
    ({"mustangs.source": "bucket"}, "source"),
    ({"mustangs.repurpose_info": json.dumps({"classifier": {"name": "x"}, "class_names": ["a"],
                                             "samples_per_generator": 10, "seed": 0})}, "classifier.sha256"),
    ({"mustangs.repurpose_info": json.dumps({"classifier": {"name": "x", "sha256": "ab"}, "class_names": ["a", "a"],
                                             "samples_per_generator": 10, "seed": 0})}, "distinct"),
    ({"mustangs.repurpose_sha256": "not-hex"}, "repurpose_sha256"),
    ({"mustangs.repurpose_sha256": None}, "without their sha256"),
])
def test_repurpose_metadata_is_schema_checked(class_model, tmp_path, changes, words):
    from serving.sampler import OnnxSampler

    with pytest.raises(UserError, match=words):
        OnnxSampler(_with_meta(class_model, tmp_path / "bad.onnx", changes), threads=1)


def test_export_of_a_pool_refuses_a_judge_for_another_dataset(class_pool, use_evaluator, tmp_path, capsys):  # noqa: F811
    """--classifier is checked against the pool's dataset by 'serving export POOL' before anything is written."""
    from serving.cli import main as serve_main

    out = tmp_path / "m.onnx"
    assert serve_main(["export", str(class_pool), "--out", str(out), "--classifier", "rings"]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on rings" in err and "fashion-mnist" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_rings_pool_export_and_front_with_the_shipped_judge(tmp_path, monkeypatch, capsys):
    """Un-mocked: the analytic rings classifier judges the statistics of 'serving export POOL --classifier rings'
    and the front ('ensembler front --classifier rings'); both record it; a grid25 judge is refused."""
    from ensembler.cli import main as ens_main
    from serving.cli import main as serve_main
    from serving.sampler import OnnxSampler
    from conftest import rings_pool

    monkeypatch.setenv("MUSTANGS_CACHE", str(tmp_path / "cache"))
    pool = rings_pool(tmp_path / "rings")
    front = tmp_path / "front.json"
    assert ens_main(["front", str(pool), "--objectives", "tvd,fid", "--classifier", "rings", "--scalarisations", "2",
                     "--budget", "20", "--samples", "1000", "--diversity-samples", "0", "--device", "cpu",
                     "--out", str(front)]) == 0
    doc = json.loads(front.read_text())
    assert doc["classifier"]["name"] == "rings" and doc["classifier"]["source"] == "analytic"
    assert ens_main(["front", str(pool), "--classifier", "grid25", "--out", str(tmp_path / "g.json")]) == 2
    assert "trained on grid25" in capsys.readouterr().err and not (tmp_path / "g.json").exists()
    model = tmp_path / "rings.onnx"
    assert serve_main(["export", str(pool), "--out", str(model), "--classifier", "rings", "--stats-samples", "1000",
                       "--score-samples", "500", "--device", "cpu", "--no-check", "--threads", "1"]) == 0
    s = OnnxSampler(model, threads=1)
    info = s.info()
    assert info["source"] == "pool" and info["classifier"]["name"] == "rings"
    assert info["classes"] == [f"mode{i}" for i in range(8)] and info["statistics"]["real_statistics"]
    assert info["served_scores"]["classifier"]["name"] == "rings" and info["served_scores"]["samples"] == 500
    assert s.plan(target="uniform", fid_weight=0.1).estimated_fid is not None
    p0 = tmp_path / "p0.onnx"
    assert serve_main(["export", str(front), "--point", "0", "--out", str(p0), "--classifier", "rings",
                       "--stats-samples", "1000", "--device", "cpu", "--no-check", "--threads", "1"]) == 0
    assert OnnxSampler(p0, threads=1).source == "front"
