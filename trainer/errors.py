"""The one exception type that reaches users as a single readable line (exit code 2)."""

from __future__ import annotations

import functools
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
    """Wrap a CLI entry point so a ``UserError`` becomes one line on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]
