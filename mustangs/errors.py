"""The one exception type that reaches users as a single readable line (exit code 2)."""

from __future__ import annotations

import errno
import functools
import os
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., int])


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, corrupt file).

    CLIs print ``error: <message>`` and exit with code 2, without a traceback.
    """


class ConfigError(UserError):
    """A config file or override that does not fit the schema."""


def exit_on_user_error(main: F) -> F:
    """Wrap a CLI entry point so a ``UserError`` becomes one line on stderr and exit 2.

    Problems of the machine rather than of the code — an ``OSError`` (disk full, read-only
    folder, port in use), ``MemoryError``, a ``RecursionError`` from absurdly nested input —
    are one line and exit 2 as well. ``MUSTANGS_TRACEBACK=1`` re-raises them for debugging.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except (OSError, MemoryError, RecursionError) as exc:
            if os.environ.get("MUSTANGS_TRACEBACK"):
                raise
            print(f"error: {environment_message(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (user text may hold newlines, and ``\\r``, ``\\x85``, ``\\u2028``…
    that end a line as well: whatever ``str.splitlines`` splits on)."""
    return " ".join(str(exc).splitlines()).strip() or type(exc).__name__


def environment_message(exc: BaseException) -> str:
    """One line for an environmental failure (see :func:`exit_on_user_error`)."""
    if isinstance(exc, MemoryError):
        return "out of memory; use smaller sizes (batch size, number of samples, grid) or a bigger machine"
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to be read"
    return os_error_message(exc)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- OS errors

_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded; free space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EIO: "input/output error: the disk or its file system failed; check it or write elsewhere",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EADDRINUSE: "the address is already in use; pick another --port",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EMFILE: "too many open files",
}


def os_error_message(exc: OSError, *, bare: bool = False) -> str:
    """One line for an ``OSError``: what failed, on which path, and what to do."""
    hint = _ERRNO_HINTS.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__
    if bare:
        return hint
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {hint}" if where else hint
