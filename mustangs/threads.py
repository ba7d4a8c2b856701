"""CPU threads for torch on a machine that other processes may share.

Two measured facts (benchmarks/RESULTS-trainer.md, "Busy machines") decide the defaults:

* OpenMP threads that *spin* while they wait for a descheduled sibling burn their share of
  the cores doing nothing: with other jobs on the machine a 2-thread quickstart generation
  spent ~10 CPU-s on 1 CPU-s of work and ran 9× slower. Told to *sleep* instead
  (``OMP_WAIT_POLICY=PASSIVE``), the same generation spends ~1.1 CPU-s and 2 threads stay the
  fastest choice on a busy machine too. The policy is read once, when torch loads OpenMP, so
  :func:`prefer_passive_openmp` must run before ``import torch`` (the console scripts do).
* With threads that sleep, using every core this process may run on
  (``os.sched_getaffinity``, which honours ``taskset``, cgroups' cpusets and Slurm) beats one
  thread under load, so ``threads: null`` means exactly that (:func:`auto_threads`).
"""

from __future__ import annotations

import os
import sys


def prefer_passive_openmp() -> bool:
    """Make torch's OpenMP threads sleep rather than spin while waiting, unless the user set
    ``OMP_WAIT_POLICY`` (or ``GOMP_SPINCOUNT``) already. Returns whether it can still take
    effect (False once torch is imported: OpenMP has read its environment by then)."""
    if "torch" in sys.modules:
        return False
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_threads(processes: int = 1) -> int:
    """Torch threads for one of ``processes`` local processes sharing the available cores."""
    return max(1, available_cores() // max(1, processes))
