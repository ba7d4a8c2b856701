"""Re-purposing at request time: class targets → mixture weights, from statistics in the model (torch-free).

``serving export`` stores, in the ONNX model's metadata, what re-aiming the mixture needs: per
generator the class histogram ``p_k`` and the feature moments ``μ_k``, ``S_k`` on the evaluation
classifier (float32; ``S_k`` as its upper triangle), the real data's feature mean/covariance and
class histogram (when the real test split was readable at export; without them targets still
work, but not ``fid_weight`` or the ``"real"`` target), the classifier's name, class names and
sha256, and the number of samples behind the statistics. The payload is an ``.npz`` (no pickle) in base64 under :data:`META_PAYLOAD`, and
its sha256 under :data:`META_SHA256` is checked on load.

:class:`Repurposer` turns a request's ``target`` (class names or indices → weights, a list of C
weights, ``"uniform"`` or ``"real"``) or explicit ``weights`` into a :class:`Plan`: the mixture
weights to draw components from, and the estimated TVD / FID they reach. Targets are solved with
:func:`ensembler.mixture_math.solve_target`, the same exact objective the ensembler searches, and
cached per (target, fid_weight). Only numpy is needed here (the Bento has no torch).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import threading
import time
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ensembler.mixture_math import FidTerms, Solution, solve_target, tvd_batch
from mustangs.errors import UserError

#: metadata_props keys of the re-purposing statistics (values are strings).
META_PAYLOAD = "mustangs.repurpose"            # base64 of an .npz: hist, mu, second_triu, n, real_*
META_INFO = "mustangs.repurpose_info"          # JSON: classifier name/sha256, class names, samples, seed
META_SHA256 = "mustangs.repurpose_sha256"      # sha256 of the decoded .npz bytes

PAYLOAD_FORMAT = "mustangs-repurpose/1"
MAX_FID_WEIGHT = 1e6
CACHE_SIZE = 1024


# --------------------------------------------------------------------------- the payload

@dataclass
class RepurposeStats:
    """Per-generator statistics on the evaluation classifier, as stored in the model."""

    hist: np.ndarray          # [K, C] class histogram of each generator (rows sum to 1)
    mu: np.ndarray            # [K, d] feature means
    second: np.ndarray        # [K, d, d] feature second moments E[f fᵀ]
    n: np.ndarray             # [K] samples behind each generator's statistics
    real_mu: np.ndarray | None     # [d] real test split's feature mean (None: the split was not there)
    real_sigma: np.ndarray | None  # [d, d] real test split's feature covariance (None with real_mu)
    real_hist: np.ndarray | None   # [C] real test split's predicted class histogram (None with real_mu)
    info: dict[str, Any]      # classifier {name, dataset, sha256, forced, ...}, class_names, samples, seed

    @property
    def K(self) -> int:
        return int(self.hist.shape[0])

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.info["class_names"]]

    @property
    def has_real(self) -> bool:
        """Whether the real test split's statistics are stored (``fid_weight``, target ``"real"``)."""
        return self.real_mu is not None


def _triu(a: np.ndarray) -> np.ndarray:
    d = a.shape[-1]
    i, j = np.triu_indices(d)
    return a[..., i, j]


def _untriu(t: np.ndarray, d: int) -> np.ndarray:
    i, j = np.triu_indices(d)
    out = np.zeros(t.shape[:-1] + (d, d), np.float64)
    out[..., i, j] = t
    out[..., j, i] = t
    return out


