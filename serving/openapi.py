"""What an API user reads: the OpenAPI page (``/``, ``/docs``, spec at ``/docs.json``) and error bodies.

BentoML generates the spec from the service's signatures: its title is the service name, its
version "None" outside a Bento, its description BentoML's own README, each operation's text the
developer docstring, and only one response type per API. :func:`user_spec` keeps BentoML's
schemas (so they follow the code) and replaces the rest with text written for API users: a
title, the package's version, a description with ``curl`` examples, request examples (a plain
draw, a class ``target``, explicit ``weights``), the ``X-Mustangs-*`` response headers, and every
response the service really sends (PNG, ``.npy``, JSON, 400, 415, 500) on ``/sample``, ``/solve``
and ``/info``.

:class:`ApiPage` is an ASGI middleware that serves that spec at ``/docs.json``, makes ``/docs``
show the same Swagger page as ``/`` (with our title, without BentoML's Google Tag Manager script and
with Swagger UI's validator badge off, so the page loads nothing from the internet), and rewrites BentoML's 400 body, whose
``error`` names an internal class ("1 validation error for SampleRequestIODescriptor"), into a
sentence that names the offending fields (the service's own 400s for targets and weights
already say what to fix and pass through unchanged). Plain numpy-free Python: it runs inside the Bento.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Callable

from mustangs import __version__

TITLE = "Mustangs ensemble sampler"
PNG, NPY, JSON = "image/png", "application/octet-stream", "application/json"

DESCRIPTION = """\
Samples from a GAN ensemble trained with Mustangs (spatial coevolution of generators, mixture
weights chosen by the ensembler) and exported to one ONNX graph.

* `POST /sample` draws `n` samples (1..{max_n}) and returns a PNG grid (`image/png`) or the raw
  float32 array in `.npy` format (`application/octet-stream`, values in [-1, 1]). Each sample
  first picks a generator with the mixture weights, then a latent vector; the same `seed` always
  gives the same bytes.
* Re-aiming per request (models exported with class statistics): `target` is a class
  distribution such as `{{"Sneaker": 0.5, "Bag": 0.5}}`; the service solves the mixture weights
  that come closest to it (cached) and says how close in the `X-Mustangs-Estimated-TVD` header.
  `weights` sets the mixture weights explicitly, one per generator.
* `POST /solve` returns the weights a `target` (or `weights`) would draw with and the estimated
  TVD / FID, as JSON, without drawing.
* `POST /info` describes the model: mixture weights, generator ids, latent size, sample shape,
  hashes, the largest `n`, and (with class statistics) the classes and each generator's class
  histogram.

