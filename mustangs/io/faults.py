"""Fault injection for tests: a process killed at a chosen moment, a disk that fills up.

``MUSTANGS_TEST_KILL_AT=POINT[:N]`` kills the process with SIGKILL the N-th time (default 1)
the run passes ``POINT``.

It stands in for a power cut, the OOM killer or ``kill -9`` at a chosen moment, so tests can
prove that ``--resume`` (or a plain restart) ends with the pool an uninterrupted run writes.
Points, in the order a run passes them:

- ``setup``: the run folder and ``config.yaml`` exist, no generation has run
- ``generation``: a generation's metrics line is written, its samples/checkpoint are not
- ``checkpoint-tmp``: the checkpoint tensors are in a temporary file, not yet renamed
- ``checkpoint-tensors``: the tensors file is in place, its JSON is not
- ``checkpoint-json``: tensors and JSON are in place, ``index.json`` is not updated
- ``pool-tmp``: the pool is complete in its temporary folder, not yet renamed
- ``report``: the pool is in place, the report is not written

``MUSTANGS_TEST_HOLD_AT=POINT[:N][@RANK]=PATH`` holds the process at a point instead, so a test can
act on *another* process at that moment (SIGKILL rank 1 while rank 0 is inside its checkpoint
write): the N-th pass of ``POINT`` (in the process whose ``RANK``, as torchrun sets it, is
``RANK``, if given) creates ``PATH`` holding ``"PID RANK"`` and waits until the test writes ``go``
into it (or 600 s pass). Only the process that creates ``PATH`` holds: a restarted process, or
another rank, finds it there and goes on.

``MUSTANGS_TEST_WRITE_FAULT=ERRNO:nth=N`` makes the N-th file write of the process fail, and
``ERRNO:after=K`` every write that takes the process past byte K (ERRNO is ``ENOSPC`` or ``EIO``).
Every file Mustangs writes passes through :mod:`mustangs.io.atomic` (one atomic write per file
or per folder), which calls :func:`injected_write_fault` once the bytes are in the temporary
place and before the rename: the temporary file is cut where the disk "filled" and the
``OSError`` a real full disk gives is raised, so the whole unwinding path is the real one.

Unset (always, outside tests) each costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

ENV = "MUSTANGS_TEST_KILL_AT"
POINTS = ("setup", "generation", "checkpoint-tmp", "checkpoint-tensors", "checkpoint-json", "pool-tmp", "report")
_hits: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``MUSTANGS_TEST_KILL_AT`` names ``name`` and this is its N-th pass
    (first hold here if ``MUSTANGS_TEST_HOLD_AT`` asks for it)."""
    if os.environ.get(HOLD_ENV):
        _hold(name, os.environ[HOLD_ENV])
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


HOLD_ENV = "MUSTANGS_TEST_HOLD_AT"
_held: dict[str, int] = {}


def _hold(name: str, spec: str) -> None:
    """Wait at point ``name`` until the test writes ``go`` into the file ``spec`` names (see the module doc)."""
    where, sep, path = spec.partition("=")
    if not sep or not path:
        raise ValueError(f"{HOLD_ENV}={spec!r}: expected POINT[:N][@RANK]=PATH")
    where, _, rank = where.partition("@")
    point, _, nth = where.partition(":")
    if point != name or (rank and os.environ.get("RANK") != rank):
        return
    _held[name] = _held.get(name, 0) + 1
    if _held[name] != int(nth or 1):
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()} {os.environ.get('RANK', '')}\n".encode())
    os.close(fd)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not Path(path).read_text().rstrip().endswith("go"):
        time.sleep(0.05)


WRITE_ENV = "MUSTANGS_TEST_WRITE_FAULT"
_ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}
_writes = {"spec": "", "count": 0, "bytes": 0}


def reset_write_faults() -> None:
    """Forget the writes counted so far (tests that run several commands in one process)."""
    _writes.update(spec="", count=0, bytes=0)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def injected_write_fault(tmp: Path, target: Path) -> None:
    """Raise the ``OSError`` that ``MUSTANGS_TEST_WRITE_FAULT`` asks for at this write, if any.

    ``tmp`` holds the bytes written for ``target`` (a file, or a folder written as one);
    a failing file is cut to the bytes that "fit" before the error is raised.
    """
    spec = os.environ.get(WRITE_ENV)
    if not spec:
        return
    if spec != _writes["spec"]:
        reset_write_faults()
        _writes["spec"] = spec
    kind, _, arg = spec.partition(":")
    key, _, value = arg.partition("=")
    code, limit = _ERRNOS[kind], int(value)
    size = _size(tmp)
    before = _writes["bytes"]
    _writes["count"] += 1
    _writes["bytes"] += size
    if key == "nth":
        fail, keep = _writes["count"] == limit, size // 2
    elif key == "after":
        fail, keep = _writes["bytes"] > limit, max(0, limit - before)
    else:
        raise ValueError(f"{WRITE_ENV}={spec!r}: expected ENOSPC|EIO:nth=N or :after=K")
    if fail:
        if tmp.is_file():
            os.truncate(tmp, min(keep, size))
        raise OSError(code, os.strerror(code), str(target))
