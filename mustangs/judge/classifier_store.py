"""Where evaluation classifiers live, which one judges a result, and the record of that choice.

A classifier is a pair of files the user owns: ``classifier-<dataset>.safetensors`` and the JSON
beside it (dataset, test accuracy, sha256, architecture). ``trainer classifier train --dataset D``
writes them to ``$MUSTANGS_CACHE/classifiers/D/`` unless ``--out DIR`` says otherwise; nothing is
ever written into the installed package. Every scoring command takes ``--classifier NAME_OR_DIR``
and looks it up in this order:

1. **explicit**: a folder holding one ``classifier-*.json`` (or ``classifier.json``), or the
   ``.json`` / ``.safetensors`` file itself;
2. **cache**: ``$MUSTANGS_CACHE/classifiers/NAME/`` (NAME defaults to the data's dataset);
3. **shipped**: ``classifier-NAME.*`` inside the package (Fashion-MNIST ships with Mustangs).

The 2-D toys (``rings``, ``grid25``) have analytic classifiers (no files). The dataset a classifier was trained for is
read from its JSON; judging another dataset's samples with it is refused (one line naming
both) unless the caller forces it, and :meth:`ClassifierRef.record` says so in the result.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from typing import TYPE_CHECKING

from mustangs.errors import UserError
from mustangs.judge.classifier_assets import POINT_HASHES, asset_paths
from mustangs.names import TRAINABLE

if TYPE_CHECKING:   # annotations only: listing and resolving classifiers never imports torch
    import torch
    from torch import nn

#: Sub-folder of ``$MUSTANGS_CACHE`` that holds user-trained classifiers, one folder per name.
CACHE_SUBDIR = "classifiers"


def shipped_dir() -> Path:
    """The package's folder of shipped classifiers (read-only: nothing is written there)."""
    from mustangs.judge.classifier_assets import ASSETS_DIR

    return ASSETS_DIR


def cache_root() -> Path:
    """``$MUSTANGS_CACHE/classifiers`` (``~/.cache/mustangs/classifiers`` by default)."""
    from mustangs.names import default_cache_dir

    return default_cache_dir() / CACHE_SUBDIR


def default_out_dir(dataset: str) -> Path:
    """Where ``trainer classifier train --dataset D`` writes without ``--out``: the cache's ``D/``."""
    return cache_root() / dataset


@dataclass(frozen=True)
class ClassifierRef:
    """A resolved classifier: its files, the dataset it was trained for and its hash."""

    name: str                  # short name: the NAME looked up, or the folder/file it came from
    dataset: str               # dataset it was trained for (from its JSON)
    sha256: str                # hash of the weights file (checked at load)
    source: str                # explicit | cache | shipped | analytic
    weights: Path | None = None  # the .safetensors file (None for analytic classifiers)
    meta: Path | None = None     # the JSON beside it
    info: dict | None = None     # the JSON's content

    def record(self, forced: bool = False) -> dict:
        """What results store about their judge: name, dataset, sha256, source, accuracy, forced."""
        out = {"name": self.name, "dataset": self.dataset, "sha256": self.sha256, "source": self.source}
        if self.info and self.info.get("test_accuracy") is not None:
            out["test_accuracy"] = self.info["test_accuracy"]
        out["forced"] = bool(forced)
        return out

    def describe(self) -> str:
        """One phrase for logs: ``'mnist' (mnist, cache, sha256 1a2b3c4d…)``."""
        return f"'{self.name}' ({self.dataset}, {self.source}, sha256 {self.sha256[:12]}…)"


def _train_hint(dataset: str) -> str:
    return f"train one with: trainer classifier train --dataset {dataset}"


