"""Checking (partial or resolved) config trees against :mod:`ssaseg.config.schema`.

Every message is one sentence that names where the value came from (a file, a ``--set``), the
key, the value and what was expected, so the CLI can print it as is and exit 2.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, Iterable, Union

from .schema import ExperimentConfig

__all__ = [
    "ConfigError",
    "field_type",
    "field_types",
    "required_keys",
    "suggest",
    "type_text",
    "validate_config",
    "validate_tree",
]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema (the message says where and why)."""


_DELETE = "_delete_"
_SCALAR_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_LIST_NAMES = {bool: "a list of booleans", int: "a list of integers", float: "a list of numbers", str: "a list of strings"}


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of a schema dataclass (cached)."""
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def field_type(tp: Any) -> tuple[Any, bool]:
    """``(type without None, nullable)`` of an annotation such as ``int | None``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), len(args) < len(typing.get_args(tp))
    return tp, False


def _mapping_value_type(tp: Any) -> Any | None:
    """For ``dict[str, X]``: X (``Any`` for a free-form mapping); None when ``tp`` is no dict."""
    if typing.get_origin(tp) is dict:
        return typing.get_args(tp)[1]
    return None


def type_text(tp: Any) -> str:
    """The expected type in words, e.g. ``"a list of integers or null"``."""
    inner, nullable = field_type(tp)
    if dataclasses.is_dataclass(inner) or _mapping_value_type(inner) is not None:
        text = "a mapping"
    elif typing.get_origin(inner) is list:
        text = _LIST_NAMES[typing.get_args(inner)[0]]
    else:
        text = _SCALAR_NAMES[inner]
    return text + (" or null" if nullable else "")


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in field_types(cls).items():
        keys.append(prefix + name)
        inner, _ = field_type(tp)
        if dataclasses.is_dataclass(inner):
            keys += _all_keys(inner, f"{prefix}{name}.")
    return keys


def required_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Dotted keys marked ``required`` (they must be non-null in a config used for a run)."""
    out = []
    for f in dataclasses.fields(cls):
        inner, nullable = field_type(field_types(cls)[f.name])
        if f.metadata.get("required"):
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(inner) and not nullable:
            out += required_keys(inner, f"{prefix}{f.name}.")
    return out


def _coerce_number(value: Any) -> Any:
    # PyYAML (YAML 1.1) reads ``1e-4`` (no dot) as a string.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_scalar(value: Any, tp: type) -> bool:
    # bool is an int subclass: reject True where a number is expected.
    if isinstance(value, bool):
        return tp is bool
    if tp is float:
        return isinstance(value, (int, float))
    return isinstance(value, tp)


def _check_value(value: Any, tp: Any, meta: Any, key: str, source: str) -> Any:
    """Check one value against its annotation and metadata; return the normalised value."""
    normalise = meta.get("normalise")
    if normalise is not None:
        value = normalise(value)
    inner, nullable = field_type(tp)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{source}: {key} must be {type_text(tp)}, got null")
    if dataclasses.is_dataclass(inner):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        validate_tree(value, source, inner, key + ".")
        missing = [f.name for f in dataclasses.fields(inner)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in value]
        if missing:
            raise ConfigError(f"{source}: {key} needs {', '.join(missing)}, got {value!r}")
        return value
    rule_type = _mapping_value_type(inner)
    if rule_type is not None:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        if rule_type is not Any:
            for name, rule in value.items():
                if name == _DELETE:
                    continue
                if not isinstance(rule, dict):
                    raise ConfigError(f"{source}: {key}.{name} must be a mapping, got {rule!r}")
                validate_tree(rule, source, rule_type, f"{key}.{name}.")
        return value
    if typing.get_origin(inner) is list:
        elem = typing.get_args(inner)[0]
        if isinstance(value, list) and elem is float:
            value = [_coerce_number(v) for v in value]
        if not isinstance(value, list) or not all(_is_scalar(v, elem) for v in value):
            raise ConfigError(f"{source}: {key} must be {type_text(tp)}, got {value!r}")
    else:
        if inner is float:
            value = _coerce_number(value)
        if not _is_scalar(value, inner):
            raise ConfigError(f"{source}: {key} must be {type_text(tp)}, got {value!r}")
    choices = meta.get("choices")
    if choices is not None:
        allowed = tuple(choices() if callable(choices) else choices)
        if value not in allowed:
            raise ConfigError(
                f"{source}: {key} must be one of {', '.join(allowed)}, got {value!r}{suggest(str(value), allowed)}"
            )
    check = meta.get("check")
    if check is not None and not check.test(value):
        raise ConfigError(f"{source}: {key} must be {check.expect}, got {value!r}")
    return value


def validate_tree(tree: dict, source: str, cls: type = ExperimentConfig, prefix: str = "") -> dict:
    """Check ``tree`` (a possibly partial config) against section ``cls``; normalise in place.

    Unknown keys are reported with the nearest valid key (a sibling first, then any key).
    ``_delete_`` is accepted in every mapping below the root (it steers ``_base_`` merging).
    """
    fields = _fields(cls)
    hints = field_types(cls)
    for key in list(tree):
        if key == _DELETE and prefix:
            continue
        full = f"{prefix}{key}"
        if key not in fields:
            siblings = [f"{prefix}{k}" for k in fields]
            hint = suggest(full, siblings) or suggest(full, _all_keys(ExperimentConfig))
            raise ConfigError(f"{source}: unknown key {full!r}{hint}")
        tree[key] = _check_value(tree[key], hints[key], fields[key].metadata, full, source)
    return tree


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Validate a full config and check the keys every run needs; returns ``cfg``."""
    validate_tree(cfg, source)
    for key in required_keys():
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise ConfigError(f"{source}: {key} must be set")
    return cfg
