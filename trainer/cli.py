"""``trainer``: train a grid of GANs, train/evaluate the evaluation classifier, score samples.

Each verb lives in its own module (``trainer/commands/*.py``) exposing ``register(subparsers)``;
this file only wires them together and turns user errors into one line and exit code 2.
Building a parser imports nothing heavy (no torch): ``--help``, ``--version`` and usage errors
answer at once, and each verb imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys

from mustangs.console.formatting import ArgumentParser, HelpFormatter, add_version, console_main


def build_parser() -> argparse.ArgumentParser:
    """The full ``trainer`` argument parser."""
    from trainer.commands import classifier, score, train

    parser = ArgumentParser(prog="trainer", description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for module in (train, classifier, score):
        module.register(sub)
    return parser


main = console_main(build_parser, "trainer")


if __name__ == "__main__":
    sys.exit(main())
