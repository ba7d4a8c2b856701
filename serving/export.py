"""Export pools, an ensemble or a front point to one self-contained ONNX graph.

``serving export`` takes pool folders (every generator, uniform default weights), an
``ensemble.json`` (its members, its weights as defaults) or one point of a ``front.json``
(:func:`load_source`). The graph takes a latent ``z [N, latent_dim]`` (float32) and the chosen
component ``k [N]`` (int64) and returns samples ``[N, *sample_shape]`` (float32 in [-1, 1]).
A conditional ensemble's graph (generators with ``network.classes``) takes a third input,
``labels [N]`` (int64 class indices; a label outside ``[0, C)`` conditions on no class), and
names its classes in ``mustangs.classes``.
Components are drawn on the host from the mixture weights (see :mod:`serving.sampler`), so
the graph itself is deterministic. Inside the graph every generator runs only on its own
rows (``nonzero`` → ``index_select`` → generator; then one concat and one gather put the
rows back in order), so an N-row call costs about one generator's N-row forward pass, not K
of them; components that receive no rows cost next to nothing. Rows whose ``k`` is outside ``[0, K)`` come out as zeros.

Everything a downstream app needs travels in the model's ``metadata_props`` (keys in
:data:`META_KEYS`): the default mixture weights, latent size, sample shape, architecture, generator
ids, what was exported and the sha256 of the source. When the dataset has an evaluation
classifier, the per-generator class histograms and feature moments that request-time
re-purposing needs travel there too (:func:`repurpose_stats`, :mod:`serving.repurpose`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mustangs.errors import UserError
from mustangs.io.atomic import atomic_path
from mustangs.names import count
from mustangs.pool.format import sha256_file

ONNX_FORMAT = "mustangs-onnx/1"
INPUT_Z, INPUT_K, INPUT_LABELS, OUTPUT = "z", "k", "labels", "samples"

#: metadata_props keys written by :func:`export_ensemble` (values are strings; JSON where noted).
META_KEYS = {
    "format": "mustangs.format",                  # "mustangs-onnx/1"
    "weights": "mustangs.weights",                # JSON list of K floats, sums to 1
    "latent_dim": "mustangs.latent_dim",          # int
    "sample_shape": "mustangs.sample_shape",      # JSON list, e.g. [1, 28, 28]
    "arch": "mustangs.arch",                      # generator architecture name
    "generator_ids": "mustangs.generator_ids",    # JSON list of K member ids, same order as weights
    "ensemble_sha256": "mustangs.ensemble_sha256",  # sha256 of the source file (pools: of their manifests)
    "ensemble_meta": "mustangs.ensemble_meta",    # JSON: method/objective/metrics from ensemble.json
    "source": "mustangs.source",                  # what was exported: pool | ensemble | front
    "classes": "mustangs.classes",                # conditional graphs only: JSON list of class names (label i)
}
#: Re-purposing statistics (optional) travel under serving.repurpose.META_PAYLOAD / META_INFO / META_SHA256.


class EnsembleGraph(nn.Module):
    """The module that is exported: ``(z, k) → samples``, each generator on its own rows.

    For component ``j`` the rows with ``k == j`` are found (``nonzero``), gathered, and run
    through generator ``j``; the outputs of all components are concatenated once and put back
    in row order with one gather (a scatter of row positions on an int64 vector finds each
    row's place). That keeps the big copies to two per call, whatever K is.

    Each component's batch gets one dummy row (an all-zero latent appended to ``z``), so its
    size is provably ≥ 1 to ``torch.export`` — a generator that reshapes with ``view(-1, …)``
    cannot be traced for a batch that may be empty — and components with no rows still work.
    Its output is never read. Rows whose ``k`` is outside ``[0, K)`` read a zero row.
    """

    def __init__(self, generators: list[nn.Module], sample_shape: tuple[int, ...], num_classes: int = 0):
        super().__init__()
        self.generators = nn.ModuleList(generators)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.num_classes = int(num_classes)   # > 0: conditional generators, forward takes labels

    def forward(self, z: torch.Tensor, k: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        n = z.shape[0]
        if self.num_classes:   # the generators' packed input [z, onehot(labels)] (mustangs.pool.networks)
            z = torch.cat([z, (labels.unsqueeze(1) == torch.arange(self.num_classes)).to(z.dtype)], 1)
        z_ext = torch.cat([z, z.new_zeros(1, z.shape[1])])     # row n: the dummy latent
        dummy = torch.arange(n, n + 1)
        rows_all, outs = [], [z.new_zeros((1,) + self.sample_shape)]  # outs[0]: zeros for unknown k
        for j, gen in enumerate(self.generators):
            rows = torch.cat([torch.nonzero(k == j).squeeze(1), dummy])
            outs.append(gen(z_ext.index_select(0, rows)))
            rows_all.append(rows)
        rows_cat = torch.cat(rows_all)                          # every row once, plus K dummies (= n)
        position = torch.zeros(n + 1, dtype=torch.int64).index_put(
            (rows_cat,), torch.arange(1, rows_cat.shape[0] + 1))  # where each row's output sits in outs
        return torch.cat(outs).index_select(0, position[:n])


@dataclass
class ExportResult:
    """What :func:`export_ensemble` wrote: the file, its size, members and parity (if checked)."""

    path: Path
    bytes: int
    n_generators: int
    metadata: dict[str, str]
    max_abs_diff: float | None = None


def _json_safe(value):
    """``value`` if it survives ``json.dumps``, else ``None`` (metadata must never fail an export)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return None


#: The ensemble.json summary fields copied into the model (and shown by ``POST /info``). Left
#: out on purpose: local pool paths, the search history and the optimiser's state.
ENSEMBLE_META_FIELDS = ("dataset", "method", "objective", "objective_minimised", "target", "target_distribution",
                        "budget", "evaluations", "seed", "max_size", "metrics", "statistics", "classifier", "merged")


def ensemble_metadata(ensemble, ensemble_sha256: str) -> dict[str, str]:
    """The ``metadata_props`` for an ensemble (all values strings)."""
    meta = {k: _json_safe(ensemble.meta[k]) for k in ENSEMBLE_META_FIELDS if k in ensemble.meta}
    return {
        META_KEYS["format"]: ONNX_FORMAT,
        META_KEYS["weights"]: json.dumps([float(w) for w in ensemble.weights]),
        META_KEYS["latent_dim"]: str(int(ensemble.spec.latent_dim)),
        META_KEYS["sample_shape"]: json.dumps([int(s) for s in ensemble.spec.sample_shape]),
        META_KEYS["arch"]: ensemble.spec.arch,
        META_KEYS["generator_ids"]: json.dumps([m.id for m in ensemble.members]
                                               or [f"g{i}" for i in range(len(ensemble.generators))]),
        META_KEYS["ensemble_sha256"]: ensemble_sha256,
        META_KEYS["ensemble_meta"]: json.dumps({k: v for k, v in meta.items() if v is not None}),
        **({META_KEYS["classes"]: json.dumps(list(ensemble.spec.classes))} if ensemble.spec.classes else {}),
    }


def build_graph_model(ensemble, opset: int | None = None):
    """Trace the ensemble with the ``torch.export``-based exporter; returns an ``onnx.ModelProto``.

    The batch axis ``N`` is dynamic; weights are embedded (no side ``.onnx.data`` file).
    """
    C = ensemble.spec.num_classes
    module = EnsembleGraph([g.cpu().eval() for g in ensemble.generators], ensemble.spec.sample_shape, C).eval()
    z = torch.randn(5, ensemble.spec.latent_dim, generator=torch.Generator().manual_seed(0))
    k = torch.arange(5, dtype=torch.int64) % len(ensemble.generators)
    batch = torch.export.Dim("N", min=1, max=1 << 24)
    args, names, dims = (z, k), [INPUT_Z, INPUT_K], {"z": {0: batch}, "k": {0: batch}}
    if C:
        args, names = (z, k, torch.arange(5, dtype=torch.int64) % C), names + [INPUT_LABELS]
        dims["labels"] = {0: batch}
    kwargs = {} if opset is None else {"opset_version": opset}
    # The exporter prints progress lines to stdout; keep the CLI's output ours.
    ir_logger = logging.getLogger("onnx_ir")  # warns about an empty attribute list it handles fine
    level = ir_logger.level
    ir_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, external_data=False,
                                        input_names=names, output_names=[OUTPUT],
                                        dynamic_shapes=dims, verbose=False, **kwargs)
    finally:
        ir_logger.setLevel(level)
    return program.model_proto


