"""Crash injection for tests: ``MUSTANGS_TEST_KILL_AT=POINT[:N]`` kills the process with SIGKILL
the N-th time (default 1) the run passes ``POINT``.

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

Unset (always, outside tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "MUSTANGS_TEST_KILL_AT"
POINTS = ("setup", "generation", "checkpoint-tmp", "checkpoint-tensors", "checkpoint-json", "pool-tmp", "report")
_hits: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``MUSTANGS_TEST_KILL_AT`` names ``name`` and this is its N-th pass."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
