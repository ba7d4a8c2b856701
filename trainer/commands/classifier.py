"""``trainer classifier``: (not implemented yet)."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``classifier`` verb to the ``trainer`` CLI."""
    p = sub.add_parser("classifier", help="(not implemented yet)")
    p.set_defaults(func=lambda args: print("not implemented yet") or 1)