def _read_info(meta: Path, weights: Path) -> dict:
    if not meta.is_file() or not weights.is_file():
        missing = weights if not weights.is_file() else meta
        raise UserError(f"classifier file {missing} is missing (a classifier is a .safetensors file with its "
                        f".json beside it)")
    try:
        info = json.loads(meta.read_text())
        for key in ("sha256", "num_classes", "feature_dim", "dataset"):
            info[key]
        str(info["dataset"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{meta} is unreadable or not a classifier description ({type(exc).__name__}: {exc})") \
            from None
    return info


def _ref_from_meta(meta: Path, name: str, source: str) -> ClassifierRef:
    stem = meta.name[:-len(".json")]
    weights = meta.with_name(f"{stem}.safetensors")
    info = _read_info(meta, weights)
    return ClassifierRef(name, str(info["dataset"]), str(info["sha256"]), source, weights, meta, info)


def _meta_in_folder(folder: Path) -> Path | None:
    """The one classifier JSON in ``folder`` (``classifier-*.json`` or ``classifier.json``), or None."""
    found = sorted(folder.glob("classifier-*.json")) + sorted(folder.glob("classifier.json"))
    if len(found) > 1:
        raise UserError(f"{folder} holds several classifiers ({', '.join(p.name for p in found)}); "
                        f"pass one of the .json files to --classifier")
    return found[0] if found else None


def _explicit(path: Path) -> ClassifierRef:
    if path.is_dir():
        meta = _meta_in_folder(path)
        if meta is None:
            raise UserError(f"--classifier {path}: no classifier-*.json in that folder; "
                            f"{_train_hint('DATASET')} --out {path}")
        return _ref_from_meta(meta, path.resolve().name, "explicit")
    if path.suffix == ".json":
        return _ref_from_meta(path, path.stem.removeprefix("classifier-"), "explicit")
    if path.suffix == ".safetensors":
        return _ref_from_meta(path.with_suffix(".json"), path.stem.removeprefix("classifier-"), "explicit")
    raise UserError(f"--classifier {path}: expected a folder, a classifier .json or a .safetensors file")


def _analytic(name: str) -> ClassifierRef:

    return ClassifierRef(name, name, POINT_HASHES[name], "analytic")


def available() -> list[str]:
    """Names that ``--classifier NAME`` finds now (cache first, then shipped, then analytic)."""
    names = []
    root = cache_root()
    if root.is_dir():
        names += sorted(p.name for p in root.iterdir() if p.is_dir() and _safe_meta(p) is not None)
    names += sorted(p.name[len("classifier-"):-len(".json")] for p in shipped_dir().glob("classifier-*.json"))
    from mustangs.names import POINT_DATASETS

    return list(dict.fromkeys(names + list(POINT_DATASETS)))


def _safe_meta(folder: Path) -> Path | None:
    try:
        return _meta_in_folder(folder)
    except UserError:
        return None


def _by_name(name: str) -> ClassifierRef | None:
    from mustangs.names import POINT_DATASETS

    if name in POINT_DATASETS:
        return _analytic(name)
    folder = cache_root() / name
    if folder.is_dir():
        meta = _meta_in_folder(folder)
        if meta is not None:
            return _ref_from_meta(meta, name, "cache")
    meta = shipped_dir() / f"classifier-{name}.json"
    if meta.is_file():
        return _ref_from_meta(meta, name, "shipped")
    return None


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith((".", "~")) or spec.endswith((".json", ".safetensors"))


def resolve(spec: str | None, dataset: str | None = None) -> ClassifierRef:
    """The classifier ``--classifier spec`` names (``None``: the one for ``dataset``).

    Lookup order: explicit path → ``$MUSTANGS_CACHE/classifiers/NAME`` → shipped. Raises a
    one-line ``UserError`` with the remedy when nothing is found.
    """
    if spec is not None and str(spec).strip():
        spec = str(spec).strip()
        path = Path(spec).expanduser()
        if path.exists():
            return _explicit(path)
        if _looks_like_path(spec):
            raise UserError(f"--classifier {spec}: no such file or folder")
        ref = _by_name(spec)
        if ref is None:
            raise UserError(f"no classifier named '{spec}' (looked in {cache_root() / spec} and the package; "
                            f"available: {', '.join(available())}); {_train_hint(spec)} or pass --classifier DIR")
        return ref
    if not dataset:
        raise UserError("no dataset to pick a classifier for; pass --classifier NAME_OR_DIR")
    ref = _by_name(dataset)
    if ref is None:
        raise UserError(f"no evaluation classifier for {dataset} (looked in {cache_root() / dataset} and the "
                        f"package); {_train_hint(dataset)} (writes {default_out_dir(dataset)}), or pass "
                        f"--classifier DIR")
    return ref


def check_dataset(ref: ClassifierRef, dataset: str, force: bool = False, *, what: str = "the data",
                  force_hint: str = "--force-classifier", log: Callable[[str], None] | None = None) -> bool:
    """Refuse a classifier trained for another dataset than ``dataset``; returns whether it was forced.

    With ``force`` the mismatch is allowed, logged as a warning, and the caller records
    ``forced: true`` (via :meth:`ClassifierRef.record`).
    """
    if not dataset or ref.dataset == dataset:
        return False
    if not force:
        raise UserError(f"classifier {ref.name!r} was trained on {ref.dataset} but {what} holds {dataset} data; pass "
                        f"--classifier with a {dataset} classifier ({_train_hint(dataset)}), or {force_hint} "
                        f"to judge it anyway")
    (log or (lambda m: print(m, file=sys.stderr)))(
        f"warning: judging {dataset} with classifier {ref.name!r} trained on {ref.dataset} (forced); "
        f"the result records forced: true")
    return True


def load(ref: ClassifierRef, device: str | torch.device = "cpu") -> nn.Module:
    """The classifier ``ref`` names, in eval mode on ``device``, hash-checked.

    The module carries ``.sha256``, ``.info`` and ``.ref``. A file whose hash differs from its
    JSON (corrupt or replaced) is refused rather than allowed to produce wrong metrics.
    """
    from mustangs.io.atomic import sha256_file
    from mustangs.judge.classifier import PointModesClassifier, build_from_info

    if ref.source == "analytic":
        model = PointModesClassifier(ref.dataset).to(device)
        model.ref = ref
        return model
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    digest = sha256_file(ref.weights)
    if digest != ref.sha256:
        raise UserError(f"{ref.weights} does not match the sha256 in {ref.meta} (corrupt or replaced file); "
                        f"{_train_hint(ref.dataset)}")
    try:
        model = build_from_info(ref.info)
        model.load_state_dict(load_file(str(ref.weights)), strict=True)
    except (SafetensorError, RuntimeError, OSError, KeyError, ValueError, TypeError) as exc:
        raise UserError(f"cannot load classifier {ref.weights}: {str(exc).splitlines()[0]}") from None
    model.sha256 = digest
    model.info = ref.info
    model.ref = ref
    return model.to(device).eval()


def load_checked(spec: str | None, dataset: str, device: str | torch.device = "cpu", force: bool = False, *,
                 what: str = "the data", force_hint: str = "--force-classifier",
                 log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict]:
    """Resolve, check against ``dataset`` and load: ``(module, record)`` in one call."""
    ref = resolve(spec, dataset)
    forced = check_dataset(ref, dataset, force, what=what, force_hint=force_hint, log=log)
    return load(ref, device), ref.record(forced)


# --------------------------------------------------------------------------- by dataset or folder

def read_classifier_info(dataset: str, folder: str | Path | None = None) -> dict:
    """The JSON beside the classifier for ``dataset`` (dataset, test_accuracy, sha256, feature_dim, ...).

    ``folder`` given: ``classifier-<dataset>.json`` in it. Otherwise the lookup of
    :func:`mustangs.judge.resolve` (``$MUSTANGS_CACHE/classifiers/<dataset>/``, then
    the package).
    """
    if dataset not in TRAINABLE:
        raise UserError(f"no evaluation classifier for dataset '{dataset}'; classifiers exist for "
                        f"{', '.join(TRAINABLE)} (trained) and {', '.join(POINT_HASHES)} (analytic)")
    if folder is None:
        return dict(resolve(None, dataset).info)
    weights, meta = asset_paths(dataset, folder)
    if not meta.is_file() or not weights.is_file():
        raise UserError(f"no evaluation classifier for {dataset} ({weights} missing); train it with: trainer classifier train --dataset {dataset}")
    info = _read_info(meta, weights)
    if info.get("dataset", dataset) != dataset:
        raise UserError(f"{meta} describes a classifier for {info.get('dataset')}, not {dataset}; "
                        f"train it with: trainer classifier train --dataset {dataset}")
    return info


def classifier_sha256(dataset: str) -> str:
    """The hash that identifies the classifier for ``dataset`` (keys caches of real statistics).

    The sha256 recorded in the JSON of the classifier the default lookup finds; a fixed string
    for ``rings``.
    """
    return resolve(None, dataset).sha256


def load_classifier(dataset: str = "fashion-mnist", device: str | torch.device = "cpu",
                    folder: str | Path | None = None) -> nn.Module:
    """The evaluation classifier for ``dataset``, in eval mode on ``device``.

    Without ``folder`` the default lookup (user cache, then the package; see
    :mod:`mustangs.judge.classifier_store`); with ``folder`` the ``classifier-<dataset>.*`` files in it.
    The sha256 of the weights is checked against the JSON (a mismatch means a corrupt or foreign
    file: refuse rather than produce wrong metrics). The 2-D toys get the analytic
    :class:`PointModesClassifier`. The module carries ``.sha256`` and ``.ref``.
    """
    if dataset in POINT_HASHES:
        return load(resolve(None, dataset), device)
    if folder is None:
        return load(resolve(None, dataset), device)
    info = read_classifier_info(dataset, folder)
    _, meta = asset_paths(dataset, folder)
    ref = ClassifierRef(Path(folder).resolve().name, dataset, str(info["sha256"]), "explicit",
                                         meta.with_suffix(".safetensors"), meta, info)
    return load(ref, device)


__all__ = ["ClassifierRef", "resolve", "check_dataset", "load", "load_checked", "available", "cache_root",
           "default_out_dir", "shipped_dir", "CACHE_SUBDIR", "load_classifier", "read_classifier_info",
           "classifier_sha256"]
