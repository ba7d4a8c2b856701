"""What a run folder may hold, and what may change when a run is resumed.

A fresh run refuses a folder holding anything it would not have written itself; a resumed run
refuses a config that differs from its checkpoint's beyond :data:`RESUMABLE_CHANGES`.
"""

from __future__ import annotations

from pathlib import Path

from trainer.config import TrainConfig
from trainer.configio import to_dict


#: Config keys that may change when a run is resumed (everything else must match).
RESUMABLE_CHANGES = {"coevolution.generations", "device", "threads", "batching", "adam", "output.report",
                     "output.sample_every", "eval.fid_samples", "eval.diversity_samples", "eval.inception",
                     "eval.inception_samples", "output.tensorboard"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict, new: dict) -> list[str]:
    """Keys whose values differ between a checkpoint's config and the resumed one (beyond those allowed).

    A checkpoint written before a key existed holds that key at its default; a retired value name
    (e.g. ``adversary: own``) counts as its new name, so upgrading Mustangs never strands a run.
    One exception: a checkpoint written before ``network.init`` existed was initialised the
    ``torch`` way, which the default ``auto`` is not for the DCGAN archs; since the init acts only
    when a run starts (a resumed run keeps its checkpoint's weights), such a checkpoint accepts
    any ``network.init``. A checkpoint that records the key must be resumed with the same value.
    """
    from trainer.config import ADVERSARY_RENAMES

    a = {**_flat(to_dict(TrainConfig())), **_flat(old)}
    a["coevolution.adversary"] = ADVERSARY_RENAMES.get(a.get("coevolution.adversary"), a.get("coevolution.adversary"))
    b = _flat(new)
    if "network.init" not in _flat(old):
        a["network.init"] = b.get("network.init")
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES)


#: What a run writes before its first checkpoint: name -> pattern of the names allowed inside (folders).
RUN_FILES = {"config.yaml": None, "metrics.jsonl": None, "samples": r"gen-\d{6}\.png",
              "checkpoints": r"gen-\d{6}\.safetensors|rank-\d+", "report.html": None, "report": r"[a-z_]+\.png",
              "metrics": r"rank-\d+\.jsonl",
              "tensorboard": r"events\.out\.tfevents\.[\w.\-]+"}


def foreign_files(out: Path) -> list[str]:
    """Entries of ``out`` that a run without a checkpoint would not have written (at most 3)."""
    import re

    from mustangs.io.atomic import is_temp_name

    bad = []
    for p in sorted(out.iterdir()):
        if is_temp_name(p.name):
            continue
        if p.name not in RUN_FILES:
            bad.append(p.name)
            continue
        pattern = RUN_FILES[p.name]
        if (pattern is None) == p.is_dir() or p.is_symlink():
            bad.append(p.name)
        elif pattern is not None:
            bad += [f"{p.name}/{q.name}" for q in sorted(p.iterdir())
                    if not (re.fullmatch(pattern, q.name) or is_temp_name(q.name))]
    return bad[:3]


def remove_run_files(out: Path) -> None:
    """Remove the files of a run that stopped before its first checkpoint (checked by :func:`foreign_files`)."""
    import shutil

    for name, pattern in RUN_FILES.items():
        p = out / name
        if pattern is not None and p.is_dir():
            shutil.rmtree(p)
        elif name != "config.yaml" and p.is_file():
            p.unlink()
