"""The BentoML service: ``POST /sample`` and ``POST /info`` over an exported ensemble.

Run it with ``serving serve ensemble.onnx`` (which sets the variables below and starts
``bentoml serve serving.service:MustangsSampler``). Environment:

- ``MUSTANGS_MODEL``: path of the ``.onnx`` file. When unset, the service uses the model
  ``mustangs-ensemble:latest`` from the BentoML model store (``serving build`` puts it there
  and into the Bento, so a built Bento or container needs no variable).
- ``MUSTANGS_MAX_N``: the largest ``n`` one request may ask for (default 1024), read at import.
- ``MUSTANGS_ORT_THREADS``: onnxruntime intra-op threads per worker (default: onnxruntime's).

Re-purposing per request (models exported with class statistics): ``POST /sample`` takes a
``target`` class distribution (solved into mixture weights with the ensembler's exact TVD
objective, cached per target; the estimate comes back in ``X-Mustangs-Estimated-TVD``) or explicit
``weights``; ``POST /solve`` returns the same plan as JSON (weights, estimated TVD/FID).

BentoML's own ``/livez``, ``/readyz``, ``/healthz`` and ``/metrics`` stay on. The API page
(``/`` and ``/docs``, spec at ``/docs.json``) is written for API users by :mod:`serving.openapi`.
Invalid requests get a 400 whose ``error`` names the fields to fix
(``{"error": ..., "detail": [{"loc": [field], "msg": ..., "type": ...}]}``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated, Dict, List, Literal, Optional, Union

import bentoml
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError
from starlette.responses import JSONResponse, Response

from serving.openapi import ApiPage

MODEL_ENV, MAX_N_ENV, THREADS_ENV = "MUSTANGS_MODEL", "MUSTANGS_MAX_N", "MUSTANGS_ORT_THREADS"
STORE_MODEL = "mustangs-ensemble"  # name of the model in BentoML's model store (see `serving build`)
MODEL_FILE = "ensemble.onnx"       # file name inside that stored model


def _max_n() -> int:
    """``MUSTANGS_MAX_N`` as an int ≥ 1 (default 1024); a bad value stops the service at start."""
    raw = os.environ.get(MAX_N_ENV, "1024")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_N_ENV} must be an integer >= 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{MAX_N_ENV} must be an integer >= 1, got {raw!r}")
    return value


class _QuietValidationErrors(logging.Filter):
    """Log a rejected request (400) as one INFO line instead of BentoML's ERROR with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            record.msg, record.args = "rejected request (400): %s", (problems,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(_QuietValidationErrors())


def bind_host(argv: list[str] | None = None, env: dict[str, str] | None = None) -> str | None:
    """The address ``bentoml serve`` binds: ``--host`` on its command line, else ``$BENTOML_HOST``, else
    BentoML's configured default (``0.0.0.0``)."""
    import sys

    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    if env.get("BENTOML_HOST"):
        return env["BENTOML_HOST"]
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        return str(BentoMLContainer.http.host.get())
    except Exception:  # noqa: BLE001 - only used to make a log line true
        return None


class _TrueBindAddress(logging.Filter):
    """BentoML logs "listening on http://localhost:3000" when it binds every interface (0.0.0.0 / ::).

    A built Bento (and its container) binds 0.0.0.0 by default, so that line hides that the service
    is reachable from the network; this filter puts the real address in it.
    """

    def __init__(self, host: str | None = None):
        super().__init__()
        self.host = host

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if "listening on" in msg and isinstance(record.args, tuple) and "localhost" in record.args:
            host = self.host if self.host is not None else bind_host()
            if host in ("0.0.0.0", "::"):
                args = list(record.args)
                args[args.index("localhost")] = f"{host}"
                record.args = tuple(args)
                record.msg = msg + " -- bound to every network interface; pass --host 127.0.0.1 to keep it local"
        return True


for _name in ("bentoml.serve", "bentoml.serving"):
    logging.getLogger(_name).addFilter(_TrueBindAddress())