def encode_payload(stats: RepurposeStats) -> dict[str, str]:
    """The metadata entries (:data:`META_PAYLOAD`, :data:`META_INFO`, :data:`META_SHA256`) for ``stats``.

    Feature moments are stored in float32 and ``S_k`` / Σ_real as upper triangles, which keeps a
    128-d classifier at ~33 KB per generator.
    """
    buf = io.BytesIO()
    real = {}
    if stats.has_real:
        real = {"real_mu": stats.real_mu.astype(np.float32),
                "real_sigma_triu": _triu(stats.real_sigma).astype(np.float32),
                "real_hist": stats.real_hist.astype(np.float64)}
    np.savez_compressed(buf, format=np.array(PAYLOAD_FORMAT), hist=stats.hist.astype(np.float64),
                        mu=stats.mu.astype(np.float32), second_triu=_triu(stats.second).astype(np.float32),
                        n=stats.n.astype(np.int64), **real)
    raw = buf.getvalue()
    return {META_PAYLOAD: base64.b64encode(raw).decode("ascii"), META_INFO: json.dumps(stats.info),
            META_SHA256: hashlib.sha256(raw).hexdigest()}


def decode_payload(meta: dict[str, str], where: str = "model") -> RepurposeStats | None:
    """The statistics stored in ``meta`` (a model's custom metadata), or None when it has none.

    Raises ``UserError`` when the payload is there but corrupt, foreign or fails its sha256.
    """
    present = [k for k in (META_PAYLOAD, META_INFO, META_SHA256) if k in meta]
    if not present:
        return None
    if len(present) != 3:
        missing = sorted({META_PAYLOAD, META_INFO, META_SHA256} - set(present))
        raise UserError(f"{where}: the re-purposing statistics are incomplete (missing {', '.join(missing)}); "
                        "export the model again")
    try:
        raw = base64.b64decode(meta[META_PAYLOAD], validate=True)
    except ValueError:
        raise UserError(f"{where}: the re-purposing statistics are not valid base64") from None
    if hashlib.sha256(raw).hexdigest() != meta.get(META_SHA256):
        raise UserError(f"{where}: the re-purposing statistics do not match their sha256 (corrupt or edited model); "
                        "export the model again")
    try:
        info = json.loads(meta[META_INFO])
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            if str(data["format"]) != PAYLOAD_FORMAT:
                raise ValueError(f"format {data['format']} != {PAYLOAD_FORMAT}")
            hist = np.asarray(data["hist"], np.float64)
            mu = np.asarray(data["mu"], np.float64)
            d = mu.shape[1]
            second = _untriu(np.asarray(data["second_triu"], np.float64), d)
            has_real = "real_mu" in data.files
            stats = RepurposeStats(hist, mu, second, np.asarray(data["n"], np.int64),
                                   np.asarray(data["real_mu"], np.float64) if has_real else None,
                                   _untriu(np.asarray(data["real_sigma_triu"], np.float64), d) if has_real else None,
                                   np.asarray(data["real_hist"], np.float64) if has_real else None, dict(info))
        K, C = hist.shape
        if (mu.shape[0] != K or second.shape != (K, d, d) or stats.n.shape != (K,) or len(info["class_names"]) != C
                or (has_real and (stats.real_mu.shape != (d,) or stats.real_hist.shape != (C,)))):
            raise ValueError("inconsistent shapes")
        arrays = (hist, mu, second) + ((stats.real_mu, stats.real_sigma, stats.real_hist) if has_real else ())
        if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(hist < 0) or np.any(stats.n < 2):
            raise ValueError("non-finite or negative values")
    except (KeyError, TypeError, ValueError, OSError, EOFError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as exc:   # the .npz is a zip: a damaged one fails in zipfile/zlib's own types
        raise UserError(f"{where}: malformed re-purposing statistics ({exc}); export the model again") from None
    return stats


# --------------------------------------------------------------------------- targets and weights

def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{what} must be a number, got {json.dumps(value)[:40]}")
    x = float(value)
    if not math.isfinite(x):
        raise UserError(f"{what} must be finite, got {value}")
    if x < 0:
        raise UserError(f"{what} is negative ({value}); weights must be >= 0")
    return x


def parse_target_text(text: str) -> Any:
    """A command-line target → the JSON form: ``"Sneaker:0.5,Bag:0.5"`` → dict, ``"Sneaker,Bag"`` → equal
    shares, ``"0.1,…"`` → list, ``"uniform"``/``"real"`` as is, or a JSON object/list."""
    text = text.strip()
    if text in ("uniform", "real"):
        return text
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UserError(f"cannot parse target {text!r} as JSON: {exc}") from None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UserError("empty target; give e.g. 'Sneaker:0.5,Bag:0.5', '7:1', 'uniform' or one weight per class")
    if all(":" in p for p in parts):
        out: dict[str, float] = {}
        for p in parts:
            name, _, value = p.rpartition(":")
            name = name.strip()
            if name in out:  # the dict form cannot name a class twice either (resolve_target)
                raise UserError(f"class {name[:60]!r} is given twice in the target")
            try:
                out[name] = float(value)
            except ValueError:
                raise UserError(f"cannot read the weight in {p!r}; give CLASS:WEIGHT, e.g. 'Bag:0.5'") from None
        return out
    if any(":" in p for p in parts):
        raise UserError(f"cannot parse target {text!r}: mix of CLASS:WEIGHT and bare entries")
    numbers = []
    for p in parts:
        try:
            numbers.append(float(p))
        except ValueError:
            numbers.append(None)
    if all(x is not None for x in numbers):
        return numbers
    if all(x is None for x in numbers):          # bare class names: equal shares ("Sneaker,Bag")
        twice = sorted({p for p in parts if parts.count(p) > 1})
        if twice:
            raise UserError(f"class {twice[0][:60]!r} is given twice in the target")
        return {p: 1.0 for p in parts}
    raise UserError(f"cannot parse target {text!r}; give 'CLASS:WEIGHT,...', class names, one weight per class, "
                    "or 'uniform'")


def resolve_target(spec: Any, class_names: list[str], real_hist: np.ndarray | None = None) -> np.ndarray:
    """A target in any accepted form → a class distribution ``[C]`` (sums to 1).

    Forms: ``"uniform"``; ``"real"`` (the real test split's predicted histogram); the text form
    ``"Sneaker:0.5,Bag:0.5"`` (see :func:`parse_target_text`); a mapping
    ``{class: weight}`` whose keys are class names (exact, else case-insensitive) or indices
    (``"7"``); a list of one weight per class. Weights are normalised. Unknown names, indices out
    of range, a class given twice, negative or non-finite weights and a zero sum raise a one-line
    ``UserError`` naming the problem.
    """
    C = len(class_names)
    legal = f"classes are {', '.join(repr(c) for c in class_names)} (or indices 0..{C - 1})"
    if isinstance(spec, str) and spec.strip() not in ("uniform", "real"):
        spec = parse_target_text(spec)
    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "uniform":
            return np.full(C, 1.0 / C)
        if spec == "real":
            if real_hist is None:
                raise UserError("target 'real' needs the real data's histogram, which this model does not carry")
            return np.asarray(real_hist, np.float64) / float(np.sum(real_hist))
        raise UserError(f"target {spec!r} is not a known name; use 'uniform', 'real', a {{class: weight}} object "
                        f"or a list of {C} weights")
    if isinstance(spec, dict):
        if not spec:
            raise UserError(f"the target names no class; {legal}")
        lower: dict[str, list[int]] = {}
        for i, c in enumerate(class_names):
            lower.setdefault(c.lower(), []).append(i)
        target = np.zeros(C)
        given: dict[int, str] = {}
        for key, value in spec.items():
            key_s = str(key)
            if key_s in class_names:
                idx = class_names.index(key_s)
            elif key_s.strip().isdigit() and key_s.strip().isascii():
                idx = int(key_s)
                if idx >= C:
                    raise UserError(f"target class index {idx} is out of range 0..{C - 1}")
            elif len(lower.get(key_s.lower(), [])) == 1:
                idx = lower[key_s.lower()][0]
            else:
                raise UserError(f"unknown class {key_s[:60]!r} in the target; {legal}")
            if idx in given:
                raise UserError(f"class {class_names[idx]!r} is given twice in the target ({given[idx]!r} and "
                                f"{key_s[:60]!r})")
            given[idx] = key_s
            target[idx] = _number(value, f"the target weight of {class_names[idx]!r}")
    elif isinstance(spec, (list, tuple)):
        if len(spec) != C:
            raise UserError(f"a target list needs one weight per class ({C}), got {len(spec)}; {legal}")
        target = np.array([_number(v, f"target weight {i} ({class_names[i]!r})") for i, v in enumerate(spec)])
    else:
        raise UserError(f"target must be 'uniform', a {{class: weight}} object or a list of {C} weights")
    return _on_simplex(target, "target weights", "class")


def resolve_weights(spec: Any, K: int) -> np.ndarray:
    """Explicit per-generator weights → on the simplex; ``UserError`` for a wrong length, a negative
    or non-finite weight, or a zero sum."""
    if not isinstance(spec, (list, tuple)):
        raise UserError(f"weights must be a list of {K} numbers (one per generator)")
    if len(spec) != K:
        raise UserError(f"weights must have one entry per generator ({K}), got {len(spec)}")
    w = np.array([_number(v, f"weight {i}") for i, v in enumerate(spec)])
    return _on_simplex(w, "weights", "generator")


def _on_simplex(w: np.ndarray, name: str, unit: str) -> np.ndarray:
    """Non-negative finite ``w`` divided by its sum; ``UserError`` when the sum is 0 or overflows."""
    with np.errstate(over="ignore"):
        total = w.sum()
    if not total > 0:
        raise UserError(f"the {name} sum to 0; give at least one {unit} a positive weight")
    if not math.isfinite(total):
        raise UserError(f"the {name} are too large (their sum overflows); scale them down")
    return w / total


def check_fid_weight(value: Any) -> float:
    """``fid_weight`` as a float in [0, :data:`MAX_FID_WEIGHT`]."""
    x = _number(value, "fid_weight")
    if x > MAX_FID_WEIGHT:
        raise UserError(f"fid_weight must be <= {MAX_FID_WEIGHT:g}, got {value}")
    return x


# --------------------------------------------------------------------------- plans

@dataclass
class Plan:
    """The mixture weights one request samples with, and what they are estimated to reach."""

    weights: np.ndarray                  # [K] on the simplex
    source: str                          # "default" | "weights" | "target"
    target: np.ndarray | None = None     # [C] the solved-for class distribution
    estimated_tvd: float | None = None   # ½ Σ |p(w) − target| from the stored histograms
    estimated_fid: float | None = None   # Fréchet distance to the real features from the stored moments
    fid_weight: float = 0.0
    cached: bool = False                 # the solution came from the cache
    solve_ms: float = 0.0                # time of the solve that produced it
    extra: dict = field(default_factory=dict)

    def to_json(self, generator_ids: list[str] | None = None, class_names: list[str] | None = None) -> dict:
        """Plain JSON: weights (by generator id when given), target (by class name when given), estimates."""
        out: dict[str, Any] = {"source": self.source, "weights": [float(w) for w in self.weights]}
        if generator_ids is not None:
            out["generator_ids"] = list(generator_ids)
        if self.target is not None:
            out["target"] = ({n: float(t) for n, t in zip(class_names, self.target)} if class_names
                             else [float(t) for t in self.target])
        out.update({"estimated_tvd": self.estimated_tvd, "estimated_fid": self.estimated_fid,
                    "fid_weight": self.fid_weight, "cached": self.cached, "solve_ms": round(self.solve_ms, 3)})
        return out


class Repurposer:
    """Solves targets into weights over one model's generators, with an LRU cache (thread-safe).

    Args:
        stats: the statistics stored in the model (:func:`decode_payload`).
        default_weights: the model's default mixture weights ``[K]``.
        cache_size: solutions kept (per target and fid_weight).
    """

    def __init__(self, stats: RepurposeStats, default_weights: np.ndarray, cache_size: int = CACHE_SIZE):
        self.stats = stats
        self.default_weights = np.asarray(default_weights, np.float64)
        if self.default_weights.shape != (stats.K,):
            raise UserError(f"the model has {self.default_weights.size} generators but statistics for {stats.K}")
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple, Solution] = OrderedDict()
        self._lock = threading.Lock()
        self._fid: FidTerms | None = None

    @property
    def class_names(self) -> list[str]:
        return self.stats.class_names

    @property
    def fid_terms(self) -> FidTerms | None:
        """Per-generator FID matrices, built once on first use (K·d³ work; ~0.1 s for K = 10); None when
        the model carries no real-data statistics."""
        if self._fid is None and self.stats.has_real:
            s = self.stats
            self._fid = FidTerms(s.mu, s.second, s.n, s.real_mu, s.real_sigma)
        return self._fid

    def target(self, spec: Any) -> np.ndarray:
        """See :func:`resolve_target` (with this model's class names)."""
        return resolve_target(spec, self.class_names, self.stats.real_hist)

    def solve(self, target: np.ndarray, fid_weight: float = 0.0) -> tuple[Solution, bool]:
        """The cached or freshly solved :class:`Solution` for ``target``; also whether it was cached."""
        key = (np.round(np.asarray(target, np.float64), 12).tobytes(), float(fid_weight))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit, True
        fid = self.fid_terms
        solution = solve_target(self.stats.hist, target, fid, fid_weight)
        with self._lock:
            self._cache[key] = solution
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return solution, False

    def plan(self, target: Any = None, weights: Any = None, fid_weight: Any = 0.0) -> Plan:
        """A :class:`Plan` for a request: ``target`` (solved), explicit ``weights``, or the defaults."""
        lam = check_fid_weight(fid_weight if fid_weight is not None else 0.0)
        if lam and not self.stats.has_real:
            raise UserError("fid_weight needs the real data's feature statistics, which this model does not carry "
                            "(export it with --data-dir); drop fid_weight")
        if target is not None and weights is not None:
            raise UserError("give either target or weights, not both")
        if lam and target is None:
            raise UserError("fid_weight only applies to a target; add a target or drop fid_weight")
        if target is not None:
            t = self.target(target)
            start = time.perf_counter()
            solution, cached = self.solve(t, lam)
            return Plan(solution.weights, "target", t, solution.tvd, solution.fid, lam, cached,
                        solution.seconds * 1e3 if not cached else (time.perf_counter() - start) * 1e3,
                        {"iterations": solution.iterations})
        w = self.default_weights if weights is None else resolve_weights(weights, self.stats.K)
        # A plain request's class mix is known too: its TVD to uniform (the X-Mustangs-Estimated-TVD header).
        uniform = np.full(len(self.class_names), 1.0 / len(self.class_names))
        return Plan(w, "default" if weights is None else "weights", None, self.estimate_tvd(w, uniform),
                    self.estimate_fid(w))

    def estimate_fid(self, weights: np.ndarray) -> float | None:
        """The mixture's estimated FID (classifier features) from the stored moments; None without real statistics."""
        fid = self.fid_terms
        return None if fid is None else float(fid.batch(np.asarray(weights, np.float64)[None])[0])

    def estimate_tvd(self, weights: np.ndarray, target: np.ndarray) -> float:
        """The mixture's estimated TVD to ``target`` from the stored histograms."""
        return float(tvd_batch(np.asarray(weights, np.float64)[None], self.stats.hist, target)[0])

    def class_histogram(self, weights: np.ndarray) -> np.ndarray:
        """The mixture's estimated class histogram ``[C]``."""
        return np.asarray(weights, np.float64) @ self.stats.hist


__all__ = ["META_PAYLOAD", "META_INFO", "META_SHA256", "RepurposeStats", "encode_payload", "decode_payload",
           "parse_target_text", "resolve_target", "resolve_weights", "check_fid_weight", "Plan", "Repurposer"]
