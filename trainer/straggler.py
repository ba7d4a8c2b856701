"""Straggler injection for tests and benchmarks: ``MUSTANGS_TEST_STRAGGLER=RANK:slow=FACTOR`` or
``MUSTANGS_TEST_STRAGGLER=RANK:pause=SECONDS[@GENERATION]``.

It stands in for a slower machine (a busier node, a smaller GPU, a noisy neighbour) or one that
stalls for a while, so the sync and async exchanges (docs/scale-out.md) can be compared on one host:

- ``2:slow=2``: rank 2 takes twice as long per generation (after each generation it sleeps for
  ``FACTOR - 1`` times the generation's own time);
- ``1:pause=30@3``: rank 1 sleeps 30 s once, after generation 3 (``@`` defaults to 1).

It sleeps rather than spins, so on a shared CPU the straggler does not take cores from the other
ranks. Several specs may be joined with ``,``. Unset (always, outside tests and benchmarks) it
costs one dictionary lookup. In the spirit of :mod:`mustangs.io.faults`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from mustangs.errors import UserError

ENV = "MUSTANGS_TEST_STRAGGLER"


@dataclass(frozen=True)
class Straggle:
    """One parsed spec: which rank, and how it is slowed."""

    rank: int                 # the slowed rank; >= 0
    factor: float = 1.0       # slow: generation time multiplier; >= 1 (1 = not slowed)
    pause: float = 0.0        # pause: seconds to sleep once; >= 0
    at: int = 1               # pause: after this generation; >= 1


def parse(spec: str) -> list[Straggle]:
    """``"2:slow=2,1:pause=30@3"`` → specs; a malformed spec is one readable UserError."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            rank, _, what = part.partition(":")
            kind, _, value = what.partition("=")
            if kind == "slow":
                s = Straggle(int(rank), factor=float(value))
            elif kind == "pause":
                secs, _, at = value.partition("@")
                s = Straggle(int(rank), pause=float(secs), at=int(at or 1))
            else:
                raise ValueError(kind)
        except ValueError:
            raise UserError(f"{ENV}={spec!r}: expected RANK:slow=FACTOR or RANK:pause=SECONDS[@GENERATION], "
                            f"e.g. 3:slow=2") from None
        if s.rank < 0 or s.factor < 1.0 or s.pause < 0.0 or s.at < 1:
            raise UserError(f"{ENV}={spec!r}: expected RANK:slow=FACTOR or RANK:pause=SECONDS[@GENERATION] "
                            f"with RANK >= 0, FACTOR >= 1, SECONDS >= 0, GENERATION >= 1")
        out.append(s)
    return out


def straggle(rank: int, generation: int, seconds: float, sleep=time.sleep) -> float:
    """Slow this rank after ``generation`` (which took ``seconds``) as the environment says;
    returns the seconds slept (0.0 when unset or another rank is named)."""
    spec = os.environ.get(ENV)
    if not spec:
        return 0.0
    slept = 0.0
    for s in parse(spec):
        if s.rank != rank:
            continue
        extra = (s.factor - 1.0) * seconds + (s.pause if generation == s.at else 0.0)
        if extra > 0:
            sleep(extra)
            slept += extra
    return slept
