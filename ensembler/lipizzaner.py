"""Import generators saved by the Lipizzaner reference system as a Mustangs pool.

Lipizzaner saves each generator of its MNIST ``four_layer_perceptron`` with
``torch.save(net.state_dict(), path)`` — the legacy (non-zip) format in old releases, the zip
format in newer torch. Keys are ``0.weight (256, z)``, ``0.bias``, ``2.weight (256, 256)``,
``2.bias``, ``4.weight (784, 256)``, ``4.bias``: the same network as
:class:`mustangs.pool.networks.MLPGenerator` without its ``net.`` prefix. Files are read with
``torch.load(..., weights_only=True)`` only (no arbitrary unpickling), every key and shape is
checked, and the pool is written atomically: an error leaves nothing behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from mustangs.errors import UserError
from mustangs.pool.format import Pool, sha256_file, write_pool
from mustangs.pool.networks import NetSpec, build_generator

#: File name endings that Lipizzaner (and torch users) give saved state dicts.
SUFFIXES = (".pkl", ".pt", ".pth")
_PREFIXES = ("module.", "net.", "network.")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``'d state dict (zip or legacy format) without unpickling arbitrary objects."""
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except OSError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...: all mean "not a state dict"
        raise UserError(f"{path} is not a torch state dict that can be loaded safely ({_why(exc)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def _why(exc: Exception) -> str:
    """One short line of ours for ``torch.load``'s refusal (its own text is a multi-line lecture)."""
    import pickle
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or \
            re.search(r"Unsupported operand (\d+)", text)
        what = f" ({found.group(1)})" if found else ""
        return f"it holds Python objects other than tensors{what}, which would run code from the file"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return first[:160]


def to_mlp_state(state: dict[str, torch.Tensor], source: str = "") -> tuple[dict[str, torch.Tensor], NetSpec]:
    """Map Lipizzaner keys (``0.weight``, …) to :class:`MLPGenerator` keys (``net.0.weight``, …).

    The latent size is read from ``0.weight``; every key and shape must then match the
    reference MLP exactly, and weights must be finite.
    """
    mapped = {}
    for key, value in state.items():
        bare = key
        for prefix in _PREFIXES:
            if bare.startswith(prefix):
                bare = bare[len(prefix):]
        mapped[f"net.{bare}"] = value
    first = mapped.get("net.0.weight")
    if first is None or first.dim() != 2:
        raise UserError(f"{source}: no '0.weight' matrix; not a Lipizzaner four_layer_perceptron generator "
                        f"(keys: {sorted(state)[:6]})")
    spec = NetSpec("mlp", int(first.shape[1]), (1, 28, 28))
    expected = build_generator(spec).state_dict()
    if set(mapped) != set(expected):
        missing = sorted(k[4:] for k in set(expected) - set(mapped))
        extra = sorted(k[4:] for k in set(mapped) - set(expected))
        raise UserError(f"{source}: keys do not match the four_layer_perceptron generator "
                        f"(missing {missing}, unexpected {extra})")
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UserError(f"{source}: '{key[4:]}' has shape {tuple(value.shape)}, expected "
                            f"{tuple(expected[key].shape)}")
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise UserError(f"{source}: '{key[4:]}' is not a finite floating-point tensor")
    return {k: v.to(expected[k].dtype).contiguous() for k, v in mapped.items()}, spec


def is_discriminator(state: dict[str, torch.Tensor]) -> bool:
    """Whether a Lipizzaner state dict is a discriminator's: its last weight matrix has one output (a
    generator's has 784), and its first reads an image. Reference output folders hold both kinds."""
    mats = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return bool(mats) and int(mats[-1].shape[0]) == 1 and int(mats[0].shape[1]) == 28 * 28


def import_lipizzaner(folder: str | Path, out: str | Path, dataset: str = "mnist",
                      log: Callable[[str], None] = print) -> Pool:
    """Convert every generator ``*.pkl|*.pt|*.pth`` state dict in ``folder`` into a pool at ``out``;
    discriminator files (the reference writes them beside the generators) are skipped with one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise UserError(f"no generator files ({', '.join('*' + s for s in SUFFIXES)}) in {folder}")
    gens, spec0, used = [], None, set()
    skipped = []
    for path in files:
        raw = load_state_dict(path)
        if is_discriminator(raw):
            skipped.append(path.name)
            continue
        state, spec = to_mlp_state(raw, str(path))
        if spec0 is not None and spec != spec0:
            raise UserError(f"{path} has latent size {spec.latent_dim} but {files[0]} has {spec0.latent_dim}")
        spec0 = spec
        model = build_generator(spec)
        model.load_state_dict(state)
        gid = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "generator"
        while gid in used:
            gid += "_"
        used.add(gid)
        origin = {"source": "lipizzaner", "file": path.name, "file_sha256": sha256_file(path)}
        gens.append((gid, model.eval(), {"origin": origin}))
    if skipped:
        log(f"skipped {len(skipped)} discriminator file(s): {', '.join(skipped[:5])}{' …' if len(skipped) > 5 else ''}")
    if not gens:
        raise UserError(f"{folder} holds only discriminator files ({', '.join(skipped[:3])}); point at the folder with "
                        "the generator state dicts")
    return write_pool(out, spec0, dataset, gens, extra={"imported_from": str(folder.resolve())})


__all__ = ["import_lipizzaner", "is_discriminator", "load_state_dict", "to_mlp_state", "SUFFIXES"]
