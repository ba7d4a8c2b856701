"""A small runtime for downstream apps: sample from an exported ensemble with onnxruntime.

Only numpy, Pillow and onnxruntime are needed (torch is imported only to ask whether a GPU
is really there when onnxruntime offers CUDA). Components and latents are drawn on the host
with a ``numpy.random.Generator``, so the same seed gives the same samples on any provider
up to float rounding, and byte-identical output on the same one.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np

from mustangs.errors import UserError
from mustangs.io.atomic import sha256_file
from mustangs.io.images import grid_pixels as grid_uint8  # noqa: F401 - re-exported (torch-free)
from mustangs.io.images import png_bytes as png_encode
from mustangs.io.images import scatter_pixels as scatter_uint8

from serving.repurpose import Plan, Repurposer, decode_payload, resolve_weights

# What a request may give (see :meth:`OnnxSampler.plan`): a class target, explicit weights, or None.
TargetSpec = Union[Mapping[str, float], Sequence[float], str, None]
WeightsSpec = Union[Sequence[float], np.ndarray, None]

#: Kept in step with :data:`serving.export.META_KEYS` (not imported: that module needs torch).
_FORMAT = "mustangs-onnx/1"
_K = {
    "format": "mustangs.format", "weights": "mustangs.weights", "latent_dim": "mustangs.latent_dim",
    "sample_shape": "mustangs.sample_shape", "arch": "mustangs.arch", "generator_ids": "mustangs.generator_ids",
    "ensemble_sha256": "mustangs.ensemble_sha256", "ensemble_meta": "mustangs.ensemble_meta",
    "source": "mustangs.source", "classes": "mustangs.classes",
}
#: What a request may give as ``labels`` (conditional models): one class (index or name) per sample,
#: or a count per class name (``{"Sneaker": 3, "Bag": 5}``, samples in that order).
LabelsSpec = Union[Sequence[Union[int, str]], Mapping[str, int], None]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def pick_providers(available: list[str] | None = None, gpu_present: bool | None = None) -> list[str]:
    """The onnxruntime providers to use, always named explicitly.

    CUDA (then CPU as fallback) only when onnxruntime lists the CUDA provider *and* torch sees a
    GPU: onnxruntime-gpu lists CUDA even on hosts without one. Otherwise CPU only.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if CUDA not in available:
        return [CPU]
    if gpu_present is None:
        try:
            import torch

            gpu_present = bool(torch.cuda.is_available())
        except Exception:  # no torch: no way to be sure, stay on the CPU
            gpu_present = False
    return [CUDA, CPU] if gpu_present else [CPU]


