"""The ensemble: chosen generators with mixture weights, and the ``ensemble.json`` format.

``ensemble.json`` records, for each member, the pool it came from, its weights file (path
relative to the JSON file when possible) and sha256, and its mixture weight, plus how the
weights were found (method, objective, budget, seed, time) and the metrics, both
``estimated`` from statistics and ``verified`` by sampling.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mustangs.errors import UserError
from mustangs.io.atomic import write_text_atomic
from mustangs.pool.format import Pool, load_generator_file
from mustangs.pool.networks import NetSpec, balanced_labels

ENSEMBLE_FORMAT = "mustangs-ensemble/1"


@dataclass
class Member:
    """One generator of an ensemble and where its weights live."""

    id: str
    path: Path
    sha256: str
    weight: float
    pool: str = ""
    origin: dict[str, Any] = field(default_factory=dict)


def _normalise(weights) -> np.ndarray:
    """Weights scaled to sum 1; scaled by their maximum first, so huge values (1e308) cannot overflow."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.max() <= 0:
        shown = w.tolist() if w.size <= 8 else f"{w[:8].tolist()}..."
        raise UserError(f"mixture weights must be finite, non-negative and not all zero; got {shown}")
    w = w / w.max()
    return w / w.sum()


def _check_member_file(ensemble_path: Path | str, member_id: str, file: Path, sha256: str, pools: dict) -> None:
    """A member's weights must be a ``.safetensors`` file listed (same name and sha256) in its pool's manifest."""
    from mustangs.pool.format import read_pool

    where = f"{ensemble_path}: member '{member_id}'"
    if file.suffix != ".safetensors":
        raise UserError(f"{where}: {file} is not a .safetensors weights file")
    if not (file.parent / "manifest.json").is_file():
        raise UserError(f"{where}: {file} does not lie in a pool folder (no manifest.json beside it)")
    pool = pools.get(file.parent)
    if pool is None:
        pool = pools.setdefault(file.parent, read_pool(file.parent))
    if not any(pool.path(e) == file and e.sha256 == sha256 for e in pool.entries):
        raise UserError(f"{where}: {file.name} with that sha256 is not a generator of the pool {file.parent}")


def parse_labels(text: str, classes: tuple[str, ...] | None, n: int) -> list[int]:
    """``--labels`` (comma-separated class names or indices) as ``n`` class indices, taken in turn.

    Raises ``UserError`` for an unconditional ensemble, an unknown name (the classes are listed)
    or an index out of range.
    """
    if not classes:
        raise UserError("--labels needs a conditional ensemble (its pool has network.classes); this one is not")
    out = []
    for item in (s.strip() for s in text.split(",")):
        if item in classes:
            out.append(classes.index(item))
        elif item.isdigit() and int(item) < len(classes):
            out.append(int(item))
        else:
            raise UserError(f"--labels: unknown class '{item}'; classes are "
                            f"{', '.join(repr(c) for c in classes)} (or indices 0..{len(classes) - 1})")
    return [out[i % len(out)] for i in range(n)]


