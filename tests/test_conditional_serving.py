"""``POST /sample`` with ``labels`` and ``/info`` of a conditional model (issue 21), in process
(tests/service_client.py); the model is a small exported conditional mlp ensemble of random generators."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from serving.export import export_ensemble
from serving.sampler import OnnxSampler
from service_client import service_client
from test_conditional import CLASSES, conditional_ensemble


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cond-http")
    export_ensemble(conditional_ensemble(folder, "mlp"), folder / "c.onnx")
    return folder / "c.onnx"


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    with service_client(model, tmp_path_factory.mktemp("bentoml-home")) as c:
        yield c


def npy(r) -> np.ndarray:
    assert r.status_code == 200, r.content[:300]
    return np.load(io.BytesIO(r.content), allow_pickle=False)


def test_info_says_conditional_and_lists_classes(client):
    info = client.post("/info").json()
    assert info["conditional"] is True and info["classes"] == list(CLASSES)


def test_labels_as_indices_names_or_counts_give_those_classes(client, model):
    sampler = OnnxSampler(model, threads=1)
    want = sampler.sample(4, seed=3, labels=[7, 8, 7, 0])
    by_index = npy(client.post("/sample", json={"n": 4, "seed": 3, "format": "npy", "labels": [7, 8, 7, 0]}))
    by_name = npy(client.post("/sample", json={"n": 4, "seed": 3, "format": "npy",
                                               "labels": ["Sneaker", "Bag", 7, "T-shirt/top"]}))
    assert np.array_equal(by_index, want) and np.array_equal(by_name, want)
    counts = npy(client.post("/sample", json={"n": 3, "seed": 3, "format": "npy", "labels": {"Sneaker": 2, "Bag": 1}}))
    assert np.array_equal(counts, sampler.sample(3, seed=3, labels=[7, 7, 8]))
    default = npy(client.post("/sample", json={"n": 4, "seed": 3, "format": "npy"}))
    assert np.array_equal(default, sampler.sample(4, seed=3, labels=[0, 1, 2, 3]))   # classes in turn
    assert not np.array_equal(default, want)
    assert np.array_equal(sampler.sample(4, seed=3, labels=np.array([7, 8, 7, 0])), want)   # numpy ints too
    png = client.post("/sample", json={"n": 2, "seed": 1, "labels": ["Bag", "Bag"]})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


@pytest.mark.parametrize("body, words", [
    ({"n": 2, "labels": ["Sneakers", "Bag"]}, "unknown class 'Sneakers'; classes are 'T-shirt/top', 'Trouser'"),
    ({"n": 2, "labels": [3, 10]}, "outside 0..9"),
    ({"n": 2, "labels": [-1, 0]}, "outside 0..9"),
    ({"n": 3, "labels": [1, 2]}, "send n=2"),
    ({"n": 2, "labels": {"Bag": 3}}, "send n=3"),
    ({"n": 2, "labels": {"Bag": -1, "Coat": 3}}, "must be an integer >= 0"),
    ({"n": 2, "labels": {"Shoe": 2}}, "unknown class 'Shoe'"),
    ({"n": 2, "labels": [0, 1], "target": "uniform"}, "labels or target, not both"),
])
def test_bad_labels_are_400_with_a_readable_message(client, body, words):
    r = client.post("/sample", json=body)
    assert r.status_code == 400, r.content[:300]
    assert words in r.json()["error"] and "\n" not in r.json()["error"]


@pytest.mark.parametrize("labels", [[1.5], [True], "Bag", {"Bag": 1.5}])
def test_mistyped_labels_are_400(client, labels):
    r = client.post("/sample", json={"n": 1, "labels": labels})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"][0] == "labels"


def test_unconditional_model_refuses_labels(tmp_path):
    export_ensemble(conditional_ensemble(tmp_path, "mlp", classes=None), tmp_path / "u.onnx")
    with service_client(tmp_path / "u.onnx", tmp_path / "bentoml-home") as c:
        info = c.post("/info").json()
        assert info["conditional"] is False
        r = c.post("/sample", json={"n": 2, "labels": [0, 1]})
        assert r.status_code == 400 and "not a conditional model" in r.json()["error"]
        assert r.json()["detail"][0]["loc"] == ["labels"]
        assert c.post("/sample", json={"n": 2}).status_code == 200
