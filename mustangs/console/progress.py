"""Progress for long loops: a tqdm bar on a terminal, plain lines in logs, nothing when asked.

A tqdm bar in a log file (Slurm, CI, ``| cat``) is either silent (tqdm disables itself without
a terminal) or a wall of carriage returns. :func:`progress_bar` gives those runs a plain line at
least every :data:`EVERY` seconds of work instead, e.g. ``gen 3/30: batch 45/100 (9.8 batch/s)``.

The ``progress`` flag used across the CLIs: ``True`` = always a tqdm bar, ``False`` = nothing,
``None`` = tqdm on a terminal (stderr is a TTY), plain lines otherwise.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Iterable

#: Seconds of work between two plain progress lines.
EVERY = 10.0


def on_terminal() -> bool:
    """Is stderr (where progress goes) a terminal?"""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _stderr_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class PlainProgress:
    """The subset of tqdm's interface the project uses, printing one plain line at a time.

    A line is printed on an :meth:`update` once ``every`` seconds have passed since the bar
    started or since the last line; it says how far the loop is and how fast it goes.
    ``clock`` is injectable for tests.

    Work that does not call :meth:`update` (scoring after a generation's batches, final scores)
    is announced with :meth:`phase`; with ``ticker=True`` a background thread then repeats the
    phase with its elapsed time whenever ``every`` seconds pass without a line (the heavy work
    runs in torch/numpy, which release the GIL, so the thread gets its turn).
    """

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, every: float | None = None,
                 log: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 ticker: bool = False):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.every = EVERY if every is None else every
        self.n = self._n0 = initial
        self.postfix = ""
        self.log = log or _stderr_line
        self.clock = clock
        self._t0 = self._last = clock()
        self._phase: str | None = None
        self._phase_t0 = self._t0
        self._stop = threading.Event()
        self._thread = None
        if ticker:
            self._thread = threading.Thread(target=self._tick, name="progress-ticker", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 4 or 0.05)):
            now = self.clock()
            if now - self._last >= self.every:
                self._last = now
                self.log(self.line(now))

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line when ``every`` seconds have passed since the last one."""
        self.n += n
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        """``DESC: UNIT n/total (rate UNIT/s), POSTFIX``, or ``PHASE (… s)`` during a phase."""
        now = self.clock() if now is None else now
        if self._phase is not None:
            return f"{self._phase} ({now - self._phase_t0:.0f} s)"
        rate = (self.n - self._n0) / max(now - self._t0, 1e-9)
        where = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        text = f"{self.desc + ': ' if self.desc else ''}{self.unit} {where} ({rate:.3g} {self.unit}/s)"
        return f"{text}, {self.postfix}" if self.postfix else text

    def restart(self, desc: str | None = None, n: int = 0, total: int | None = None) -> None:
        """Start a new stretch (e.g. the next generation): counts, rate and the 10 s window start again."""
        self.desc = self.desc if desc is None else desc
        self.total = self.total if total is None else total
        self.n = self._n0 = n
        self._phase = None
        self._t0 = self._last = self.clock()

    def phase(self, text: str, announce: bool = True) -> None:
        """Work without updates starts: print ``text`` now (``announce``), and repeat it with its
        elapsed time every ``every`` seconds until the next :meth:`restart` or :meth:`phase`."""
        self._phase, self._phase_t0 = text, self.clock()
        if announce:
            self._last = self._phase_t0
            self.log(text)

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """Stop the ticker thread (if any)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 progress: bool | None = None, leave: bool = True, initial: int = 0,
                 log: Callable[[str], None] | None = None, ticker: bool = False):
    """A tqdm bar, a :class:`PlainProgress` or a silent tqdm, following ``progress`` (see the module doc);
    ``ticker``: the plain one keeps printing during phases without updates (see :meth:`PlainProgress.phase`)."""
    from tqdm import tqdm

    if progress is False:
        return tqdm(iterable, total=total, disable=True)
    if progress is True or on_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial, dynamic_ncols=True)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, log=log, ticker=ticker)


def nested(progress: bool | None) -> bool | None:
    """``progress`` for a loop inside another one: no second bar on a terminal, plain lines in logs."""
    return False if progress is True or (progress is None and on_terminal()) else progress
