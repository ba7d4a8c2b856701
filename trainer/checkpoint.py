"""Checkpoints that resume a run exactly: safetensors for tensors, JSON for the rest, no pickle.

Layout of ``runs/<name>/checkpoints/``::

    gen-000012.safetensors   every tensor: stacked G/D params, buffers, Adam moments and
                             steps, learning rates, mixture weights, each cell's RNG states
    gen-000012.json          generation, metrics position, config, sha256 of the tensors file
    index.json               {"latest": …, "previous": …}: file names and sha256 of each JSON

Every file is written atomically and the index last, so a crash leaves the previous complete
checkpoint. The latest and the previous checkpoint are kept; loading verifies hashes and
falls back to the previous one, with a warning, when the latest is truncated or corrupt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import torch
from safetensors import SafetensorError
from pydantic import Field
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from mustangs.errors import UserError
from mustangs.io.atomic import atomic_path, sha256_file, write_text_atomic
from mustangs.io.faults import kill_point
from mustangs.io.loaders import read_json_file
from mustangs.io.validation import Open, SafeName, Sha256, Strict, validate
from trainer.batched import NetState

CHECKPOINT_FORMAT = "mustangs-checkpoint/1"
#: Per-cell founder lineages (absent from checkpoints written before they were tracked).
LINEAGE_KEYS = ("lineage_g", "lineage_d")


# --------------------------------------------------------------------------- file schemas

class CheckpointEntry(Strict):
    """An entry of ``checkpoints/index.json``."""

    generation: int = Field(ge=0)
    json_name: SafeName = Field(alias="json")
    json_sha256: Sha256


class CheckpointIndex(Strict):
    """``checkpoints/index.json``: the latest and the previous checkpoint."""

    latest: CheckpointEntry
    previous: CheckpointEntry | None = None


class CheckpointDoc(Open):
    """``checkpoints/gen-NNNNNN.json`` (extra keys: whatever the run stores with it)."""

    format: Literal["mustangs-checkpoint/1"]
    generation: int = Field(ge=0)
    tensors: SafeName
    tensors_sha256: Sha256
    config: dict[str, Any]
    metrics_bytes: int = Field(0, ge=0)
    last_fid: dict[str, Any] = Field(default_factory=dict)
    cells: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)


def block_tensors(block) -> dict[str, torch.Tensor]:
    """All tensors of a :class:`~trainer.coevolution.Block` under flat names (CPU, contiguous)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, state in (("G", block.G), ("D", block.D)):
        for k, t in state.tensors().items():
            out[f"{prefix}.{k}"] = t
    out["lr_g"], out["lr_d"], out["mix_w"] = block.lr_g, block.lr_d, block.mix_w
    out["rng_train"] = torch.stack([g.get_state() for g in block.rng_train])
    out["rng_eval"] = torch.stack([g.get_state() for g in block.rng_eval])
    out["lineage_g"], out["lineage_d"] = block.lineage_g, block.lineage_d
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def restore_block(block, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    """Overwrite a freshly initialised block with checkpointed tensors (shapes must match)."""
    fresh = block_tensors(block)
    tensors = dict(tensors)
    for k in LINEAGE_KEYS:   # checkpoints written before lineages were tracked: founders = own cell
        tensors.setdefault(k, fresh[k])
    if set(fresh) != set(tensors):
        missing = sorted(set(fresh) - set(tensors))[:3]
        raise UserError(f"checkpoint does not fit this config (missing tensors {missing}); "
                        f"resume with the config the run was started with")
    for k, t in tensors.items():
        if t.shape != fresh[k].shape or t.dtype != fresh[k].dtype:
            raise UserError(f"checkpoint tensor '{k}' has shape {tuple(t.shape)}, this config needs "
                            f"{tuple(fresh[k].shape)}; resume with the config the run was started with")

    def state(prefix: str) -> NetState:
        flat = {k[len(prefix) + 1:]: v.to(device) for k, v in tensors.items() if k.startswith(prefix + ".")}
        return NetState.from_tensors(flat)

    block.G, block.D = state("G"), state("D")
    block.lr_g = tensors["lr_g"].to(device).clone()
    block.lr_d = tensors["lr_d"].to(device).clone()
    block.mix_w = tensors["mix_w"].clone()
    for g, s in zip(block.rng_train, tensors["rng_train"]):
        g.set_state(s.clone())
    for g, s in zip(block.rng_eval, tensors["rng_eval"]):
        g.set_state(s.clone())
    block.lineage_g = tensors["lineage_g"].clone()
    block.lineage_d = tensors["lineage_d"].clone()


def save_checkpoint(folder: str | Path, generation: int, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any]) -> Path:
    """Write checkpoint ``generation`` atomically, update the index, keep only latest + previous."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"gen-{generation:06d}"
    with atomic_path(folder / f"{stem}.safetensors") as tmp:
        tmp.write_bytes(safetensors_bytes(tensors))  # not save_file: it makes a temp file of its own
        kill_point("checkpoint-tmp")
    kill_point("checkpoint-tensors")
    tensor_sha = sha256_file(folder / f"{stem}.safetensors")
    doc = {"format": CHECKPOINT_FORMAT, "generation": generation, "tensors": f"{stem}.safetensors",
           "tensors_sha256": tensor_sha, **meta}
    write_text_atomic(folder / f"{stem}.json", json.dumps(doc, indent=1))
    kill_point("checkpoint-json")
    index = _read_index(folder)
    entry = {"generation": generation, "json": f"{stem}.json", "json_sha256": sha256_file(folder / f"{stem}.json")}
    previous = index.get("latest") if index and index.get("latest", {}).get("json") != entry["json"] else \
        (index or {}).get("previous")
    write_text_atomic(folder / "index.json", json.dumps({"latest": entry, "previous": previous}, indent=1))
    keep = {entry["json"], entry["json"].replace(".json", ".safetensors")}
    if previous:
        keep |= {previous["json"], previous["json"].replace(".json", ".safetensors")}
    for p in folder.glob("gen-*"):
        if p.name not in keep:
            p.unlink(missing_ok=True)
    return folder / f"{stem}.json"


def _read_index(folder: Path) -> dict | None:
    """``index.json`` checked against its schema, or ``None`` when missing or unusable."""
    try:
        data = read_json_file(folder / "index.json", "checkpoint index", max_bytes=1 << 20)
        return validate(CheckpointIndex, data, "index.json").model_dump(by_alias=True)
    except UserError:
        return None


def _load_one(folder: Path, json_name: str, json_sha: str | None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Load and verify one checkpoint; raises ValueError saying what is wrong."""
    jpath = folder / json_name
    if not jpath.is_file():
        raise ValueError(f"{jpath.name} is missing")
    if json_sha is not None and sha256_file(jpath) != json_sha:
        raise ValueError(f"{jpath.name} does not match its sha256 in index.json (truncated or corrupt)")
    try:
        doc = read_json_file(jpath, "checkpoint", max_bytes=16 << 20)
    except UserError:
        raise ValueError(f"{jpath.name} is not valid JSON (truncated or corrupt)") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{jpath.name} is not a Mustangs checkpoint")
    try:
        validate(CheckpointDoc, doc, jpath.name)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    tpath = folder / str(doc.get("tensors"))
    if not tpath.is_file():
        raise ValueError(f"{tpath.name} is missing")
    if sha256_file(tpath) != doc.get("tensors_sha256"):
        raise ValueError(f"{tpath.name} does not match its sha256 (truncated or corrupt)")
    try:
        tensors = load_file(str(tpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{tpath.name} is unreadable ({exc})") from None
    return doc, tensors


def has_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds any checkpoint files (good or bad)."""
    folder = Path(folder)
    return (folder / "index.json").exists() or any(folder.glob("gen-*.json"))


def load_checkpoint(folder: str | Path, log: Callable[[str], None] = print) -> tuple[dict, dict[str, torch.Tensor]]:
    """The newest verified checkpoint in ``folder`` as ``(meta, tensors)``.

    Tries the index's latest, then its previous; without a readable index, every
    ``gen-*.json`` newest first. A bad candidate is reported with one warning line.
    """
    folder = Path(folder)
    index = _read_index(folder)
    candidates: list[tuple[str, str | None]] = []
    if index is not None:
        for key in ("latest", "previous"):
            e = index.get(key)
            if isinstance(e, dict) and "json" in e:
                candidates.append((str(e["json"]), e.get("json_sha256")))
    else:
        if (folder / "index.json").exists():
            log(f"warning: {folder / 'index.json'} is unreadable; looking for checkpoints by name")
        candidates = [(p.name, None) for p in sorted(folder.glob("gen-*.json"), reverse=True)]
    if not candidates:
        raise UserError(f"no checkpoint found in {folder}")
    problems = []
    for i, (name, sha) in enumerate(candidates):
        try:
            doc, tensors = _load_one(folder, name, sha)
        except ValueError as exc:
            problems.append(str(exc))
            nxt = f"; falling back to {candidates[i + 1][0]}" if i + 1 < len(candidates) else ""
            log(f"warning: checkpoint {folder / name} is unusable: {exc}{nxt}")
            continue
        return doc, tensors
    raise UserError(f"no usable checkpoint in {folder}: " + "; ".join(problems))
