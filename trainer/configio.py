"""Typed configs from YAML with dotted ``key=value`` overrides.

A config is a (nested) dataclass. Fields may carry legal values through :func:`option`;
unknown keys, wrong types and illegal values raise :class:`ConfigError` naming the key
and what would be legal, so CLIs can fail early with one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from mustangs.errors import ConfigError
from mustangs.io.loaders import LoadError, load_yaml_text, read_yaml_file

T = TypeVar("T")


def option(default: Any, *, choices: Iterable[Any] | None = None, ge: float | None = None,
           gt: float | None = None, le: float | None = None, renamed: Mapping[Any, Any] | None = None) -> Any:
    """A dataclass field with legal values (``choices``) or bounds, checked at load time.

    ``renamed`` maps retired values to their new names, so an old config fails with one line
    that says what to write instead (rather than a bare "illegal value").
    """
    meta = {"choices": tuple(choices) if choices is not None else None, "ge": ge, "gt": gt, "le": le,
            "renamed": dict(renamed or {})}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be null (expected {_type_name(tp)})")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise ConfigError(f"{key}: {value} is too large for a number") from None
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return value
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _check_bounds(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    renamed = meta.get("renamed") or {}
    if choices is not None and value not in choices and value in renamed:
        raise ConfigError(f"{key}: the value {value!r} was renamed to {renamed[value]!r}; "
                          f"write {key.split('.')[-1]}: {renamed[value]} (or the override {key}={renamed[value]})")
    if choices is not None and value not in choices:
        legal = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{key}: illegal value {value!r}; legal values: {legal}")
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<=")):
        b = meta.get(bound)
        if b is not None and not ok(value, b):
            raise ConfigError(f"{key}: illegal value {value!r}; must be {word} {b}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys and bad values."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{hint}; known keys here: "
                + ", ".join(prefix + k for k in fields)
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            value = _coerce(data[name], hints[name], prefix + name)
            _check_bounds(value, f.metadata, prefix + name)
            kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for YAML/JSON and checkpoints)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """The config as YAML, in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["grid.height=3", "loss=bce"]`` into a nested mapping (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. grid.height=3)")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = load_yaml_text(raw, f"override '{item}'") if raw.strip() else None
        except LoadError as exc:
            if "not valid YAML" not in str(exc):
                raise
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the bounded loader (size, depth, aliases, duplicate keys), turning
    I/O and syntax problems into one-line ConfigErrors."""
    path = Path(path)
    data = read_yaml_file(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from an optional YAML file plus dotted ``key=value`` overrides."""
    data = read_yaml(path) if path is not None else {}
    data = _merge(data, parse_overrides(overrides))
    return from_dict(cls, data)