def max_abs_diff(onnx_path: str | Path, ensemble, sizes=(1, 7, 1000), seed: int = 0) -> float:
    """Largest |torch − onnxruntime| over fresh draws of ``sizes`` rows from the mixture.

    Components are drawn from the ensemble's weights, so rare components may get no rows —
    which is exactly a case the graph must handle. Conditional ensembles: labels drawn uniformly.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in sizes:
        z, k = ensemble.draw(int(n), gen)
        feed = {INPUT_Z: z.numpy().astype(np.float32), INPUT_K: k.numpy().astype(np.int64)}
        labels = None
        if ensemble.spec.classes:
            labels = torch.randint(ensemble.spec.num_classes, (int(n),), generator=gen)
            feed[INPUT_LABELS] = labels.numpy().astype(np.int64)
        want = ensemble.generate(z, k, labels).numpy()
        got = sess.run([OUTPUT], feed)[0]
        if got.shape != want.shape:
            return math.inf
        worst = max(worst, float(np.abs(got - want).max()) if want.size else 0.0)
    return worst


def export_ensemble(ensemble_path: str | Path, out: str | Path, *, check_parity: bool = False,
                    tolerance: float = 1e-4, opset: int | None = None) -> ExportResult:
    """Export ``ensemble.json`` to one ONNX file at ``out`` (atomic: all or nothing), without statistics.

    Args:
        ensemble_path: an ``ensemble.json`` written by the ensembler.
        out: the ``.onnx`` file to write.
        check_parity: before the file is renamed into place, run torch and onnxruntime on the
            same draws (N = 1, 7, 1000) and refuse to write if they differ by more than ``tolerance``.
        tolerance: the largest acceptable max abs difference.
        opset: ONNX opset to target (``None``: the exporter's default).

    Raises:
        UserError: the ensemble file is missing, foreign or corrupt, or parity fails.
    """
    from ensembler.ensemble import Ensemble

    ensemble_path = Path(ensemble_path)
    _check_out(out)
    ensemble = Ensemble.load(ensemble_path)
    return export_model(ensemble, out, source_sha256=sha256_file(ensemble_path), check_parity=check_parity,
                        tolerance=tolerance, opset=opset)


def _check_out(out: str | Path) -> None:
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'ensemble.onnx'}")


def load_source(paths: list[str | Path], point: int | None = None):
    """What ``serving export`` was given → ``(Ensemble, sha256 of the source, kind)``.

    * one or more pool folders (``runs/x/pool``): every generator, uniform default weights;
      kind ``"pool"``;
    * one ``ensemble.json``: its members with its weights as defaults; kind ``"ensemble"``;
    * one ``front.json`` (``ensembler front``) with ``point``: that front point; kind ``"front"``.
    """
    import hashlib

    from ensembler.ensemble import Ensemble
    from ensembler.front import FRONT_FORMAT, load_front_point
    from ensembler.pools import open_pools

    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("give a pool folder, an ensemble.json or a front.json")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"cannot read {missing[0]}: it does not exist (give pool folders, an ensemble.json or a "
                        "front.json)")
    if all(p.is_dir() for p in paths):
        if point is not None:
            raise UserError("--point selects a point of a front.json; it does not apply to pools")
        pools = open_pools(paths)
        pools.check_all()
        meta = {"dataset": pools.dataset, "method": "pool", "objective": None,
                "pools": [str(p.root) for p in pools.pools]}
        ensemble = pools.ensemble(np.ones(len(pools)), meta)
        manifests = "".join(sha256_file(p.root / "manifest.json") for p in pools.pools)
        digest = hashlib.sha256(manifests.encode()).hexdigest()
        return ensemble, digest, "pool"
    if len(paths) > 1:
        raise UserError("give either pool folders (one or more) or a single ensemble.json / front.json")
    path = paths[0]
    if path.name == "manifest.json":
        raise UserError(f"give the pool folder {path.parent}, not its manifest")
    head = None
    if path.is_file():
        from mustangs.io.loaders import read_json_file

        try:
            head = read_json_file(path, "ensemble file")
        except UserError:
            head = None  # Ensemble.load below says what is wrong with the file
    if isinstance(head, dict) and head.get("format") == FRONT_FORMAT:
        if point is None:
            n = len(head["points"]) if isinstance(head.get("points"), list) else 0
            raise UserError(f"{path} is a front of {n} ensembles; choose one with --point I "
                            "(see the plot or 'ensembler front' output)")
        return load_front_point(path, point), sha256_file(path), "front"
    if point is not None:
        raise UserError("--point selects a point of a front.json; it does not apply to an ensemble.json")
    return Ensemble.load(path), sha256_file(path), "ensemble"


def repurpose_stats(ensemble, dataset: str, samples: int = 10_000, seed: int = 0, device: str = "auto",
                    batch_size: int = 1000, cache_dir=None, log=None, *, classifier: str | None = None,
                    force: bool = False, data_dir=None):
    """The per-generator statistics that request-time re-purposing needs (:class:`serving.repurpose.RepurposeStats`).

    Computed on the judge ``classifier`` (``--classifier NAME_OR_DIR``; None: the one for
    ``dataset``; one trained for another dataset is refused unless ``force``) with ``samples``
    samples per generator (latent seed ``seed``), through the ensembler's statistics cache, so
    generators the ensembler has already measured cost nothing. The real test split's statistics
    (for ``fid_weight`` and the ``"real"`` target) are stored when it can be read (``data_dir``);
    without it the model still re-aims at class targets.
    """
    from ensembler.stats import Source, StatsCache, load_evaluator, pool_stats
    from mustangs.data.class_names import class_names
    from serving.repurpose import RepurposeStats

    evaluator = load_evaluator(dataset, device, classifier=classifier, force=force, data_dir=data_dir,
                               need_real=False, log=log)
    if evaluator.real is None and log is not None:
        log(evaluator.no_real_note("the model re-aims at class targets but cannot weigh fid or serve target 'real'"))
    sources = [Source(m.id, m.sha256, ensemble.spec, (lambda g=g: g))
               for m, g in zip(ensemble.members, ensemble.generators)]
    # progress None: a bar on a terminal, a plain line every 10 s in logs (K x 10k samples takes a while)
    stats = pool_stats(sources, evaluator, samples, seed, batch_size, StatsCache(cache_dir), progress=None, log=log)
    ensemble.to("cpu")
    clf_info = getattr(evaluator.classifier, "info", {}) or {}
    record = dict(evaluator.record)
    info = {
        "classifier": {**record, "test_accuracy": clf_info.get("test_accuracy"),
                       "feature_dim": evaluator.feature_dim},
        "class_names": class_names(str(record.get("dataset") or dataset), evaluator.num_classes),
        "samples_per_generator": int(samples),
        "seed": int(seed),
        "real_statistics": evaluator.real is not None,
    }
    real = evaluator.real
    return RepurposeStats(np.stack([s.hist for s in stats]), np.stack([s.mu for s in stats]),
                          np.stack([s.second for s in stats]), np.array([s.n for s in stats]),
                          None if real is None else np.asarray(real.mu),
                          None if real is None else np.asarray(real.sigma),
                          None if real is None else np.asarray(real.hist), info)


def export_model(ensemble, out: str | Path, *, source_sha256: str, source_kind: str = "ensemble", stats=None,
                 check_parity: bool = False, tolerance: float = 1e-4, opset: int | None = None) -> ExportResult:
    """Export an in-memory :class:`ensembler.ensemble.Ensemble` to one ONNX file at ``out`` (atomic).

    ``stats`` (a :class:`serving.repurpose.RepurposeStats`, optional) is stored in the model's
    metadata with its sha256, so the served model can be re-aimed at class targets per request.
    """
    import onnx

    out = Path(out)
    _check_out(out)
    metadata = ensemble_metadata(ensemble, source_sha256)
    metadata[META_KEYS["source"]] = source_kind
    if stats is not None:
        from serving.repurpose import encode_payload

        if stats.K != len(ensemble.generators):
            raise UserError(f"statistics for {stats.K} generators but the ensemble has {len(ensemble.generators)}")
        metadata.update(encode_payload(stats))
    try:
        model = build_graph_model(ensemble, opset)
    except UserError:
        raise
    except Exception as exc:  # the exporter's errors are long; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX export of '{ensemble.spec.arch}' generators failed: {first}") from exc
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"Mustangs ensemble of {count(len(ensemble.generators), 'generator')} ('{ensemble.spec.arch}')"
    onnx.checker.check_model(model, full_check=True)
    diff = None
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        if check_parity:
            diff = max_abs_diff(tmp, ensemble)
            if not diff <= tolerance:
                raise UserError(f"parity check failed: max abs diff torch vs onnxruntime {diff:.3g} > {tolerance:g}; "
                                f"nothing written")
    return ExportResult(out, out.stat().st_size, len(ensemble.generators), metadata, diff)
