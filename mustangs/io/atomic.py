"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from mustangs.io.faults import injected_write_fault


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched. An
    ``OSError`` that names no file (a full disk seen by ``write``) or the temporary name is
    re-raised naming ``target``, and a library's own error that is really a disk error
    ("No space left on device", "Input/output error") becomes that ``OSError``, so the CLIs
    print one line that says which file could not be written and why.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _finish(tmp_path, target)
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        disk = as_disk_error(exc, target, tmp_path)
        if disk is not None:
            raise disk from None
        raise


def _finish(tmp: Path, target: Path) -> None:
    """Make the written ``tmp`` durable (fsync) with the usual mode, ready to be renamed over ``target``."""
    injected_write_fault(tmp, target)
    with open(tmp, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the result gets the usual mode


#: Messages of libraries (safetensors, onnx, numpy, PIL) that hide an OS error in their own type.
_DISK_TEXTS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
               "Input/output error": errno.EIO, "Read-only file system": errno.EROFS}


def as_disk_error(exc: BaseException, target: Path, tmp: Path) -> OSError | None:
    """``exc`` as an ``OSError`` naming ``target``, if it is a disk error that names no better file.

    Returns ``None`` (re-raise ``exc`` unchanged) for anything else.
    """
    if isinstance(exc, OSError):
        name = exc.filename
        if name is None or str(name) == str(tmp) or str(name).startswith(str(tmp) + os.sep):
            shown = str(target) if name is None or str(name) == str(tmp) else \
                str(target) + str(name)[len(str(tmp)):]
            err = OSError(exc.errno, exc.strerror or str(exc), shown)
            return err
        return None
    if isinstance(exc, Exception):
        text = str(exc)
        for words, code in _DISK_TEXTS.items():
            if words in text:
                return OSError(code, os.strerror(code), str(target))
    return None


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_files_atomic(files: dict[Path, bytes]) -> None:
    """Write several files that belong together (weights and their JSON): all of them or none.

    Every file is written and synced under its temporary name first; only then are they renamed
    (a rename needs no free space), so a full disk while writing any of them leaves every
    earlier version in place.
    """
    made: list[tuple[Path, Path]] = []
    try:
        for target, data in files.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            made.append((Path(tmp), target))
            try:
                Path(tmp).write_bytes(data)
                _finish(Path(tmp), target)
            except BaseException as exc:
                disk = as_disk_error(exc, target, Path(tmp))
                if disk is not None:
                    raise disk from None
                raise
        for tmp, target in made:
            os.replace(tmp, target)
    finally:
        for tmp, _ in made:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it replaces ``target`` on success.

    Used for pools and other multi-file outputs: a crash leaves the previous folder (or
    nothing), never a half-written one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        injected_write_fault(tmp, target)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the folder gets the usual mode
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        disk = as_disk_error(exc, target, tmp)
        if disk is not None:
            raise disk from None
        raise


def current_umask() -> int:
    """The process umask (read without changing it where Linux allows; else set and restored)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Names the writers above give their temporary files and folders (``.NAME.XXXXXXXX.tmp``),
#: the previous folder ``atomic_dir`` moves aside (``.NAME.old``) and the writability probe; and
#: ``.tmpXXXXXX``, the temporary file safetensors' ``save_file`` made beside its output (Mustangs
#: up to issue 23 called it inside our own temporary write, so a kill could leave one behind;
#: it now serialises to bytes and writes them itself, but old run folders may still hold one).
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$|^\..+\.old$|^\.tmp[A-Za-z0-9]{6}$")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one this module gives its temporary files and folders."""
    return bool(_TEMP_NAME.match(name))


def clean_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove what an interrupted atomic write left in ``folder`` (not recursive); returns what went.

    Only names this module generates are touched, so user files are never removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if _TEMP_NAME.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks), for manifests and integrity checks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