class Ensemble:
    """A mixture of generators that samples like one generator.

    Each sample first draws its component ``k`` with probability ``weights[k]``, then runs
    generator ``k`` on a standard normal latent. Only generators that receive rows run.
    Conditional generators (``spec.classes``) also take each sample's class label: given ones,
    else ``0, 1, …, K−1, 0, …`` (balanced); one weight set serves every class.
    """

    def __init__(self, spec: NetSpec, generators: list[nn.Module], weights, members: list[Member] | None = None,
                 meta: dict[str, Any] | None = None):
        if len(generators) != len(np.asarray(weights)):
            raise UserError(f"{len(generators)} generators but {len(np.asarray(weights))} weights")
        self.spec = spec
        self.generators = [g.eval() for g in generators]
        self.weights = _normalise(weights)
        self.members = members or []
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pool(cls, pool: Pool, weights=None, *, indices: list[int] | None = None, drop_zero: bool = True,
                  meta: dict[str, Any] | None = None) -> "Ensemble":
        """An ensemble over a pool's generators (uniform weights unless given)."""
        indices = list(range(len(pool))) if indices is None else list(indices)
        weights = np.ones(len(indices)) if weights is None else np.asarray(weights, dtype=np.float64)
        kept = [(i, w) for i, w in zip(indices, weights) if w > 0 or not drop_zero]
        keep, kept_w = [i for i, _ in kept], [w for _, w in kept]
        members = [Member(pool.entries[i].id, pool.path(pool.entries[i]), pool.entries[i].sha256, float(w),
                          str(pool.root), pool.entries[i].origin) for i, w in zip(keep, _normalise(kept_w))]
        gens = [pool.load_generator(i) for i in keep]
        return cls(pool.spec, gens, kept_w, members, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Ensemble":
        """Load ``ensemble.json`` and its generators, checking the schema and every file's hash.

        Each member file must be a ``.safetensors`` listed with the same sha256 in the manifest of
        the pool folder it lies in (so a hand-edited path cannot make us open other files).
        Members that name the same weights (same sha256) are merged, their weights summed: the
        mixture is the same, and each generator runs once.
        """
        from ensembler.schema import EnsembleDoc
        from mustangs.io.loaders import read_document

        path = Path(path)
        data, doc = read_document(path, "ensemble file", ENSEMBLE_FORMAT, EnsembleDoc)
        meta = {k: v for k, v in data.items() if k not in ("format", "network", "members")}
        return cls.from_members(doc.network, doc.members, path.parent, str(path), meta)

    @classmethod
    def from_members(cls, network, members, base: Path, where: str,
                     meta: dict[str, Any] | None = None) -> "Ensemble":
        """An ensemble from a validated ``network`` (:class:`mustangs.io.validation.NetworkModel`) and ``members``
        (:class:`ensembler.schema.EnsembleMember`) — the ``ensemble.json`` layout.

        Shared by ``ensemble.json`` and the points of a ``front.json``. Member paths are relative
        to ``base``; each must be a ``.safetensors`` listed with the same sha256 in the manifest of
        the pool folder it lies in, and its hash is checked again on load. Members naming the same
        weights are merged (weights summed). ``where`` names the source in error messages.
        """
        from mustangs.pool.networks import check_network_memory

        spec = NetSpec.from_json(network.model_dump())
        check_network_memory(spec, where)
        merged: dict[str, Member] = {}
        pools: dict = {}
        top = max(m.weight for m in members)  # > 0 (schema); scaling first keeps sums finite
        for m in members:
            if m.sha256 in merged:
                merged[m.sha256].weight += m.weight / top
                continue
            file = Path(m.path)
            file = (file if file.is_absolute() else (Path(base) / file)).resolve()
            _check_member_file(where, m.id, file, m.sha256, pools)
            merged[m.sha256] = Member(m.id, file, m.sha256, m.weight / top, m.pool, dict(m.origin))
        kept = [m for m in merged.values() if m.weight > 0]
        gens = [load_generator_file(m.path, spec, expected_sha256=m.sha256) for m in kept]
        return cls(spec, gens, [m.weight for m in kept], kept, meta)

    def members_json(self, base: str | os.PathLike) -> list[dict[str, Any]]:
        """The ``members`` list as written to JSON, paths relative to the folder ``base`` when possible."""
        base = Path(base).resolve()
        members = []
        for m, w in zip(self.members, self.weights):
            try:
                rel = os.path.relpath(m.path, base)
            except ValueError:  # different drive
                rel = str(m.path)
            members.append({"id": m.id, "path": rel, "sha256": m.sha256, "weight": float(w), "pool": m.pool,
                            "origin": m.origin})
        return members

    def save(self, path: str | os.PathLike) -> None:
        """Write ``ensemble.json`` atomically; member paths are stored relative to it when possible."""
        path = Path(path)
        data = {"format": ENSEMBLE_FORMAT, "network": self.spec.to_json(), "members": self.members_json(path.parent),
                **self.meta}
        write_text_atomic(path, json.dumps(data, indent=2))

    # ------------------------------------------------------------------ sampling
    @property
    def latent_dim(self) -> int:
        return self.spec.latent_dim

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.spec.sample_shape)

    def to(self, device: str | torch.device) -> "Ensemble":
        """Move every generator to ``device``."""
        self.generators = [g.to(device) for g in self.generators]
        return self

    @property
    def device(self) -> torch.device:
        return next(self.generators[0].parameters()).device

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The class names of a conditional ensemble (label i = classes[i]), None otherwise."""
        return self.spec.classes

    def labels_tensor(self, labels: torch.Tensor | list[int] | None, n: int) -> torch.Tensor | None:
        """``labels`` (a sequence or tensor of n class indices) as a long tensor, checked; None for an
        unconditional ensemble given none; balanced labels for a conditional one given none."""
        if not self.classes:
            if labels is not None:
                raise UserError("this ensemble's generators are not conditional (the pool has no "
                                "network.classes); drop the labels")
            return None
        if labels is None:
            return balanced_labels(n, len(self.classes))
        y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if y.numel() != n:
            raise UserError(f"{y.numel()} labels for {n} samples; give one label per sample")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise UserError(f"labels must be class indices 0..{len(self.classes) - 1}")
        return y

    @torch.no_grad()
    def generate(self, z: torch.Tensor, k: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Run component ``k[i]`` on latent ``z[i]`` (and, conditional, class ``labels[i]``; default
        balanced) for every row; each generator sees only its rows."""
        labels = self.labels_tensor(labels, z.shape[0])
        if labels is not None:
            labels = labels.to(z.device)
        out = torch.empty(z.shape[0], *self.sample_shape, device=z.device)
        for j, g in enumerate(self.generators):
            rows = (k == j).nonzero().squeeze(1)
            if rows.numel():
                out[rows] = g(z[rows]) if labels is None else g(z[rows], labels[rows])
        return out

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw components and latents for ``n`` samples (on the CPU, so results do not depend on device)."""
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, self.latent_dim, generator=generator)
        return z, k

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | int | None = None,
               output: Literal["tensor", "numpy", "pil"] = "tensor", batch_size: int = 4096,
               labels: torch.Tensor | list[int] | None = None):
        """Draw ``n`` samples from the mixture.

        Args:
            n: number of samples.
            generator: a ``torch.Generator`` or an int seed, for reproducible draws.
            output: ``"tensor"`` (float in [-1, 1], ``[n, *sample_shape]``), ``"numpy"`` (same as
                array) or ``"pil"`` (a list of PIL images; images only).
            batch_size: rows per forward pass, to bound memory.
            labels: conditional ensembles only: the class index of each of the n samples
                (default: ``0, 1, …, K−1, 0, …``). The draws of ``z`` and ``k`` do not depend on it.
        """
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        y = self.labels_tensor(labels, n)
        z, k = self.draw(n, generator)
        dev = self.device
        parts = [self.generate(z[i:i + batch_size].to(dev), k[i:i + batch_size].to(dev),
                               None if y is None else y[i:i + batch_size]).cpu()
                 for i in range(0, n, batch_size)]
        x = torch.cat(parts) if parts else torch.empty(0, *self.sample_shape)
        if output == "tensor":
            return x
        if output == "numpy":
            return x.numpy()
        if output == "pil":
            from mustangs.io.images import to_pil_images

            return to_pil_images(x)
        raise ValueError(f"output must be 'tensor', 'numpy' or 'pil', not {output!r}")
