"""argparse ``type=`` functions with ranges, so every numeric flag is checked where it is declared.

A value out of range is refused by argparse itself: one line naming the flag and the legal
range, exit code 2 (``--popsize 1``, ``--nrow -3``, ``--seed 2**70``, ``--threads -1``).
"""

from __future__ import annotations

import argparse
import math

#: Seeds everywhere: what numpy, torch and the HTTP service all accept.
MAX_SEED = 2**63 - 1


def int_range(lo: int | None = None, hi: int | None = None, *, none: bool = False):
    """An ``int`` in ``[lo, hi]`` (either bound may be open); ``none=True`` also accepts ``none``."""

    def parse(text: str):
        if none and text.strip().lower() == "none":
            return None
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_describe(lo, hi)}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """A finite ``float`` in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or bad_lo or (hi is not None and value > hi):
            left = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"must be a finite number in {left}{lo if lo is not None else '-inf'}, "
                                             f"{hi if hi is not None else 'inf'}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _describe(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"an integer in {lo}..{hi}"
    if lo is not None:
        return f"an integer >= {lo}"
    return f"an integer <= {hi}"


seed_type = int_range(0, MAX_SEED)
threads_type = int_range(1, 1024)
port_type = int_range(1, 65535)

__all__ = ["int_range", "float_range", "seed_type", "threads_type", "port_type", "MAX_SEED"]
