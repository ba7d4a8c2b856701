"""A full disk (ENOSPC) or a failing one (EIO) at a chosen write, for the tests.

Every file Mustangs writes goes through :mod:`mustangs.io.atomic`, which asks
:func:`mustangs.io.faults.injected_write_fault` before it renames a finished temporary file
(or folder) into place. :func:`disk_fault` sets ``MUSTANGS_TEST_WRITE_FAULT`` for the commands
run inside it, in this process (the CLIs' ``main``) and in the processes they start (``--workers``
ranks, ``subprocess`` runs), so the failure is raised where a real full disk would raise it and
unwinds through the real code. :func:`count_writes` tells how many writes a command makes, so a
test can fail each one in turn.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

from mustangs.io import faults

#: The words each injected error must produce in the one-line message.
SAYS = {"ENOSPC": "the disk is full", "EIO": "input/output error"}


@contextlib.contextmanager
def disk_fault(kind: str = "ENOSPC", *, nth: int | None = None, after: int | None = None) -> Iterator[None]:
    """Fail the ``nth`` write (1-based) or every write past byte ``after`` with ``kind`` (ENOSPC | EIO).

    ``nth=0`` never fails: use it to count writes (see :func:`count_writes`).
    """
    if (nth is None) == (after is None):
        raise ValueError("give exactly one of nth= and after=")
    spec = f"{kind}:nth={nth}" if nth is not None else f"{kind}:after={after}"
    old = os.environ.get(faults.WRITE_ENV)
    os.environ[faults.WRITE_ENV] = spec
    faults.reset_write_faults()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(faults.WRITE_ENV, None)
        else:
            os.environ[faults.WRITE_ENV] = old
        faults.reset_write_faults()


def count_writes(run: Callable[[], object]) -> tuple[int, int]:
    """``(writes, bytes)`` that ``run()`` makes through the atomic writers of this process."""
    with disk_fault("ENOSPC", nth=0):
        run()
        return faults._writes["count"], faults._writes["bytes"]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[str]:
    """Temporary names an interrupted write could leave (ours and safetensors' ``.tmpXXXXXX``)."""
    from mustangs.io.atomic import is_temp_name

    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if is_temp_name(p.name) or
                  p.name.startswith(".tmp"))


def assert_disk_error(code: int, err: str, kind: str, root: Path, *, log_before: bool = False) -> str:
    """Exit 2, one ``error:`` line that names a path under ``root`` and says what happened; returns it.

    With ``log_before`` (a training run logs its progress), earlier lines are allowed; the error
    line must still be the last and the only one.
    """
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-800:]}"
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error:"), err
    assert len(lines) == 1 or (log_before and sum(s.startswith("error:") for s in lines) == 1), err
    line = lines[-1]
    assert SAYS[kind] in line, line
    assert str(root) in line, f"no path in {line!r}"
    return line