class JsonBodiesOnly:
    """ASGI middleware: our APIs take JSON, so another declared body type gets a 415 with a message.

    Without it a ``multipart/form-data`` request with no boundary reaches BentoML's form parser
    and ends as a 500. No content type at all is read as JSON (``{}`` or empty → defaults).
    """

    def __init__(self, app, paths: tuple[str, ...] = ("/sample", "/info", "/solve")):
        self.app, self.paths = app, paths

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("path") in self.paths:
            raw = dict(scope.get("headers") or []).get(b"content-type", b"")
            media = raw.split(b";")[0].strip().lower().decode("latin-1")
            if media and media != "application/json" and not media.endswith("+json"):
                message = f"unsupported content-type '{media}': send a JSON body with content-type application/json"
                response = JSONResponse({"error": message, "detail": [{"loc": ["content-type"], "msg": message}]},
                                        status_code=415)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


MAX_N = _max_n()
MAX_SEED = 2**63 - 1


# Strict numbers (an int is a number, true and "1" are not), as the OpenAPI schema says.
TargetSpec = Union[Dict[str, StrictFloat], List[StrictFloat], str]
WeightsSpec = List[StrictFloat]
TARGET_FIELD = Field(None, description="class distribution to re-aim the mixture at: {\"Sneaker\": 0.5, \"Bag\": 0.5} "
                                       "(class names or indices as keys), a list of one weight per class, "
                                       "'Sneaker:0.5,Bag:0.5', 'uniform' or 'real'; solved with the ensembler's "
                                       "exact TVD objective and cached (see POST /info for the classes)",
                     examples=[{"Sneaker": 0.5, "Bag": 0.5}, "uniform"])
WEIGHTS_FIELD = Field(None, max_length=100_000, description="explicit mixture weights, one per generator (>= 0, "
                                                            "positive sum); instead of target")
LabelsSpec = Union[List[Union[StrictInt, str]], Dict[str, StrictInt]]
LABELS_FIELD = Field(None, description="conditional models only (POST /info says conditional: true and lists the "
                                       "classes): the class of each sample, as a list of n class indices or names "
                                       "([7, 7, \"Bag\"]), or counts per class name ({\"Sneaker\": 3, \"Bag\": "
                                       "5}, summing to n); default: the classes in turn",
                     examples=[{"Sneaker": 8, "Bag": 8}, [7, 8, 9]])
FID_WEIGHT_FIELD = Field(0.0, ge=0, le=1e6, strict=True, allow_inf_nan=False,
                         description="lambda in the solved tvd + lambda * fid_cls (with target)")


