"""The BentoML service over HTTP: in-process (starlette TestClient) and one real `serving serve`;
the API page (OpenAPI spec, /docs) is checked against what the service really answers.

The model is a small exported mlp ensemble of random generators (no training needed).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mustangs
from serving.export import export_ensemble
from serving.openapi import TITLE, readable_error, user_spec
from serving.sampler import OnnxSampler
from test_serving import make_ensemble
from service_client import service_client


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serving-http")
    export_ensemble(make_ensemble(folder, "mlp", weights=[0.5, 0.25, 0.25]), folder / "e.onnx")
    return folder / "e.onnx"


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    """A TestClient on the service's ASGI app (see tests/service_client.py)."""
    with service_client(model, tmp_path_factory.mktemp("bentoml-home")) as c:
        yield c


def post(c, body=None, **kw):
    return c.post("/sample", json=body, **kw)


def test_png_grid(client):
    r = post(client, {"n": 16, "seed": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (4 * 58 + 2, 4 * 58 + 2)


def test_npy_matches_sampler(client, model):
    r = post(client, {"n": 5, "seed": 7, "format": "npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert arr.shape == (5, 1, 28, 28) and arr.dtype == np.float32
    assert np.array_equal(arr, OnnxSampler(model, threads=1).sample(5, seed=7))


def test_same_seed_same_bytes_and_no_seed_is_random(client):
    a, b = post(client, {"n": 16, "seed": 1}), post(client, {"n": 16, "seed": 1})
    assert a.content == b.content
    assert post(client, {"n": 16, "seed": 2}).content != a.content
    assert post(client, {"n": 16}).content != post(client, {"n": 16}).content
    assert post(client, {"n": 4, "seed": 1, "format": "npy"}).content == \
        post(client, {"n": 4, "seed": 1, "format": "npy"}).content


def test_defaults(client):
    r = post(client, {})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (4 * 58 + 2,) * 2  # n = 16


@pytest.mark.parametrize("body, field", [
    ({"n": 0}, "n"),
    ({"n": 100000}, "n"),
    ({"n": -3}, "n"),
    ({"n": "16"}, "n"),
    ({"n": 2.5}, "n"),
    ({"n": True}, "n"),
    ({"n": None}, "n"),
    ({"seed": -1}, "seed"),
    ({"seed": "abc"}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"format": "gif"}, "format"),
    ({"N": 16}, "N"),
    ([1, 2], ""),
    ("hello", ""),
])
def test_invalid_input_is_400_with_message(client, body, field):
    r = post(client, body)
    assert r.status_code == 400, r.content[:200]
    detail = r.json()["detail"]
    assert detail and detail[0]["msg"]
    assert ".".join(map(str, detail[0]["loc"])) == field
    assert post(client, {"n": 1, "seed": 0}).status_code == 200  # still serving


@pytest.mark.parametrize("raw", [b"{bad json", b'{"n": 16,}', b"\xff\xfe", b"[" * 10000])
def test_malformed_json_is_400(client, raw):
    r = client.post("/sample", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and "error" in r.json()
    assert post(client, {"n": 1}).status_code == 200


@pytest.mark.parametrize("ctype, status", [
    ("multipart/form-data", 415),                 # no boundary: BentoML's form parser would 500
    ("multipart/form-data; boundary=x", 415),
    ("text/plain", 415),
    ("application/x-www-form-urlencoded", 415),
    ("application/json; charset=utf-8", 200),
    (None, 200),                                  # no declared type: read as JSON
])
def test_content_types(client, ctype, status):
    headers = {} if ctype is None else {"content-type": ctype}
    for path in ("/sample", "/info"):
        r = client.post(path, content=b'{"n": 1}' if path == "/sample" else b"{}", headers=headers)
        assert r.status_code == status, (path, r.content[:200])
        if status != 200:
            assert "content-type" in r.json()["error"]
    assert post(client, {"n": 1}).status_code == 200


def test_info(client, model):
    r = client.post("/info")
    assert r.status_code == 200
    info = r.json()
    assert info["weights"] == pytest.approx([0.5, 0.25, 0.25])
    assert info["generator_ids"] == ["mlp-g0", "mlp-g1", "mlp-g2"]
    assert info["latent_dim"] == 16 and info["sample_shape"] == [1, 28, 28] and info["max_n"] == 1024
    assert info["model_sha256"] == OnnxSampler(model, threads=1).model_sha256


def test_bentoml_endpoints_stay_on(client):
    for path in ("/healthz", "/readyz", "/livez", "/"):
        assert client.get(path).status_code == 200, path
    spec = client.get("/docs.json").json()
    assert {"/sample", "/solve", "/info"} <= set(spec["paths"])
    schema = spec["paths"]["/sample"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    props = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]["properties"]
    assert props["n"]["maximum"] == 1024 and props["format"]["enum"] == ["png", "npy"]


# ------------------------------------------------------------------------------------------- API page
# Written for API users: title, version, descriptions, examples, and every response really sent.
@pytest.fixture(scope="module")
def spec(client):
    return client.get("/docs.json").json()


def test_info_is_ours(spec):
    info = spec["info"]
    assert info["title"] == TITLE
    assert info["version"] == mustangs.__version__
    assert "POST /sample" in info["description"] and "curl" in info["description"]
    assert "BentoML" not in info["description"] and "mustangs:dev" not in info["description"]
    assert "contact" not in info


def test_sample_operation_is_documented_for_users(spec):
    op = spec["paths"]["/sample"]["post"]
    assert op["summary"] and "seed" in op["description"] and "``" not in op["description"]
    media = op["requestBody"]["content"]["application/json"]
    examples = {k: e["value"] for k, e in media["examples"].items()}
    assert examples["draw"] == {"n": 16, "seed": 1, "format": "png"}
    assert examples["target"] == {"n": 16, "seed": 1, "target": {"Sneaker": 0.5, "Bag": 0.5}}
    assert "weights" in examples["weights"] and all(e["summary"] for e in media["examples"].values())
    schema = spec["components"]["schemas"][media["schema"]["$ref"].split("/")[-1]]
    assert schema["title"] == "SampleRequest"
    assert {"n", "seed", "format", "target", "weights", "fid_weight"} <= set(schema["properties"])
    assert all(p.get("description") for p in schema["properties"].values())
    for example in examples.values():  # every example is a valid request body
        assert set(example) <= set(schema["properties"])
    assert set(op["responses"]["200"]["content"]) == {"image/png", "application/octet-stream"}
    assert {"X-Mustangs-Weights-Source", "X-Mustangs-Estimated-TVD", "X-Mustangs-Estimated-FID"} <= set(
        op["responses"]["200"]["headers"])
    assert all(h["description"] for h in op["responses"]["200"]["headers"].values())
    assert {"400", "415", "500"} <= set(op["responses"])
    assert all(r.get("description") for r in op["responses"].values())
    assert "target" in op["description"] and "weights" in op["description"]
    assert "IODescriptor" not in str(spec)
    for ref in ("#/components/schemas/Error", "#/components/schemas/ModelInfo", "#/components/schemas/Plan"):
        assert ref.split("/")[-1] in spec["components"]["schemas"]


def test_solve_and_info_operations_are_documented_for_users(spec):
    op = spec["paths"]["/solve"]["post"]
    assert op["summary"] and "target" in op["description"] and op["operationId"] == "solve"
    media = op["requestBody"]["content"]["application/json"]
    schema = spec["components"]["schemas"][media["schema"]["$ref"].split("/")[-1]]
    assert schema["title"] == "SolveRequest" and {"target", "weights", "fid_weight"} == set(schema["properties"])
    assert {k: e["value"] for k, e in media["examples"].items()}["target"] == {"target": {"Sneaker": 0.5, "Bag": 0.5}}
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Plan")
    assert {"400", "415", "500"} <= set(op["responses"])
    info = spec["components"]["schemas"]["ModelInfo"]["properties"]
    assert {"classes", "generators", "repurpose", "default_class_histogram"} <= set(info)
    assert "/solve" in spec["info"]["description"] and "target" in spec["info"]["description"]


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_docs_page(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f"<title>{TITLE}</title>" in r.text and "swagger-ui" in r.text  # it loads ./docs.json


# Every status and content type the service really answers with is in the spec.
REQUESTS = [
    ({"json": {"n": 4, "seed": 1}}, 200),
    ({"json": {"n": 3, "format": "npy"}}, 200),
    ({"json": {}}, 200),
    ({"json": {"n": 0}}, 400),
    ({"json": {"n": 10**9}}, 400),
    ({"json": {"n": "4"}}, 400),
    ({"json": {"seed": -1}}, 400),
    ({"json": {"format": "gif"}}, 400),
    ({"json": {"nn": 4}}, 400),
    ({"content": b"{bad json", "headers": {"content-type": "application/json"}}, 400),
    ({"content": b"n=4", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415),
    ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 415),
]


# The same for re-purposing: this model has no class statistics, so targets are refused (400) but
# explicit weights work; /solve answers like /sample.
REQUESTS += [
    ({"json": {"n": 2, "seed": 1, "weights": [0, 1, 0]}}, 200),
    ({"json": {"n": 2, "target": {"Sneaker": 0.5, "Bag": 0.5}}}, 400),
    ({"json": {"n": 2, "weights": [1, 2]}}, 400),
    ({"json": {"target": "uniform", "weights": [1, 1, 1]}}, 400),
    ({"json": {"fid_weight": -1}}, 400),
    ({"json": {}, "path": "/solve"}, 200),
    ({"json": {"weights": [1, 1, 2]}, "path": "/solve"}, 200),
    ({"json": {"target": "uniform"}, "path": "/solve"}, 400),
    ({"json": {"weights": "1,2"}, "path": "/solve"}, 400),
    ({"json": {"n": 4}, "path": "/solve"}, 400),
    ({"content": b"{}", "headers": {"content-type": "text/plain"}, "path": "/solve"}, 415),
    ({"path": "/info"}, 200),
    ({"content": b"x", "headers": {"content-type": "text/plain"}, "path": "/info"}, 415),
]


@pytest.mark.parametrize("kwargs,status", REQUESTS)
def test_every_answer_is_documented(client, spec, kwargs, status):
    kwargs = dict(kwargs)
    path = kwargs.pop("path", "/sample")
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    documented = spec["paths"][path]["post"]["responses"][str(status)]
    assert r.headers["content-type"].split(";")[0] in documented["content"]
    mustangs_headers = {h.lower() for h in r.headers if h.lower().startswith("x-mustangs-")}
    assert mustangs_headers <= {h.lower() for h in documented.get("headers", {})}
    if path == "/sample" and status == 200:
        assert r.headers["x-mustangs-weights-source"] in ("default", "weights")
    if status == 200 and r.headers["content-type"] == "application/octet-stream":
        assert np.load(io.BytesIO(r.content), allow_pickle=False).shape[0] == 3
    if status >= 400:
        error = r.json()["error"]
        assert "IODescriptor" not in error and "validation error for" not in error
        if status == 400 and "json" in kwargs and kwargs["json"]:
            field = next(k for k in kwargs["json"] if k not in ("n", "seed") or len(kwargs["json"]) == 1)
            assert field in error or field in str(r.json()["detail"])


def test_readable_error_names_every_field():
    body = {"error": "2 validation errors for SampleRequestIODescriptor",
            "detail": [{"loc": ["n"], "msg": "Input should be greater than or equal to 1"},
                       {"loc": [], "msg": "Invalid JSON"}]}
    assert readable_error(body)["error"] == ("invalid request: n: Input should be greater than or equal to 1; "
                                             "body: Invalid JSON")
    assert readable_error({"error": "x"}) == {"error": "x"}
    ours = {"error": "unknown class 'Sneakers' in the target", "detail": [{"loc": ["target"], "msg": "unknown class"}]}
    assert readable_error(ours) == ours  # the service's own 400s already say what to fix


def test_user_spec_keeps_what_it_does_not_know():
    """A spec without our routes (another service version) passes through with only the info replaced."""
    out = user_spec({"openapi": "3.0.2", "info": {"title": "x"}, "paths": {"/other": {"get": {}}}}, max_n=8)
    assert out["paths"] == {"/other": {"get": {}}} and out["info"]["title"] == TITLE


# ------------------------------------------------------------------------------------------- real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(port: int, path: str, body: bytes | None = None, method: str = "POST", timeout: float = 30):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("content-type"), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type"), exc.read()


@pytest.mark.slow
def test_real_bentoml_serve_subprocess(model, tmp_path):
    """`serving serve e.onnx --port P --max-n 32` (bentoml serve underneath), called over HTTP, then SIGTERM."""
    port = _free_port()
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "MUSTANGS_ORT_THREADS": "1"}
    env.pop("MUSTANGS_MODEL", None)
    cmd = [sys.executable, "-c", "import sys; from serving.cli import main; sys.exit(main())",
           "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--max-n", "32"]
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if _http(port, "/readyz", method="GET", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.5)

        body = json.dumps({"n": 16, "seed": 1}).encode()
        status, ctype, png = _http(port, "/sample", body)
        assert status == 200 and ctype == "image/png"
        assert Image.open(io.BytesIO(png)).size == (4 * 58 + 2,) * 2
        assert _http(port, "/sample", body)[2] == png  # same seed, same bytes
        assert _http(port, "/sample", b'{"n": 32}')[0] == 200
        for bad in (b'{"n": 0}', b'{"n": 33}', b'{"n": 100000}', b"{bad json"):
            status, _, text = _http(port, "/sample", bad)
            assert status == 400 and b"error" in text
        assert _http(port, "/sample", b'{"n": 2, "format": "npy"}')[0] == 200  # still serving
        assert json.loads(_http(port, "/info")[2])["generator_ids"] == ["mlp-g0", "mlp-g1", "mlp-g2"]
        assert _http(port, "/docs.json", method="GET")[0] == 200

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only the process group this test started
            proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_serving_build_packs_the_model(model, tmp_path):
    """`serving build` stores the model and builds a Bento (offline, no lock step) that references it."""
    import hashlib

    import yaml

    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("MUSTANGS_MODEL", None)
    proc = subprocess.run([sys.executable, "-c", "import sys; from serving.cli import main; sys.exit(main())",
                           "build", str(model), "--version", "test1"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mustangs:test1" in proc.stdout and "bentoml containerize" in proc.stdout
    bento = home / "bentos" / "mustangs" / "test1"
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    tags = [m["tag"] for svc in manifest["services"] for m in svc["models"]]
    assert len(tags) == 1 and tags[0].startswith("mustangs-ensemble:")
    stored = home / "models" / "mustangs-ensemble" / tags[0].split(":")[1] / "ensemble.onnx"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(model.read_bytes()).digest()
    assert (bento / "src" / "serving" / "service.py").is_file()
    assert not (bento / "src" / "serving" / "export.py").exists()  # the runtime needs no torch
    reqs = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in reqs and "torch" not in reqs
