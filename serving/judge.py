"""Score an exported ONNX model with a chosen classifier, and record the verdict in the model.

``serving export ensemble.json --out m.onnx --classifier NAME_OR_DIR`` samples the *exported*
graph through onnxruntime (what ``POST /sample`` serves), scores the samples with the classifier
(tvd and is always; fid, precision/recall/density/coverage and kid when the real test split is
there) and stores the result as the model's ``mustangs.served_scores`` metadata, naming the
classifier (name, dataset, sha256, forced). A classifier trained for another dataset than the
ensemble's is refused unless forced, like everywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from mustangs.errors import UserError

#: Metadata key of the served-model scores (JSON).
SERVED_SCORES_KEY = "mustangs.served_scores"


def judge_model(model_path: str | Path, dataset: str, *, classifier: str | None = None, force: bool = False,
                n: int = 10_000, seed: int = 0, data_dir=None, target=None, threads: int = 1,
                log: Callable[[str], None] | None = None) -> dict:
    """Metrics of ``n`` samples drawn from the ONNX model at ``model_path``, judged by ``classifier``.

    ``target`` is the class distribution for tvd (the ensemble's; uniform when None). Returns
    ``{"classifier": record, "samples": n, "seed": seed, "metrics": {...}}``.
    """
    import torch

    from mustangs.judge import classifier_store
    from mustangs.judge.evaluation import real_stats, stats_of_tensor
    from mustangs.judge.metrics import protocol_suffix, score

    from serving.sampler import OnnxSampler

    if n < 6:
        raise UserError(f"--score-samples must be at least 6 (got {n})")
    clf, record = classifier_store.load_checked(classifier, dataset, force=force, what="the ensemble", log=log)
    x = torch.from_numpy(np.asarray(OnnxSampler(model_path, threads=threads).sample(n, seed), np.float32))
    stats = stats_of_tensor(clf, x)
    try:
        real = real_stats(dataset, "test", clf, data_dir=data_dir)
    except UserError as exc:
        real = None
        if log is not None:
            log(f"note: no real {dataset} test split found; scoring tvd and is only (pass --data-dir DIR again: "
                "a classifier does not remember the folder it was trained from)")
    if target is not None and len(target) != clf.num_classes:
        target = None  # the ensemble's target was over another classifier's classes (forced judge)
    metrics = score(stats, real, None if target is None else np.asarray(target, np.float64),
                    ("fid", "tvd", "is") if real is not None else ("tvd", "is"))
    if real is not None:
        from mustangs.judge.features import features_of_tensor, real_features
        from mustangs.judge.manifold import RealManifold, diversity_scores

        m = min(n, 1000)
        real_f = real_features(dataset, "test", clf, m, data_dir=data_dir)
        metrics.update(diversity_scores(RealManifold.of(real_f), features_of_tensor(clf, x[:m]),
                                        f"cls{protocol_suffix(m)}"))
    return {"classifier": record, "samples": int(n), "seed": int(seed), "metrics": metrics}


def ensemble_dataset(ensemble) -> str:
    """The dataset an ensemble's generators were trained on: its ``dataset`` field, else its pool's."""
    from mustangs.pool.format import read_pool

    if ensemble.meta.get("dataset"):
        return str(ensemble.meta["dataset"])
    for member in ensemble.members:
        if member.pool:
            try:
                return read_pool(member.pool).dataset
            except UserError:
                continue
    raise UserError("the ensemble does not say which dataset its generators were trained on (no 'dataset' field "
                    "and no readable pool); cannot check the classifier")


def add_metadata(model_path: str | Path, entries: dict[str, str]) -> None:
    """Add (or replace) ``metadata_props`` entries of an ONNX file, rewriting it atomically."""
    import onnx

    from mustangs.io.atomic import atomic_path

    model = onnx.load_model(str(model_path), load_external_data=False)
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for key, value in keep + list(entries.items()):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    with atomic_path(Path(model_path)) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=False)


def record_scores(model_path: str | Path, verdict: dict) -> None:
    """Store a :func:`judge_model` verdict in the model as ``mustangs.served_scores``."""
    add_metadata(model_path, {SERVED_SCORES_KEY: json.dumps(verdict)})


__all__ = ["judge_model", "ensemble_dataset", "add_metadata", "record_scores", "SERVED_SCORES_KEY"]