class SampleRequest(BaseModel):
    """The body of ``POST /sample``; unknown keys are refused (a typo must not fall back to defaults)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(16, ge=1, le=MAX_N, strict=True, description=f"number of samples, 1..{MAX_N}", examples=[16])
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, strict=True,
                                description="seed for a reproducible draw; omit (or null) for a random one",
                                examples=[1])
    format: Literal["png", "npy"] = Field("png", description="png: one grid image (image/png); npy: a NumPy .npy "
                                                             "file, float32 [n, C, H, W] in [-1, 1]")
    target: Optional[TargetSpec] = TARGET_FIELD
    weights: Optional[WeightsSpec] = WEIGHTS_FIELD
    fid_weight: float = FID_WEIGHT_FIELD
    labels: Optional[LabelsSpec] = LABELS_FIELD


class SolveRequest(BaseModel):
    """The body of ``POST /solve``: what ``/sample`` would draw with, without drawing."""

    model_config = ConfigDict(extra="forbid")

    target: Optional[TargetSpec] = TARGET_FIELD
    weights: Optional[WeightsSpec] = WEIGHTS_FIELD
    fid_weight: float = FID_WEIGHT_FIELD


def _bad_request(message: str, field: str) -> JSONResponse:
    """A 400 in the same shape as the validation errors: ``{"error", "detail": [{"loc", "msg", "type"}]}``."""
    return JSONResponse({"error": message, "detail": [{"loc": [field] if field else [], "msg": message,
                                                       "type": "value_error"}]}, status_code=400)


def _plan_or_400(sampler, target, weights, fid_weight):
    """``(plan, None)`` for a valid target/weights request, else ``(None, a 400 response naming the problem)``."""
    from mustangs.errors import UserError

    try:
        return sampler.plan(target, weights, fid_weight), None
    except UserError as exc:
        message = str(exc)
        if target is not None and weights is not None:
            field = ""
        elif message.startswith("fid_weight"):
            field = "fid_weight"
        else:
            field = "target" if target is not None else "weights"
        return None, _bad_request(message, field)


def _plan_headers(plan) -> dict[str, str]:
    """Response headers that say how a draw was aimed (and, for a target, how close it gets)."""
    headers = {"X-Mustangs-Weights-Source": plan.source}
    if plan.estimated_tvd is not None:
        headers["X-Mustangs-Estimated-TVD"] = f"{plan.estimated_tvd:.6f}"
    if plan.estimated_fid is not None:
        headers["X-Mustangs-Estimated-FID"] = f"{plan.estimated_fid:.4f}"
    return headers


@bentoml.service(name="mustangs", traffic={"timeout": 120}, workers=1)
class MustangsSampler:
    """Samples from the ensemble: a PNG grid or the raw float32 array (``.npy``)."""

    if not os.environ.get(MODEL_ENV):
        # Declared only when no file is given, so that `bentoml build` packs the stored model
        # into the Bento, while `serving serve FILE` never touches the model store.
        stored_model = bentoml.models.BentoModel(f"{STORE_MODEL}:latest")

    def __init__(self) -> None:
        from serving.sampler import OnnxSampler

        path = os.environ.get(MODEL_ENV) or self.stored_model.path_of(MODEL_FILE)
        threads = os.environ.get(THREADS_ENV)
        self.sampler = OnnxSampler(path, threads=int(threads) if threads else None)
        self._info = {**self.sampler.info(), "max_n": MAX_N}

    @bentoml.api(route="/sample", input_spec=SampleRequest)
    def sample(self, n: int = 16, seed: Optional[int] = None, format: str = "png", target=None, weights=None,
               fid_weight: float = 0.0, labels=None) -> Annotated[bytes, ContentType("image/png")]:
        """Draw ``n`` samples; the same seed (and target or weights) always gives the same bytes.

        With ``target`` the mixture weights are solved for that class distribution (cached) and
        ``X-Mustangs-Estimated-TVD`` says how close the pool gets; with ``weights`` they are used
        as given. Returns a starlette ``Response`` (BentoML passes it through): image/png, or
        application/octet-stream for npy. The annotation only documents the PNG case in OpenAPI,
        which has room for one response type per API. ``labels`` (conditional models) fixes each
        sample's class; it is refused on unconditional models and together with ``target``.
        """
        from mustangs.errors import UserError

        if labels is not None:
            if target is not None:
                return _bad_request("give labels or target, not both: labels already fix each sample's class", "")
            try:
                self.sampler.resolve_labels(labels, n)
            except UserError as exc:
                return _bad_request(str(exc), "labels")
        plan, error = _plan_or_400(self.sampler, target, weights, fid_weight)
        if error is not None:
            return error
        headers = _plan_headers(plan)
        if format == "npy":
            headers["content-disposition"] = 'attachment; filename="samples.npy"'
            return Response(self.sampler.sample_npy(n, seed, plan=plan, labels=labels),
                            media_type="application/octet-stream", headers=headers)
        return Response(self.sampler.sample_png(n, seed, plan=plan, labels=labels), media_type="image/png",
                        headers=headers)

    @bentoml.api(route="/solve", input_spec=SolveRequest)
    def solve(self, target=None, weights=None, fid_weight: float = 0.0) -> dict:
        """The mixture weights ``/sample`` would draw with for this target (or weights), and the estimated
        TVD / FID they reach: the JSON for callers of ``format=npy`` and for planning."""
        plan, error = _plan_or_400(self.sampler, target, weights, fid_weight)
        if error is not None:
            return error
        names = self.sampler.repurpose.class_names if self.sampler.repurpose is not None else None
        out = plan.to_json(self.sampler.generator_ids, names)
        if self.sampler.repurpose is not None:
            hist = self.sampler.repurpose.class_histogram(plan.weights)
            out["estimated_class_histogram"] = {c: float(p) for c, p in zip(names, hist)}
        return json.loads(json.dumps(out))

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """The ensemble's metadata: weights, generator ids, latent size, sample shape, hashes, limits."""
        return json.loads(json.dumps(self._info))


MustangsSampler.add_asgi_middleware(JsonBodiesOnly)
MustangsSampler.add_asgi_middleware(ApiPage, spec=lambda: MustangsSampler.openapi_spec.asdict(), max_n=MAX_N)
