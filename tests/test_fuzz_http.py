"""The HTTP surface, fuzzed in CI: hypothesis drives /sample, /solve and /info through starlette's
TestClient with bodies shaped like the OpenAPI schema (right and wrong types, NaN, huge numbers,
unknown keys, class names twice). Every answer is a 2xx or a 4xx with a message — never a 5xx.

schemathesis (benchmarks/bench_serving.py, the ``bench`` extra) is not installable offline here,
so the same idea runs on hypothesis directly against the ASGI app; fixed seed via the ci profile.
"""

from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from test_serving_http import client, model  # noqa: E402,F401  (fixtures)

NUMBER = st.one_of(st.integers(-5, 2**66), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                   st.none(), st.text(max_size=4))
TARGET = st.one_of(
    st.sampled_from(["uniform", "real", "0:0.5,0:0.5", "Sneaker:0.2,Sneaker:0.8,Bag:0.8", "", "7", "c0:1"]),
    st.text(alphabet="0123456789:,.e-abc", max_size=20),
    st.dictionaries(st.sampled_from(["0", "1", "2", "x", "c0", "C0", "-1", "99"]), NUMBER, max_size=3),
    st.lists(NUMBER, max_size=4), NUMBER)
LABEL = st.one_of(st.integers(-3, 12), st.sampled_from(["T-shirt/top", "Trouser", "Bag", "bag", "Nope", ""]), NUMBER)
LABELS = st.one_of(
    st.lists(LABEL, max_size=6),
    st.dictionaries(st.sampled_from(["Trouser", "Bag", "0", "Nope", "-1"]), NUMBER, max_size=3),
    st.text(max_size=12), NUMBER)
BODY = st.fixed_dictionaries({}, optional={
    "n": NUMBER, "seed": NUMBER, "format": st.sampled_from(["png", "npy", "gif", 3]), "target": TARGET,
    "weights": st.lists(NUMBER, max_size=4), "fid_weight": NUMBER, "labels": LABELS, "typo": NUMBER})


def _check(resp) -> None:
    assert resp.status_code < 500, resp.text[:400]
    if resp.status_code >= 400:
        assert resp.status_code in (400, 404, 413, 422), resp.status_code
        assert resp.text.strip(), "a refusal needs a message"


@given(BODY)
def test_sample(client, body):  # noqa: F811
    if isinstance(body.get("n"), int) and not isinstance(body["n"], bool) and body["n"] > 64:
        body["n"] = 64  # keep the valid draws small; the bound itself is tested in test_serving_http
    _check(client.post("/sample", content=json.dumps(body, allow_nan=True),
                       headers={"content-type": "application/json"}))


@pytest.fixture(scope="module")
def conditional_client(tmp_path_factory):
    """The service on a small conditional model (issue 21): ``labels`` is a live field there."""
    from serving.export import export_ensemble
    from service_client import service_client
    from test_conditional import conditional_ensemble

    folder = tmp_path_factory.mktemp("fuzz-cond")
    export_ensemble(conditional_ensemble(folder, "mlp"), folder / "c.onnx")
    with service_client(folder / "c.onnx", tmp_path_factory.mktemp("bentoml-home")) as c:
        yield c


@given(BODY)
def test_sample_conditional(conditional_client, body):
    if isinstance(body.get("n"), int) and not isinstance(body["n"], bool) and body["n"] > 64:
        body["n"] = 64
    _check(conditional_client.post("/sample", content=json.dumps(body, allow_nan=True),
                                   headers={"content-type": "application/json"}))


@given(BODY)
def test_solve(client, body):  # noqa: F811
    body.pop("n", None), body.pop("seed", None), body.pop("format", None)
    _check(client.post("/solve", content=json.dumps(body, allow_nan=True),
                       headers={"content-type": "application/json"}))


@given(st.one_of(st.just({}), st.dictionaries(st.text(max_size=5), NUMBER, max_size=2)))
def test_info(client, body):  # noqa: F811
    _check(client.post("/info", content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}))


def test_nan_fid_weight_gets_the_right_reason(client):  # noqa: F811
    resp = client.post("/solve", content='{"target": "uniform", "fid_weight": NaN}',
                       headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "finite" in resp.text and "1000000" not in resp.text, resp.text


def test_a_class_named_twice_is_refused_in_every_form():
    """What /sample and /solve call with the body's target (this module's model has no class statistics)."""
    from mustangs.errors import UserError
    from serving.repurpose import resolve_target

    names = ["Sneaker", "Bag", "Coat"]
    for target in ("0:0.5,0:0.5", "Sneaker:0.2,Sneaker:0.8,Bag:0.8", "Sneaker,Sneaker", {"0": 0.5, "Sneaker": 0.5},
                   {"Sneaker": 0.5, "sneaker": 0.5}):
        with pytest.raises(UserError, match="twice"):
            resolve_target(target, names)