```
curl -s -X POST http://HOST:PORT/sample -H 'content-type: application/json' \\
     -d '{{"n": 16, "seed": 1}}' -o samples.png
curl -s -X POST http://HOST:PORT/sample -H 'content-type: application/json' \\
     -d '{{"n": 16, "seed": 1, "target": {{"Sneaker": 0.5, "Bag": 0.5}}}}' -o mix.png -D -
curl -s -X POST http://HOST:PORT/solve -H 'content-type: application/json' \\
     -d '{{"target": {{"Sneaker": 0.5, "Bag": 0.5}}}}'
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

Which mixture weights draw the samples:

* neither `target` nor `weights`: the model's own (default) weights;
* `target`: a class distribution (`{"Sneaker": 0.5, "Bag": 0.5}`, class indices as keys, a list of
  one weight per class, `"Sneaker:0.5,Bag:0.5"`, `"uniform"` or `"real"`; the classes are in
  `POST /info`); the weights that come closest in total variation distance are solved and cached.
  With `fid_weight` λ > 0 they minimise tvd + λ·fid instead. A target the generators cannot reach is
  served at its best; the `X-Mustangs-Estimated-TVD` header says how close it gets;
* `weights`: explicit mixture weights, one per generator (`generator_ids` in `POST /info`), ≥ 0
  with a positive sum (normalised).

`target` and `weights` together, an unknown class, a wrong length, a negative value or a model
without class statistics (for `target`) get a 400 that names the problem.

The same `seed` (and `target` or `weights`) gives the same bytes; without one every call is a fresh
random draw."""

SOLVE_DESCRIPTION = """\
The mixture weights `POST /sample` would draw with for this `target` (or `weights`, or neither: the
model's defaults), and how close they are estimated to get, as JSON; nothing is drawn. Useful with
`format: "npy"`, where the response has no room for the plan, and for planning. Fields and errors are
those of `POST /sample`."""

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
_PLAN_SCHEMA = {
    "type": "object", "title": "Plan", "required": ["source", "weights"], "additionalProperties": True,
    "properties": {
        "source": {"type": "string", "enum": ["default", "weights", "target"],
                   "description": "where the weights come from: the model's defaults, the request's weights, or "
                                  "solved for the request's target"},
        "weights": {"type": "array", "items": {"type": "number"}, "description": "mixture weights (sum 1)"},
        "generator_ids": {"type": "array", "items": {"type": "string"}, "description": "one id per weight"},
        "target": {"type": "object", "additionalProperties": {"type": "number"},
                   "description": "the normalised target, by class name (with a target)"},
        "estimated_tvd": {"type": "number", "nullable": True,
                          "description": "estimated total variation distance between the mixture's class "
                                         "histogram and the target (with a target)"},
        "estimated_fid": {"type": "number", "nullable": True,
                          "description": "estimated Fréchet distance to the real data in the classifier's "
                                         "feature space (with a target, when the model carries real statistics)"},
        "fid_weight": {"type": "number", "description": "λ of the solved tvd + λ·fid"},
        "cached": {"type": "boolean", "description": "the solution came from the cache"},
        "solve_ms": {"type": "number", "description": "milliseconds the solve took"},
        "estimated_class_histogram": {"type": "object", "additionalProperties": {"type": "number"},
                                      "description": "the mixture's class histogram, by class name (models "
                                                     "with class statistics)"},
    },
}
_HEADERS = {
    "X-Mustangs-Weights-Source": {
        "description": "where the mixture weights came from: default, weights or target",
        "schema": {"type": "string", "enum": ["default", "weights", "target"]}},
    "X-Mustangs-Estimated-TVD": {
        "description": "the estimated total variation distance between the draw's class histogram and the "
                       "target (0 = exact): the request's target, or for a plain request (or explicit weights) "
                       "the ensemble's own target (uniform unless it was optimised for another); models "
                       "exported with class statistics",
        "schema": {"type": "string", "example": "0.012500"}},
    "X-Mustangs-Estimated-FID": {
        "description": "on every response from a model that carries the real data's statistics (exported "
                       "with the test split readable): the estimated Fréchet distance of the mixture that drew "
                       "the samples to the real data, in the classifier's feature space",
        "schema": {"type": "string", "example": "12.3456"}},
    "Content-Disposition": {
        "description": "format npy: attachment; filename=\"samples.npy\"",
        "schema": {"type": "string"}},
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
        "source": {"type": "string", "description": "what the model was exported from (ensemble, pool, front)"},
        "served_scores": {"type": "object", "description": "scores of samples drawn from this graph, when "
                                                           "export measured them"},
        "repurpose": {"type": "boolean", "description": "the model carries class statistics: target works"},
        "classes": {"type": "array", "items": {"type": "string"}, "nullable": True,
                    "description": "class names a target (and, conditional models, labels) may use (null without "
                                   "class statistics on an unconditional model)"},
        "conditional": {"type": "boolean", "description": "the generators are class-conditional: POST /sample "
                                                          "takes labels"},
        "classifier": {"type": "object", "description": "the classifier the class statistics were measured on"},
        "statistics": {"type": "object", "description": "samples per generator, seed, whether real statistics "
                                                        "are there (fid_weight and target 'real' need them)"},
        "generators": {"type": "array", "description": "per generator: id, default weight and class histogram",
                       "items": {"type": "object"}},
        "default_class_histogram": {"type": "object", "additionalProperties": {"type": "number"},
                                    "description": "the class histogram of the default mixture"},
    },
}
_SAMPLE_EXAMPLES = {
    "draw": {"summary": "16 samples as a PNG grid, reproducible",
             "value": {"n": 16, "seed": 1, "format": "png"}},
    "target": {"summary": "re-aimed at half sneakers, half bags (Fashion-MNIST class names; see POST /info)",
               "value": {"n": 16, "seed": 1, "target": {"Sneaker": 0.5, "Bag": 0.5}}},
    "uniform": {"summary": "every class equally often, as a .npy array",
                "value": {"n": 64, "seed": 2, "format": "npy", "target": "uniform"}},
    "weights": {"summary": "explicit weights for a model of three generators",
                "value": {"n": 16, "seed": 1, "weights": [0.5, 0.5, 0]}},
    "labels": {"summary": "conditional models: 8 sneakers then 8 bags",
               "value": {"n": 16, "seed": 1, "labels": {"Sneaker": 8, "Bag": 8}}},
}
_SOLVE_EXAMPLES = {
    "target": {"summary": "the weights for half sneakers, half bags",
               "value": {"target": {"Sneaker": 0.5, "Bag": 0.5}}},
    "fid": {"summary": "a uniform class mix, also close to the real data (tvd + 0.01·fid)",
            "value": {"target": "uniform", "fid_weight": 0.01}},
    "default": {"summary": "the model's default weights", "value": {}},
}


def _error(description: str, example: str, more: dict | None = None) -> dict:
    """A documented error response with an example body; ``more`` (name → (summary, body)) adds named ones."""
    media: dict = {"schema": {"$ref": "#/components/schemas/Error"}}
    if more:
        media["examples"] = {"error": {"summary": "the usual body", "value": {"error": example}},
                             **{name: {"summary": summary, "value": value} for name, (summary, value) in more.items()}}
    else:
        media["example"] = {"error": example}
    return {"description": description, "content": {JSON: media}}


def _request(op: dict, schemas: dict, name: str, examples: dict) -> None:
    """An optional JSON body that refers to the ``name`` component, with named examples."""
    body = op.setdefault("requestBody", {"content": {JSON: {}}})
    body["required"] = False
    media = body.setdefault("content", {}).setdefault(JSON, {})
    if name in schemas:  # the component says what the inline copy loses: seed may be null
        media["schema"] = {"$ref": f"#/components/schemas/{name}"}
    media.pop("example", None)
    media["examples"] = examples


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
    target_error = {"error": "unknown class 'Sneakers' in the target; classes are 'T-shirt/top', ...",
                    "detail": [{"loc": ["target"], "msg": "unknown class 'Sneakers' in the target; classes are "
                                                          "'T-shirt/top', ...", "type": "value_error"}]}
    errors = {
        "400": _error("The body is not valid JSON, or a field is out of range, of the wrong type or unknown; or "
                      "the target or weights cannot be used (unknown class, wrong length, negative values, "
                      "both given, a model without class statistics). `detail` says where.",
                      f"invalid request: n: Input should be less than or equal to {max_n}",
                      {"target": ("a target that names an unknown class", target_error)}),
        "415": _error("The body was sent with a content type other than application/json.",
                      "unsupported content-type 'text/plain': send a JSON body with content-type "
                      "application/json"),
        "500": _error("The service failed (a bug: please report it with the request).", "internal server error"),
    }
    schemas["Plan"] = _PLAN_SCHEMA
    paths = spec.get("paths", {})
    if "/sample" in paths:
        op = paths["/sample"]["post"]
        op.update(summary="Draw samples (PNG grid or .npy array), optionally re-aimed at a class target",
                  description=SAMPLE_DESCRIPTION, tags=["Sampling"], operationId="sample")
        _request(op, schemas, "SampleRequest", _SAMPLE_EXAMPLES)
        op["responses"] = {
            "200": {"description": "The samples: a PNG grid (format png) or a .npy array (format npy). The headers "
                                   "say which weights drew them and, for a target, how close they get.",
                    "headers": copy.deepcopy(_HEADERS),
                    "content": {PNG: {"schema": {"type": "string", "format": "binary"}},
                                NPY: {"schema": {"type": "string", "format": "binary",
                                                 "description": "NumPy .npy file, float32 [n, C, H, W] in "
                                                                "[-1, 1]"}}}},
            **errors}
    if "/solve" in paths:
        op = paths["/solve"]["post"]
        op.update(summary="The mixture weights for a target, without drawing", description=SOLVE_DESCRIPTION,
                  tags=["Sampling"], operationId="solve")
        _request(op, schemas, "SolveRequest", _SOLVE_EXAMPLES)
        op["responses"] = {"200": {"description": "The plan: weights, their source and the estimates.",
                                   "content": {JSON: {"schema": {"$ref": "#/components/schemas/Plan"}}}},
                           **copy.deepcopy(errors)}
    if "/info" in paths:
        op = paths["/info"]["post"]
        op.update(summary="Describe the model", description=INFO_DESCRIPTION, tags=["Sampling"],
                  operationId="info")
        op.get("requestBody", {})["required"] = False
        op["responses"] = {"200": {"description": "The model's metadata.",
                                   "content": {JSON: {"schema": {"$ref": "#/components/schemas/ModelInfo"}}}},
                           **copy.deepcopy(errors)}
    used = json.dumps(paths)
    for name in [k for k in schemas if f"#/components/schemas/{k}\"" not in used]:
        del schemas[name]  # BentoML's unused ones: task status, its own error bodies, the inline /info input
    return spec


def readable_error(body: dict) -> dict:
    """A 400 body from BentoML with an ``error`` a user can act on, built from pydantic's ``detail``.

    Only BentoML's validation bodies (``error`` "N validation error for SomethingIODescriptor") are
    rewritten; the service's own 400s (targets, weights) already say what to fix and stay as they are.
    """
    detail, error = body.get("detail"), body.get("error")
    if not isinstance(detail, list) or not detail or not isinstance(error, str) or " validation error" not in error:
        return body
    problems = []
    for d in detail:
        if not isinstance(d, dict):
            continue
        loc = ".".join(str(p) for p in d.get("loc") or []) or "body"
        msg = d.get('msg', 'invalid')
        if loc == "n" and d.get("type") == "less_than_equal":
            msg += " (this server's limit; start it with serving serve --max-n N to allow more)"
        problems.append(f"{loc}: {msg}")
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

    def __init__(self, app, spec: Callable[[], dict], max_n: int,
                 api_paths: tuple[str, ...] = ("/sample", "/solve", "/info")):
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
        elif path == "/static_content/swagger-initializer.js" and method == "GET":
            await _send_bytes(send, 200, SWAGGER_INITIALIZER, "application/javascript")
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


# BentoML's page embeds a Google Tag Manager script (even with BENTOML_DO_NOT_TRACK=true); a model served
# inside a closed network must not call out, so the page is served without it.
_TRACKERS = (re.compile(rb"<!--\s*Google Tag Manager.*?End Google Tag Manager[^>]*-->", re.S),
             re.compile(rb"<script[^>]*>[^<]*googletagmanager[^<]*</script>", re.S | re.I),
             re.compile(rb"<noscript>\s*<iframe[^>]*googletagmanager.*?</noscript>", re.S | re.I))

# Swagger UI's initializer, with the spec validator off: its default badge fetches validator.swagger.io.
SWAGGER_INITIALIZER = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "./docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
"""


def offline_page(body: bytes) -> bytes:
    """BentoML's Swagger page with our title and without its Google Tag Manager script and iframe."""
    for pattern in _TRACKERS:
        body = pattern.sub(b"", body)
    return body.replace(b"<title>BentoML Prediction Service</title>", f"<title>{TITLE}</title>".encode())


def _retitle(headers: dict, body: bytes) -> bytes:
    if not headers.get(b"content-type", b"").startswith(b"text/html"):
        return body
    return offline_page(body)


def _readable_400(headers: dict, body: bytes) -> bytes:
    if not headers.get(b"content-type", b"").startswith(JSON.encode()):
        return body
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return json.dumps(readable_error(parsed)).encode() if isinstance(parsed, dict) else body
