"""Guards every command runs before it writes or allocates: one readable line instead of damage.

- :func:`guard_output` — an output may not be, contain, or lie inside one of the command's
  inputs (``--out`` onto the ensemble it reads, a pool folder, the Lipizzaner folder, …).
- :func:`check_suffix` — the output's extension must match what is written (no PNG bytes in
  ``x.txt``).
- :func:`check_writable` — probe the output's folder before long work, so a read-only or
  missing folder fails in the first second, not after minutes of training.
- :func:`check_memory` / :func:`available_memory` — refuse a size that cannot fit, naming the
  estimate, before anything is allocated; :func:`check_samples_memory` does it for drawing samples.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from mustangs.errors import UserError, os_error_message

GiB = 1 << 30


# --------------------------------------------------------------------------- outputs vs inputs

def _resolved(path: str | os.PathLike) -> Path:
    """``path`` made absolute with symlinks resolved (also when it does not exist yet)."""
    return Path(os.path.abspath(path)).resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def guard_output(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None] | Iterable,
                 *, flag: str = "--out") -> None:
    """Refuse ``out`` when it is, contains or lies inside one of ``inputs``.

    ``inputs`` maps a description ("the ensemble", "pool") to a path (``None`` entries are
    skipped), or is an iterable of ``(description, path)`` pairs. Paths are compared after
    resolving symlinks, so ``./a/../b`` and a link to ``b`` are caught as well.
    """
    pairs = inputs.items() if isinstance(inputs, Mapping) else inputs
    o = _resolved(out)
    for what, src in pairs:
        if src is None:
            continue
        s = _resolved(src)
        if o == s:
            raise UserError(f"{flag} {out} is the input {what} {src}; writing there would destroy it, "
                            f"choose another {flag}")
        if _inside(s, o):
            raise UserError(f"{flag} {out} contains the input {what} {src}; choose a {flag} outside it")
        if _inside(o, s) and s.is_dir():
            raise UserError(f"{flag} {out} lies inside the input {what} {src}; write it somewhere else")


def check_suffix(out: str | os.PathLike, allowed: Iterable[str], *, flag: str = "--out", what: str = "") -> str:
    """The lower-case suffix of ``out`` if it is one of ``allowed``, else a one-line refusal."""
    allowed = tuple(allowed)
    suffix = Path(out).suffix.lower()
    if suffix not in allowed:
        kinds = " or ".join(allowed)
        raise UserError(f"{flag} {out}: the file name must end in {kinds}{' (' + what + ')' if what else ''}, "
                        f"not '{suffix or '(none)'}'")
    return suffix


def check_writable(path: str | os.PathLike, *, flag: str = "--out", is_dir: bool = False) -> None:
    """Probe that ``path`` (a file to write, or a folder with ``is_dir``) can be written now.

    The nearest existing ancestor must be a folder in which a file can really be created (a
    probe file is created and removed: permission bits lie for root and on read-only mounts).
    Nothing is left behind.
    """
    p = _resolved(path)
    if not is_dir and p.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    if is_dir and p.exists() and not p.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder")
    folder = p if is_dir else p.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mustangs-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in {folder} ({os_error_message(exc, bare=True)})") from None


# --------------------------------------------------------------------------- memory

def available_memory() -> int:
    """Bytes this process may still allocate: ``MemAvailable`` (plus free swap), capped by a cgroup limit.

    ``MUSTANGS_MEMORY_LIMIT`` (bytes, e.g. ``8e9``) overrides it, for tests and shared hosts.
    """
    env = os.environ.get("MUSTANGS_MEMORY_LIMIT")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise UserError(f"MUSTANGS_MEMORY_LIMIT must be a number of bytes, got {env!r}") from None
    avail = None
    try:
        info = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
        avail = info.get("MemAvailable", info.get("MemFree", 0)) + info.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    for cg in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(cg).read_text().strip()
        except OSError:
            continue
        if raw.isdigit():
            limit = int(raw)
            if limit < (1 << 60):
                avail = limit if avail is None else min(avail, limit)
    return int(avail) if avail is not None else 1 << 62


def human_bytes(n: float) -> str:
    """``1.5 GiB``-style size for messages."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def check_memory(estimate: float, what: str, fix: str = "") -> None:
    """Refuse ``what`` when its estimated ``estimate`` bytes exceed the memory available now."""
    avail = available_memory()
    if estimate > avail:
        raise UserError(f"{what} would need about {human_bytes(estimate)} of memory but {human_bytes(avail)} "
                        f"is available{'; ' + fix if fix else ''}")


def samples_bytes(n: int, latent_dim: int, sample_shape: Iterable[int], copies: int = 3) -> int:
    """Bytes to draw ``n`` float32 samples at once: the latents plus ``copies`` buffers of samples."""
    return 4 * int(n) * (int(latent_dim) + copies * math.prod(int(s) for s in sample_shape))


def check_samples_memory(n: int, latent_dim: int, sample_shape: Iterable[int], what: str, fix: str,
                         copies: int = 3) -> None:
    """Refuse drawing ``n`` samples at once when they cannot fit in memory (the number is in the line)."""
    shape = list(sample_shape)
    check_memory(samples_bytes(n, latent_dim, shape, copies), f"{what} ({n:,} samples of shape {shape})", fix)


__all__ = ["guard_output", "check_suffix", "check_writable", "available_memory", "check_memory",
           "human_bytes", "samples_bytes", "check_samples_memory"]
