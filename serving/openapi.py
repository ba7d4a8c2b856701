"""What an API user reads: the OpenAPI page (``/``, ``/docs``, spec at ``/docs.json``) and error bodies.

BentoML generates the spec from the service's signatures: its title is the service name, its
version "None" outside a Bento, its description BentoML's own README, each operation's text the
developer docstring, and only one response type per API. :func:`user_spec` keeps BentoML's
schemas (so they follow the code) and replaces the rest with text written for API users: a
title, the package's version, a description with a ``curl`` example, request examples, and
every response the service really sends (PNG, ``.npy``, 400, 415, 500).

:class:`ApiPage` is an ASGI middleware that serves that spec at ``/docs.json``, makes ``/docs``
show the same Swagger page as ``/`` (with our title), and rewrites BentoML's 400 body, whose
``error`` names an internal class ("1 validation error for SampleRequestIODescriptor"), into a
sentence that names the offending fields. Plain numpy-free Python: it runs inside the Bento.
"""

from __future__ import annotations

import copy
import json
from typing import Callable

from trainer import __version__

TITLE = "Mustangs ensemble sampler"
PNG, NPY, JSON = "image/png", "application/octet-stream", "application/json"

DESCRIPTION = """\
Samples from a GAN ensemble trained with Mustangs (spatial coevolution of generators, mixture
weights chosen by the ensembler) and exported to one ONNX graph.

* `POST /sample` draws `n` samples (1..{max_n}) and returns a PNG grid (`image/png`) or the raw
  float32 array in `.npy` format (`application/octet-stream`, values in [-1, 1]). Each sample
  first picks a generator with the mixture weights, then a latent vector; the same `seed` always
  gives the same bytes.
* `POST /info` describes the model: mixture weights, generator ids, latent size, sample shape,
  hashes and the largest `n`.

```
curl -s -X POST http://HOST:PORT/sample -H 'content-type: application/json' \\
     -d '{{"n": 16, "seed": 1}}' -o samples.png
```

A bad request gets a 400 (or 415 for a body that is not JSON) whose `error` says what to fix.
Health: `/healthz`, `/livez`, `/readyz`; Prometheus metrics at `/metrics`.
"""

SAMPLE_DESCRIPTION = """\
Draw `n` samples from the ensemble. Send a JSON body; every field is optional, unknown fields are
refused.

* `format: "png"` (default): one PNG image, a square grid of the samples (2-D point data is drawn
  as a scatter plot).
* `format: "npy"`: a NumPy `.npy` file (float32, shape `[n, C, H, W]`, or `[n, 2]` for point data,
  values in [-1, 1]); read it with `numpy.load(f)` (no pickle).

The same `seed` gives the same bytes; without one every call is a fresh random draw."""

INFO_DESCRIPTION = ("The model behind the service: mixture weights, generator ids, latent size, sample shape, "
                    "the ensemble's and the model's sha256, the onnxruntime providers and the largest `n` one "
                    "request may ask for. Send an empty body or `{}`.")

_ERROR_SCHEMA = {
    "type": "object", "title": "Error", "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong and how to fix it"},
        "detail": {"type": "array", "description": "one entry per problem: where (`loc`) and what (`msg`)",
                   "items": {"type": "object", "properties": {
                       "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                       "msg": {"type": "string"}, "type": {"type": "string"}}}},
    },
}
_INFO_SCHEMA = {
    "type": "object", "title": "ModelInfo", "additionalProperties": True,
    "properties": {
        "format": {"type": "string", "description": "model format tag, mustangs-onnx/1"},
        "arch": {"type": "string", "description": "generator architecture"},
        "latent_dim": {"type": "integer", "description": "length of a latent vector"},
        "sample_shape": {"type": "array", "items": {"type": "integer"}, "description": "shape of one sample"},
        "weights": {"type": "array", "items": {"type": "number"}, "description": "mixture weights (sum 1)"},
        "generator_ids": {"type": "array", "items": {"type": "string"}, "description": "one id per weight"},
        "ensemble_sha256": {"type": "string", "description": "sha256 of the ensemble.json it was exported from"},
        "ensemble": {"type": "object", "description": "the ensemble's objective, metrics and origin"},
        "providers": {"type": "array", "items": {"type": "string"}, "description": "onnxruntime providers"},
        "model_sha256": {"type": "string", "description": "sha256 of the .onnx file"},
        "max_n": {"type": "integer", "description": "largest n one request may ask for"},
    },
}


def _error(description: str, example: str) -> dict:
    return {"description": description,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"},
                               "example": {"error": example}}}}


