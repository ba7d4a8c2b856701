"""Bounded readers for user files: YAML configs and JSON documents.

A user file must never exhaust memory, blow the stack or be read silently wrong:

- size: at most ``max_bytes`` are read (a bigger file is refused, not read);
- depth: YAML nesting deeper than :data:`MAX_DEPTH` is refused (a 5000-deep list); JSON too
  deep for the parser is one line as well;
- aliases: YAML anchors/aliases are limited and the *expanded* document may hold at most
  :data:`MAX_NODES` nodes (the "billion laughs" bomb is refused before it expands);
- duplicate mapping keys are refused (YAML and JSON would silently keep the last one);
- YAML floats: ``1e-3`` is a float, as in YAML 1.2 and JSON (PyYAML's YAML 1.1 rule would make
  it the string ``"1e-3"``).

Problems raise :class:`LoadError` (a ``UserError``: one line, exit code 2).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from mustangs.errors import ConfigError

MAX_DEPTH = 64               # nesting levels of a YAML/JSON document
MAX_ALIASES = 100            # YAML alias uses (*name) in one document
MAX_NODES = 100_000          # YAML nodes after expanding every alias
MAX_YAML_BYTES = 1 << 20     # a config is a few KiB; 1 MiB is generous
MAX_JSON_BYTES = 64 << 20    # manifests, ensembles, checkpoint metadata


class LoadError(ConfigError):
    """A user file that is too big, too deep, an alias bomb, has duplicate keys, or does not parse."""


# --------------------------------------------------------------------------- YAML

class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with depth/alias/node bounds, duplicate-key refusal and 1e-3 floats."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML API
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise LoadError(f"more than {MAX_ALIASES} YAML aliases (line {mark.line + 1}); refusing a "
                                "possible alias bomb")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise LoadError(f"YAML nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):  # noqa: D401 - PyYAML API
        _check_expanded_size(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):  # noqa: D401 - PyYAML API
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # PyYAML reports unhashable keys itself
                if key in seen:
                    raise LoadError(f"duplicate key '{key}' (lines {seen[key] + 1} and "
                                    f"{key_node.start_mark.line + 1}); each key may appear once")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root: Node) -> None:
    """Count the nodes the document has once every alias is expanded (memoised: linear time)."""
    memo: dict[int, int] = {}

    def size(node: Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = 1  # a cycle counts once (recursive aliases are rejected by PyYAML anyway)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(n) for n in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        memo[key] = total
        if total > MAX_NODES:
            raise LoadError(f"the YAML document expands to more than {MAX_NODES} values (alias bomb?)")
        return total

    size(root)


# YAML 1.2 / JSON floats without a dot (1e-3, 2E+5): PyYAML's YAML 1.1 rule reads them as strings.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml_text(text: str, where: str = "YAML") -> Any:
    """Parse ``text`` with the bounded loader; raises :class:`LoadError` naming ``where``."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise LoadError(f"{where} is larger than {MAX_YAML_BYTES >> 10} KiB; a config is a few KiB")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except LoadError as exc:
        raise LoadError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise LoadError(f"{where} is not valid YAML{line}") from None
    except RecursionError:
        raise LoadError(f"{where} is nested too deeply") from None


def read_bounded(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing files over ``max_bytes`` without reading them whole."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except IsADirectoryError:
        raise LoadError(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise LoadError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise LoadError(f"{what} {path} is larger than {max_bytes >> 20 or 1} MiB; refusing to read it")
    return data


def read_text(path: str | os.PathLike, max_bytes: int, what: str) -> str:
    """A UTF-8 text file of at most ``max_bytes`` (one-line :class:`LoadError` otherwise)."""
    data = read_bounded(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LoadError(f"{what} {path} is not UTF-8 text") from None


def read_yaml_file(path: str | os.PathLike, what: str = "config file") -> Any:
    """Read and parse a YAML file with every bound of this module."""
    return load_yaml_text(read_text(path, MAX_YAML_BYTES, what), str(path))


# --------------------------------------------------------------------------- JSON

def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise LoadError(f"duplicate key '{k}'")
        out[k] = v
    return out


def load_json_text(text: str, where: str = "JSON") -> Any:
    """Parse JSON text: no duplicate keys, bounded size and depth (the schemas check the values)."""
    if len(text) > MAX_JSON_BYTES:
        raise LoadError(f"{where} is larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except LoadError as exc:
        raise LoadError(f"{where}: {exc}") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise LoadError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise LoadError(f"{where} is nested too deeply") from None


def read_json_file(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and parse a JSON file with every bound of this module."""
    return load_json_text(read_text(path, max_bytes, what), str(path))


__all__ = ["LoadError", "load_yaml_text", "read_yaml_file", "load_json_text", "read_json_file", "read_bounded",
           "MAX_DEPTH", "MAX_ALIASES", "MAX_NODES", "MAX_YAML_BYTES", "MAX_JSON_BYTES"]


def read_document(path: str | os.PathLike, what: str, fmt: str, model):
    """A Mustangs JSON file whose ``format`` is ``fmt``: ``(the raw mapping, model validated from it)``.

    Every bound of this module applies; a missing file, a folder, a foreign format or a malformed
    field is a one-line error naming ``path``.
    """
    from mustangs.errors import UserError
    from mustangs.io.validation import validate

    path = Path(path)
    if not path.is_file():
        raise UserError(f"cannot read {path}: {'it is a folder' if path.is_dir() else 'no such file'}")
    data = read_json_file(path, what)
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise UserError(f"{path} is not a Mustangs {what} (format != {fmt})")
    return data, validate(model, data, str(path))
