"""What every console script shares: help text with defaults, one-line usage errors, ``--version``,
and an entry point that turns user errors into one line and exit code 2.

Imports nothing heavy (no torch), so ``--help``, ``--version`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import re
from typing import Callable

from mustangs.errors import exit_on_user_error
from mustangs.threads import prefer_passive_openmp


def plain_text(text: str) -> str:
    """Docstring markup (reStructuredText) as plain text for ``--help``: ``x`` → x, "Examples::" → "Examples:"."""
    text = re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", text)
    return text.replace("``", "").replace("::\n", ":\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (``[default: …]``), keeps description line breaks, drops docstring markup."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action) -> str:
        return plain_text(super()._expand_help(action))

    def _get_help_string(self, action) -> str:
        """argparse's help with ``(default: …)``, unless the text already says what the default is."""
        text = action.help or ""
        if "(default:" in text:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line on bad usage (as argparse does), plus a hint."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` (the package's version, one source: ``mustangs.__version__``)."""
    from mustangs import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s (mustangs) {__version__}")


def console_main(build: Callable[[], argparse.ArgumentParser], name: str) -> Callable[[list[str] | None], int]:
    """A console-script entry point: parse, run the verb's ``func``, user errors → one line + exit 2."""

    @exit_on_user_error
    def main(argv: list[str] | None = None) -> int:
        prefer_passive_openmp()   # before torch loads OpenMP (see mustangs/threads.py)
        args = build().parse_args(argv)
        return int(args.func(args) or 0)

    main.__doc__ = f"Entry point of the ``{name}`` console script."
    return main