class OnnxSampler:
    """Sample from an exported Mustangs ensemble (``serving export``) with onnxruntime.

    Example::

        sampler = OnnxSampler("ensemble.onnx")
        x = sampler.sample(64, seed=1)          # float32 [64, C, H, W] in [-1, 1]
        png = sampler.sample_png(64, seed=1)    # a PNG grid, as bytes
        bags = sampler.sample(64, seed=1, target={"Bag": 1})        # re-aimed at one class
        plan = sampler.plan(target={"Sneaker": 0.5, "Bag": 0.5})    # weights + estimated TVD

    Args:
        path: the ``.onnx`` file written by ``serving export``.
        providers: onnxruntime providers; ``None`` picks CUDA when usable, else CPU.
        threads: onnxruntime intra-op threads (``None``: onnxruntime's default, all cores).
        batch_size: rows per ``session.run``, to bound memory for large ``n``.
        target: default class target for every draw (see :meth:`plan`); ``None``: the model's weights.
        weights: default explicit per-generator weights (instead of ``target``).
        fid_weight: λ in the solved ``tvd + λ·fid`` for ``target``.
    """

    def __init__(self, path: str | os.PathLike, *, providers: list[str] | None = None, threads: int | None = None,
                 batch_size: int = 4096, target: TargetSpec = None, weights: WeightsSpec = None,
                 fid_weight: float = 0.0):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"model file {self.path} does not exist")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self.providers = list(providers) if providers else pick_providers()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own types for corrupt files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{self.path} is not a loadable ONNX model: {first}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get(_K["format"]) != _FORMAT:
            raise UserError(f"{self.path} is not a Mustangs ensemble model (metadata {_K['format']} != {_FORMAT}); "
                            f"make one with 'serving export ensemble.json --out model.onnx'")
        from serving.schema import check_graph, parse_meta

        parsed = parse_meta(meta, _K, str(self.path))
        check_graph(self.session, parsed, str(self.path))
        self.latent_dim = parsed.latent_dim
        self.sample_shape = tuple(parsed.sample_shape)
        self.generator_ids = list(parsed.generator_ids)
        self.arch = parsed.arch
        self.classes = list(parsed.classes) if parsed.classes else None   # conditional graph: class names
        self.ensemble_sha256 = parsed.ensemble_sha256
        self.ensemble_meta = parsed.ensemble_meta
        w = np.asarray(parsed.weights, dtype=np.float64)
        w = w / w.max()  # huge weights (1e308) cannot overflow the sum
        # set by 'serving export --classifier': scores of this model's own samples and who judged them
        try:
            self.served_scores = json.loads(meta.get("mustangs.served_scores", "null"))
        except ValueError:
            raise UserError(f"{self.path}: malformed mustangs.served_scores metadata") from None
        self.weights = w / w.sum()
        self.source = parsed.source
        self.batch_size = int(batch_size)
        self.active_providers = self.session.get_providers()
        self.model_sha256 = sha256_file(self.path)
        stats = decode_payload(meta, str(self.path))
        self.repurpose = Repurposer(stats, self.weights) if stats is not None else None
        if self.repurpose is not None and len(self.generator_ids) != self.repurpose.stats.K:
            raise UserError(f"{self.path}: statistics for {self.repurpose.stats.K} generators but "
                            f"{len(self.generator_ids)} generator ids")
        self.default_plan = self.plan(target, weights, fid_weight)

    def plan(self, target: TargetSpec = None, weights: WeightsSpec = None, fid_weight: float = 0.0) -> Plan:
        """The mixture weights for a draw: solved for ``target``, the given ``weights``, or the defaults.

        Args:
            target: a class distribution — ``{"Sneaker": 0.5, "Bag": 0.5}`` (names or indices as
                keys), a list of one weight per class, ``"uniform"`` or ``"real"``. Solved with the
                ensembler's exact TVD objective (:mod:`ensembler.mixture_math`) and cached.
            weights: explicit per-generator weights (one per generator, ≥ 0, positive sum).
            fid_weight: λ ≥ 0 in the minimised ``tvd + λ·fid`` (only with ``target``).

        Returns a :class:`serving.repurpose.Plan` with the weights and the estimated TVD / FID.
        Raises ``UserError`` (one line) for a bad target or bad weights.
        """
        if self.repurpose is not None:
            return self.repurpose.plan(target, weights, fid_weight)
        if target is not None or fid_weight:
            raise UserError(f"{self.path.name} carries no class statistics, so it cannot be re-aimed at a target; "
                            "export it again from its pool or ensemble with a classifier for its dataset")
        if weights is None:
            return Plan(self.weights, "default")
        return Plan(resolve_weights(weights, len(self.weights)), "weights")

    def __repr__(self) -> str:
        return (f"OnnxSampler({str(self.path)!r}, K={len(self.weights)}, latent_dim={self.latent_dim}, "
                f"sample_shape={self.sample_shape}, providers={self.active_providers})")

    def draw(self, n: int, rng: np.random.Generator,
             weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Components ``k [n]`` (int64, from ``weights``, default the plan's) then latents ``z [n, latent_dim]``
        (float32, N(0, 1))."""
        w = self.default_plan.weights if weights is None else np.asarray(weights, np.float64)
        cumw = np.cumsum(w)
        u = rng.random(n)
        k = np.minimum(np.searchsorted(cumw, u, side="right"), len(w) - 1).astype(np.int64)
        k = _skip_zero_weight(k, w)
        z = rng.standard_normal((n, self.latent_dim), dtype=np.float32)
        return z, k

    def resolve_labels(self, labels: LabelsSpec, n: int) -> np.ndarray | None:
        """``labels`` as int64 class indices ``[n]`` (conditional models; default ``0, 1, …, C−1, 0, …``),
        None for an unconditional model given none. Raises ``UserError`` (one line) naming the fix."""
        if not self.classes:
            if labels is not None:
                raise UserError(f"{self.path.name} is not a conditional model (its generators take no labels); "
                                "drop labels")
            return None
        C = len(self.classes)
        if labels is None:
            return np.arange(n, dtype=np.int64) % C
        if isinstance(labels, Mapping):
            items = list(labels.items())
            bad = [c for c, v in items if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0]
            if bad:
                raise UserError(f"labels: the count of class '{bad[0]}' must be an integer >= 0")
            idx = [self._class_index(c) for c, _ in items]
            out = np.repeat(np.asarray(idx, np.int64), [v for _, v in items]).astype(np.int64)
        else:
            out = np.asarray([self._class_index(c) for c in labels], np.int64)
        if out.shape[0] != n:
            raise UserError(f"labels ask for {out.shape[0]} samples but n is {n}; send n={out.shape[0]}")
        return out

    def _class_index(self, c) -> int:
        """A class given by index (int) or name (str) → its index; unknown names are listed back."""
        C = len(self.classes)
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer, str)):
            raise UserError(f"labels: {c!r} is neither a class index nor a class name")
        if not isinstance(c, str):
            c = int(c)
            if not 0 <= c < C:
                raise UserError(f"labels: class index {c} is outside 0..{C - 1}")
            return c
        if c in self.classes:
            return self.classes.index(c)
        shown = ", ".join(f"'{name}'" for name in self.classes[:20]) + (", ..." if C > 20 else "")
        raise UserError(f"labels: unknown class '{c[:80]}'; classes are {shown}")

    def run(self, z: np.ndarray, k: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """The graph on given latents and components (and, conditional, labels; default balanced), in
        batches; ``[n, *sample_shape]`` float32."""
        n = int(z.shape[0])
        if n == 0:
            return np.empty((0, *self.sample_shape), np.float32)
        if self.classes and labels is None:
            labels = np.arange(n, dtype=np.int64) % len(self.classes)
        parts = []
        for i in range(0, n, self.batch_size):
            feed = {"z": np.ascontiguousarray(z[i:i + self.batch_size], np.float32),
                    "k": np.ascontiguousarray(k[i:i + self.batch_size], np.int64)}
            if self.classes:
                feed["labels"] = np.ascontiguousarray(labels[i:i + self.batch_size], np.int64)
            parts.append(self.session.run(None, feed)[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def sample(self, n: int, seed: int | np.random.Generator | None = None, *, target: TargetSpec = None,
               weights: WeightsSpec = None,
               fid_weight: float = 0.0, plan: Plan | None = None, labels: LabelsSpec = None) -> np.ndarray:
        """Draw ``n`` samples, float32 ``[n, *sample_shape]`` in [-1, 1].

        Args:
            n: number of samples (≥ 0).
            seed: an int (reproducible), a ``numpy.random.Generator``, or ``None`` (fresh entropy).
            target: re-aim this draw at a class distribution (see :meth:`plan`); default: the sampler's.
            weights: explicit per-generator weights for this draw (instead of ``target``).
            fid_weight: λ in the solved ``tvd + λ·fid`` (with ``target``).
            plan: a plan from :meth:`plan` (instead of target / weights).
            labels: conditional models only: the class of each sample (see :meth:`resolve_labels`);
                default ``0, 1, …, C−1, 0, …``. The latents and components drawn do not depend on it.

        The same seed and the same target (or weights) give the same samples.
        """
        if int(n) < 0:
            raise UserError(f"n must be >= 0, got {n}")
        y = self.resolve_labels(labels, int(n))
        if plan is None:
            plan = self.default_plan if (target is None and weights is None and not fid_weight) else \
                self.plan(target, weights, fid_weight)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        z, k = self.draw(int(n), rng, plan.weights)
        return self.run(z, k, y)

    def sample_png(self, n: int, seed: int | np.random.Generator | None = None, nrow: int | None = None,
                   **plan_kw) -> bytes:
        """``n`` samples as one PNG: a grid of images, or a scatter plot for 2-D point data
        (``plan_kw``: ``target``/``weights``/``fid_weight``/``plan`` as for :meth:`sample`)."""
        if int(n) < 1:
            raise UserError(f"a PNG needs n >= 1, got {n}")
        x = self.sample(n, seed, **plan_kw)
        if x.ndim == 2 and x.shape[1] == 2:
            return png_encode(scatter_uint8(x))
        if x.ndim != 4:
            raise UserError(f"samples of shape {self.sample_shape} cannot be drawn as a PNG; use npy")
        return png_encode(grid_uint8(x, nrow))

    def sample_npy(self, n: int, seed: int | np.random.Generator | None = None, **plan_kw) -> bytes:
        """``n`` samples as ``.npy`` bytes (float32, written with ``allow_pickle=False``)."""
        buf = io.BytesIO()
        np.save(buf, self.sample(n, seed, **plan_kw), allow_pickle=False)
        return buf.getvalue()

    def info(self) -> dict:
        """The model's metadata as plain JSON-able values."""
        return {
            "format": _FORMAT,
            "arch": self.arch,
            "latent_dim": self.latent_dim,
            "sample_shape": list(self.sample_shape),
            "weights": [float(w) for w in self.weights],
            "generator_ids": self.generator_ids,
            "ensemble_sha256": self.ensemble_sha256,
            "ensemble": self.ensemble_meta,
            "providers": list(self.active_providers),
            "model_sha256": self.model_sha256,
            "source": self.source,
            "conditional": bool(self.classes),
            **({"served_scores": self.served_scores} if self.served_scores is not None else {}),
            **self.repurpose_info(),
            **({"classes": list(self.classes)} if self.classes else {}),
        }

    def repurpose_info(self) -> dict:
        """What re-purposing offers: classes, classifier, and per generator its class histogram."""
        if self.repurpose is None:
            return {"repurpose": False, "classes": None,
                    "generators": [{"id": g, "default_weight": float(w)}
                                   for g, w in zip(self.generator_ids, self.weights)]}
        stats = self.repurpose.stats
        names = stats.class_names
        default = self.repurpose.class_histogram(self.weights)
        return {
            "repurpose": True,
            "classes": names,
            "classifier": stats.info.get("classifier"),
            "statistics": {"samples_per_generator": stats.info.get("samples_per_generator"),
                           "seed": stats.info.get("seed"), "real_statistics": stats.has_real},
            "generators": [{"id": g, "default_weight": float(w),
                            "class_histogram": {c: round(float(p), 6) for c, p in zip(names, h)}}
                           for g, w, h in zip(self.generator_ids, self.weights, stats.hist)],
            "default_class_histogram": {c: round(float(p), 6) for c, p in zip(names, default)},
        }


def _skip_zero_weight(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Never pick a component with weight 0 (a uniform draw landing exactly on a step of the cumulative sum)."""
    bad = w[k] <= 0
    if np.any(bad):
        nonzero = np.flatnonzero(w > 0)
        k = k.copy()
        k[bad] = nonzero[np.searchsorted(nonzero, k[bad]).clip(0, len(nonzero) - 1)]
    return k


