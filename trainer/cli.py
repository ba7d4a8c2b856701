"""``trainer``: train a grid of GANs, train/evaluate the evaluation classifier, score samples.

Each verb lives in its own module (``trainer/commands/*.py``) exposing ``register(subparsers)``;
this file only wires them together and turns user errors into one line and exit code 2.
Building a parser imports nothing heavy (no torch): ``--help``, ``--version`` and usage errors
answer at once, and each verb imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable

from trainer.errors import exit_on_user_error
from trainer.threads import prefer_passive_openmp


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line on bad usage (as argparse does), plus a hint."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` (the package's version, one source: ``trainer.__version__``)."""
    from trainer import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s (mustangs) {__version__}")


def build_parser() -> argparse.ArgumentParser:
    """The full ``trainer`` argument parser."""
    from trainer.commands import classifier, score, train

    parser = ArgumentParser(prog="trainer", description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for module in (train, classifier, score):
        module.register(sub)
    return parser


def console_main(build: Callable[[], argparse.ArgumentParser], name: str) -> Callable[[list[str] | None], int]:
    """A console-script entry point: parse, run the verb's ``func``, user errors → one line + exit 2."""

    @exit_on_user_error
    def main(argv: list[str] | None = None) -> int:
        prefer_passive_openmp()   # before torch loads OpenMP (see trainer/threads.py)
        args = build().parse_args(argv)
        return int(args.func(args) or 0)

    main.__doc__ = f"Entry point of the ``{name}`` console script."
    return main


main = console_main(build_parser, "trainer")


if __name__ == "__main__":
    sys.exit(main())
