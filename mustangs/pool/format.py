"""The pool format: the generators a training run leaves behind.

A pool is a folder::

    pool/manifest.json        format, network spec, dataset, generators (id, file, sha256,
                              origin, scores), per-cell mixtures
    pool/<id>.safetensors     one generator's weights (no pickle)

Pools are written atomically (a crash leaves the old pool or none) and every load checks
the manifest, the files' hashes and that weights are finite.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from mustangs.errors import UserError
from mustangs.io.atomic import atomic_dir, sha256_file
from mustangs.io.faults import kill_point
from mustangs.io.loaders import read_json_file
from mustangs.io.validation import validate
from mustangs.pool.manifest import PoolManifest
from mustangs.pool.networks import NetSpec, build_generator, check_network_memory

POOL_FORMAT = "mustangs-pool/1"


@dataclass
class PoolEntry:
    """One generator of a pool: its id, weights file, hash, where it came from and its scores."""

    id: str
    file: str
    sha256: str
    origin: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pool:
    """A loaded pool manifest; generators are built on demand with :meth:`load_generator`."""

    root: Path
    spec: NetSpec
    dataset: str
    entries: list[PoolEntry]
    mixtures: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, entry: PoolEntry) -> Path:
        """Absolute path of an entry's weights file; it must resolve inside the pool folder."""
        root = self.root.resolve()
        path = (root / entry.file).resolve()
        if root not in path.parents:
            raise UserError(f"pool {self.root}: generator '{entry.id}' file {entry.file!r} resolves to {path}, "
                            "outside the pool folder; refusing to read it")
        return path

    def load_generator(self, index: int, *, check_hash: bool = True) -> nn.Module:
        """Build generator ``index`` with its weights, in eval mode, on the CPU."""
        entry = self.entries[index]
        return load_generator_file(self.path(entry), self.spec,
                                   expected_sha256=entry.sha256 if check_hash else None)

    def load_generators(self) -> list[nn.Module]:
        """All generators of the pool, in manifest order."""
        return [self.load_generator(i) for i in range(len(self))]


def load_generator_file(path: str | Path, spec: NetSpec, *, expected_sha256: str | None = None) -> nn.Module:
    """Build a generator for ``spec`` from a safetensors file, refusing corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"generator file {path} does not exist")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise UserError(f"generator file {path} does not match the hash in its manifest (changed or corrupt)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file: {exc}") from None
    model = build_generator(spec)
    expected = model.state_dict()
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))[:3]
        unexpected = sorted(set(state) - set(expected))[:3]
        raise UserError(f"{path} does not hold a '{spec.arch}' generator "
                        f"(missing {missing}, unexpected {unexpected})")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(f"{path}: tensor '{key}' has shape {tuple(tensor.shape)}, "
                            f"expected {tuple(expected[key].shape)} for {spec}")
        if tensor.is_floating_point() != expected[key].is_floating_point():
            # Decision (issue 23): a float tensor stored as int32 (or a counter stored as float) is a
            # foreign or damaged file, not a rounding choice: refused, never cast. Float16/bfloat16/
            # float64 weights are a precision choice and are cast to the network's float32.
            raise UserError(f"{path}: tensor '{key}' has dtype {str(tensor.dtype).removeprefix('torch.')}, "
                            f"expected a {'floating-point' if expected[key].is_floating_point() else 'integer'} "
                            "tensor; write the pool with float weights")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{path}: tensor '{key}' holds NaN or infinite values")
    model.load_state_dict(state)
    return model.eval()


def save_generator_file(path: str | Path, model: nn.Module) -> None:
    """Write a generator's state dict as safetensors (contiguous CPU tensors).

    Serialised to bytes and written by Python, not by ``safetensors.save_file``: that one makes a
    temporary file of its own beside ``path`` and reports a full disk as its own error type.
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = safetensors_bytes(state)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def write_pool(root: str | Path, spec: NetSpec, dataset: str, generators: list[tuple[str, nn.Module, Mapping]],
               *, mixtures: list[dict] | None = None, extra: Mapping[str, Any] | None = None) -> Pool:
    """Write a pool atomically.

    ``generators`` holds ``(id, module, info)`` where ``info`` may carry ``origin`` and
    ``scores`` dicts. ``mixtures`` lists per-cell mixture weights over generator ids.
    """
    if not generators:
        raise UserError("refusing to write an empty pool")
    root = Path(root)
    with atomic_dir(root) as tmp:
        entries = []
        for gid, model, info in generators:
            fname = f"{gid}.safetensors"
            save_generator_file(tmp / fname, model)
            entries.append(PoolEntry(gid, fname, sha256_file(tmp / fname),
                                     dict(info.get("origin", {})), dict(info.get("scores", {}))))
        manifest = {
            "format": POOL_FORMAT,
            "network": spec.to_json(),
            "dataset": dataset,
            "generators": [e.__dict__ for e in entries],
            "mixtures": list(mixtures or []),
            **dict(extra or {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        kill_point("pool-tmp")
    return read_pool(root)


def read_pool(root: str | Path) -> Pool:
    """Read and check a pool's manifest (weights are loaded lazily)."""
    root = Path(root)
    if root.name == "manifest.json" and root.is_file():
        root = root.parent
    elif not root.is_dir():
        raise UserError(f"{root} is not a pool folder (expected {root}/manifest.json)")
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{root} is not a pool folder: manifest.json is missing")
    data = read_json_file(manifest_path, "pool manifest")
    if not isinstance(data, dict) or data.get("format") != POOL_FORMAT:
        raise UserError(f"{manifest_path} is not a Mustangs pool manifest (format != {POOL_FORMAT})")
    if data.get("generators") == []:
        raise UserError(f"pool {root} holds no generators")
    doc = validate(PoolManifest, data, str(manifest_path))
    spec = NetSpec.from_json(doc.network.model_dump())
    check_network_memory(spec, str(manifest_path))
    entries = [PoolEntry(g.id, g.file, g.sha256, g.origin.model_dump(exclude_unset=True), dict(g.scores))
               for g in doc.generators]
    ids = [e.id for e in entries]
    dup = next((i for i, n in Counter(ids).items() if n > 1), None)
    if dup is not None:
        raise UserError(f"{manifest_path}: generator id '{dup}' appears more than once")
    for j, mix in enumerate(doc.mixtures):
        unknown = sorted(set(mix.weights) - set(ids))[:3]
        if unknown:
            raise UserError(f"{manifest_path}: mixtures.{j}.weights names unknown generators {unknown}")
    known = {"format", "network", "dataset", "generators", "mixtures"}
    extra = {k: v for k, v in data.items() if k not in known}
    pool = Pool(root.resolve(), spec, doc.dataset, entries, [m.model_dump() for m in doc.mixtures], extra)
    for e in entries:
        pool.path(e)  # every member file must resolve inside the pool (no absolute or ../ names)
    return pool