def user_spec(spec: dict, max_n: int) -> dict:
    """BentoML's generated spec (``Service.openapi_spec.asdict()``) rewritten for API users (a copy)."""
    spec = copy.deepcopy(spec)
    spec["info"] = {"title": TITLE, "version": __version__, "description": DESCRIPTION.format(max_n=max_n)}
    spec["tags"] = [{"name": "Sampling", "description": "Samples and model information."},
                    *[t for t in spec.get("tags", []) if t.get("name") == "Infrastructure"]]
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in [k for k in schemas if k.endswith("IODescriptor")]:  # BentoML's subclass of our request model
        new = name[: -len("IODescriptor")]
        schemas[new] = {**schemas.pop(name), "title": new}
    schemas["Error"] = _ERROR_SCHEMA
    schemas["ModelInfo"] = _INFO_SCHEMA
    errors = {
        "400": _error("The body is not valid JSON, or a field is out of range, of the wrong type or unknown.",
                      f"invalid request: n: Input should be less than or equal to {max_n}"),
        "415": _error("The body was sent with a content type other than application/json.",
                      "unsupported content-type 'text/plain': send a JSON body with content-type "
                      "application/json"),
        "500": _error("The service failed (a bug: please report it with the request).", "internal server error"),
    }
    paths = spec.get("paths", {})
    if "/sample" in paths:
        op = paths["/sample"]["post"]
        op.update(summary="Draw samples (PNG grid or .npy array)", description=SAMPLE_DESCRIPTION,
                  tags=["Sampling"], operationId="sample")
        body = op["requestBody"]
        body["required"] = False
        media = body["content"][JSON]
        if "SampleRequest" in schemas:  # the component says what the inline copy loses: seed may be null
            media["schema"] = {"$ref": "#/components/schemas/SampleRequest"}
        media["example"] = {"n": 16, "seed": 1, "format": "png"}
        op["responses"] = {
            "200": {"description": "The samples: a PNG grid (format png) or a .npy array (format npy).",
                    "content": {PNG: {"schema": {"type": "string", "format": "binary"}},
                                NPY: {"schema": {"type": "string", "format": "binary",
                                                 "description": "NumPy .npy file, float32 [n, C, H, W] in "
                                                                "[-1, 1]"}}}},
            **errors}
    if "/info" in paths:
        op = paths["/info"]["post"]
        op.update(summary="Describe the model", description=INFO_DESCRIPTION, tags=["Sampling"],
                  operationId="info")
        op.get("requestBody", {})["required"] = False
        op["responses"] = {"200": {"description": "The model's metadata.",
                                   "content": {JSON: {"schema": {"$ref": "#/components/schemas/ModelInfo"}}}},
                           **errors}
    used = json.dumps(paths)
    for name in [k for k in schemas if f"#/components/schemas/{k}\"" not in used]:
        del schemas[name]  # BentoML's unused ones: task status, its own error bodies, the inline /info input
    return spec


def readable_error(body: dict) -> dict:
    """A 400 body from BentoML with an ``error`` a user can act on, built from pydantic's ``detail``."""
    detail = body.get("detail")
    if not isinstance(detail, list) or not detail:
        return body
    problems = []
    for d in detail:
        if not isinstance(d, dict):
            continue
        loc = ".".join(str(p) for p in d.get("loc") or []) or "body"
        problems.append(f"{loc}: {d.get('msg', 'invalid')}")
    return {**body, "error": "invalid request: " + "; ".join(problems)} if problems else body


class ApiPage:
    """ASGI middleware: the user-facing spec at ``/docs.json``, the Swagger page at ``/`` and
    ``/docs`` (titled :data:`TITLE`), and readable 400 bodies on ``api_paths``.

    Args:
        app: the wrapped ASGI app (BentoML's).
        spec: returns BentoML's spec as a dict (called once, on the first ``/docs.json``).
        max_n: the largest ``n``, for the description and examples.
        api_paths: the service's API routes, whose 400 bodies are rewritten.
    """

    def __init__(self, app, spec: Callable[[], dict], max_n: int, api_paths: tuple[str, ...] = ("/sample", "/info")):
        self.app, self._spec_source, self.max_n, self.api_paths = app, spec, max_n, api_paths
        self._spec: bytes | None = None

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path"), scope.get("method")
        if path == "/docs.json" and method == "GET":
            if self._spec is None:
                self._spec = json.dumps(user_spec(self._spec_source(), self.max_n)).encode()
            await _send_bytes(send, 200, self._spec, JSON)
        elif path in ("/", "/docs") and method == "GET":
            await self._rewritten(dict(scope, path="/", raw_path=b"/"), receive, send, 200, _retitle)
        elif path in self.api_paths:
            await self._rewritten(scope, receive, send, 400, _readable_400)
        else:
            await self.app(scope, receive, send)

    async def _rewritten(self, scope, receive, send, status: int, rewrite) -> None:
        """Run the app; a response with ``status`` is held and sent as ``rewrite(headers, body)``,
        any other passes through untouched (a PNG is never buffered twice)."""
        start: dict = {}
        chunks: list[bytes] = []

        async def hold(message):
            if message["type"] == "http.response.start":
                start.update(message)
                if message["status"] != status:
                    await send(message)
            elif start.get("status") != status:
                await send(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                    body = rewrite(dict(headers), b"".join(chunks))
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, hold)


async def _send_bytes(send, status: int, body: bytes, media: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _retitle(headers: dict, body: bytes) -> bytes:
    if not headers.get(b"content-type", b"").startswith(b"text/html"):
        return body
    return body.replace(b"<title>BentoML Prediction Service</title>", f"<title>{TITLE}</title>".encode())


def _readable_400(headers: dict, body: bytes) -> bytes:
    if not headers.get(b"content-type", b"").startswith(JSON.encode()):
        return body
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return json.dumps(readable_error(parsed)).encode() if isinstance(parsed, dict) else body
