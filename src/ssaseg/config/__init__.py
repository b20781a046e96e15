"""Experiment configs: YAML files with ``_base_`` inheritance, typed defaults, validation, overrides.

The schema is :mod:`ssaseg.config.schema` (one dataclass per section; ``configs/SCHEMA.md`` is
generated from it by ``python -m ssaseg.config``). A resolved config is a plain nested ``dict``
(YAML- and JSON-serialisable), so it can be stored in checkpoints and written next to a run.

Resolution order, lowest first: the schema's defaults < the chosen ``data.dataset``'s own
defaults (``ssaseg.data.DATASETS[name].train_defaults`` / ``test_defaults``) < the ``_base_``
files < the file itself < each ``--set``.

* ``_base_`` (a path or a list of paths, relative to the file) is merged first, depth-first, in
  order; the file's own keys override (dicts merge recursively, any other value is replaced).
  A dict with ``_delete_: true`` replaces the inherited dict instead of merging into it.
* Every file (and every ``--set``) is validated on its own before merging, so an unknown key or
  a bad value is reported with the file that contains it (unknown keys with the nearest valid
  key); a mapping that repeats a key is refused with the file, the key and the line.
* ``--set key=value``: ``value`` is parsed as YAML (``1e-4`` -> float, ``[1, 2]`` -> list,
  ``null`` -> None).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from .schema import schema_defaults
from .validation import ConfigError, suggest, validate_config, validate_tree

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "load_config",
    "merge_config",
    "apply_overrides",
    "validate_config",
    "save_config",
    "dump_config",
    "dataset_defaults",
    "parse_override",
    "schema_defaults",
]


def __getattr__(name: str) -> Any:
    # ``DEFAULTS`` is derived from the schema on access (a fresh copy, so callers cannot
    # mutate the defaults of later loads); computing it needs ssaseg.data.meta, which is
    # imported lazily to keep this package a leaf.
    if name == "DEFAULTS":
        return schema_defaults()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def merge_config(base: dict, override: dict) -> dict:
    """Recursive merge: dicts merge, other values replace; ``_delete_: true`` replaces a dict."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict):
            value = dict(value)
            replace = bool(value.pop("_delete_", False))
            if not replace and isinstance(out.get(key), dict):
                out[key] = merge_config(out[key], value)
                continue
            out[key] = merge_config({}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(key, line, first_line)
        self.key, self.line, self.first_line = key, line, first_line


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping repeating a key (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor`` keys may legitimately be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, line, seen[key])
                seen[key] = line
            except TypeError:  # unhashable key: SafeLoader reports it below
                pass
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{source}: duplicate key {dup.key!r} on line {dup.line} (first given on line {dup.first_line})"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = _parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def _load_raw(path: Path, stack: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and its ``_base_`` chain into one merged (validated) partial config."""
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"circular _base_ chain: {chain}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
    validate_tree(data, str(path))
    merged: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_ file not found: {base} (looked for {base_path})")
        merged = merge_config(merged, _load_raw(base_path, (*stack, path)))
    return merge_config(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=1e-4"`` -> (["optimizer", "lr"], 1e-4); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=1e-4")
    value = _parse_yaml(raw, f"--set {text!r}") if raw.strip() else None
    return key.split("."), value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``--set key=value`` strings to ``cfg`` (validated like a file); return a new dict."""
    out = cfg
    for text in overrides:
        parts, value = parse_override(text)
        patch: dict = {}
        node = patch
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        validate_tree(patch, f"--set {text}")
        if isinstance(value, dict):
            # ``--set model.kwargs={a: 1}`` replaces the mapping rather than merging into it.
            node[parts[-1]] = {**value, "_delete_": True}
        out = merge_config(out, patch)
    return out


def dataset_defaults(name: str | None, source: str = "config") -> dict:
    """The partial config holding dataset ``name``'s own pipeline defaults ({} for None).

    Read from ``ssaseg.data.DATASETS[name]`` (``train_defaults`` -> ``data.train_pipeline``,
    ``test_defaults`` -> ``data.test_pipeline``); an unknown name is a :class:`ConfigError`.
    """
    if name is None:
        return {}
    from ..data.datasets import DATASETS  # torch-side module: only when a config is resolved

    if name not in DATASETS:
        raise ConfigError(
            f"{source}: data.dataset must be one of {', '.join(DATASETS)}, got {name!r}{suggest(name, DATASETS)}"
        )
    spec = DATASETS[name]

    def plain(values: dict) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    tree = {"data": {"train_pipeline": plain(spec.train_defaults), "test_pipeline": plain(spec.test_defaults)}}
    return validate_tree(tree, f"defaults of dataset {name!r}")


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict:
    """Load ``path`` (with its ``_base_`` chain) over the defaults, apply ``overrides``.

    Defaults: the schema's, then those of the dataset the config chooses. Returns the resolved
    config; ``train.work_dir`` defaults to ``runs/<config stem>``. Raises :class:`ConfigError`
    naming the file (or the ``--set``) for any schema violation.
    """
    path = Path(path)
    user = apply_overrides(_load_raw(path), overrides)
    dataset = user.get("data", {}).get("dataset")
    cfg = merge_config(merge_config(schema_defaults(), dataset_defaults(dataset, str(path))), user)
    validate_config(cfg, str(path))
    if cfg["train"]["work_dir"] is None:
        cfg["train"]["work_dir"] = str(Path("runs") / path.stem)
    return cfg


def dump_config(cfg: dict) -> str:
    """YAML text of a resolved config (keys in schema order)."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically, with the umask's permissions."""
    from ..fileio import atomic_write

    text = dump_config(cfg).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(text))
