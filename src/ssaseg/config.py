"""Experiment configs: YAML files with ``_base_`` inheritance, defaults, validation, overrides.

The schema is ``configs/SCHEMA.md``; :data:`DEFAULTS` holds the default of every key. A
resolved config is a plain nested ``dict`` (YAML- and JSON-serialisable), so it can be stored in
checkpoints and written next to a run.

* ``_base_`` (a path or a list of paths, relative to the file) is merged first, depth-first, in
  order; the file's own keys override (dicts merge recursively, any other value is replaced).
  A dict with ``_delete_: true`` replaces the inherited dict instead of merging into it.
* Every file (and every ``--set``) is validated on its own before merging, so an unknown key is
  reported with the file that contains it and the nearest valid key (difflib).
* ``--set key=value``: ``value`` is parsed as YAML (``1e-4`` -> float, ``[1, 2]`` -> list,
  ``null`` -> None).
"""
from __future__ import annotations

import copy
import difflib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "load_config",
    "merge_config",
    "apply_overrides",
    "validate_config",
    "save_config",
    "dump_config",
]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema (the message says where and why)."""


_MEAN = [123.675, 116.28, 103.53]
_STD = [58.395, 57.12, 57.375]

#: The default of every key (configs/SCHEMA.md).
DEFAULTS: dict[str, Any] = {
    "model": {
        "name": None,
        "classifier": "ssa",
        "num_classes": None,
        "kwargs": {},
        "classifier_kwargs": {},
        "backbone_weights": None,
        "checkpoint": None,
        "sync_bn": True,
    },
    "data": {
        "dataset": None,
        "root": None,
        "train_split": "training",
        "val_split": "validation",
        "classes": None,
        "reduce_zero_label": None,
        "batch_size": 4,
        "num_workers": 4,
        "repeat": 1,
        "train_pipeline": {
            "scale": [2048, 512],
            "ratio_range": [0.5, 2.0],
            "crop_size": [512, 512],
            "cat_max_ratio": 0.75,
            "flip_prob": 0.5,
            "photometric": True,
            "mean": list(_MEAN),
            "std": list(_STD),
        },
        "test_pipeline": {
            "scale": [2048, 512],
            "resize_to_multiple": 32,
            "mean": list(_MEAN),
            "std": list(_STD),
        },
    },
    "optimizer": {
        "type": "adamw",
        "lr": 6.0e-5,
        "betas": [0.9, 0.999],
        "momentum": 0.9,
        "weight_decay": 0.01,
        "param_rules": {},
        "layer_decay": None,
    },
    "schedule": {
        "max_iters": 160000,
        "warmup_iters": 1500,
        "warmup_ratio": 1.0e-6,
        "power": 1.0,
        "min_lr": 0.0,
    },
    "train": {
        "amp": "auto",
        "eval_interval": 8000,
        "checkpoint_interval": 8000,
        "log_interval": 50,
        "seed": 0,
        "work_dir": None,
        "find_unused_parameters": False,
        "max_keep_checkpoints": 0,
    },
    "evaluation": {
        "mode": "whole",
        "crop_size": [512, 512],
        "stride": [341, 341],
        "flip": False,
        "scales": [1.0],
    },
}

# Keys whose value is a free-form mapping (its own keys are not part of the schema).
_FREE_FORM = {"model.kwargs", "model.classifier_kwargs", "optimizer.param_rules"}
# Allowed values of enumerated keys.
_CHOICES = {
    "model.classifier": ("ssa", "linear", "cac"),
    "optimizer.type": ("adamw", "sgd"),
    "train.amp": ("auto", "bf16", "fp16", "off"),
    "evaluation.mode": ("whole", "slide"),
}
# Types of keys whose default is None (None is always allowed for them).
_NULLABLE_TYPES: dict[str, tuple[type, ...]] = {
    "model.name": (str,),
    "model.num_classes": (int,),
    "model.backbone_weights": (str,),
    "model.checkpoint": (str,),
    "data.dataset": (str,),
    "data.root": (str,),
    "data.classes": (str,),
    "data.reduce_zero_label": (bool,),
    "data.test_pipeline.resize_to_multiple": (int,),
    "optimizer.layer_decay": (dict,),
    "train.work_dir": (str,),
}
# Keys that must be set (non-null) in a resolved config used for training/testing.
_REQUIRED = ("model.name", "model.num_classes", "data.dataset")
_PARAM_RULE_KEYS = ("lr_mult", "decay_mult")
_LAYER_DECAY_KEYS = ("rate", "num_layers")


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _allowed_types(key: str, default: Any) -> tuple[type, ...] | None:
    if key in _NULLABLE_TYPES:
        return _NULLABLE_TYPES[key]
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, (str, list, dict)):
        return (type(default),)
    return None


def _normalise_value(key: str, value: Any) -> Any:
    # YAML 1.1 reads ``off`` as False; ``amp: off`` means "off".
    if key == "train.amp" and isinstance(value, bool):
        return "auto" if value else "off"
    return value


def _check_value(key: str, value: Any, default: Any, source: str) -> Any:
    value = _normalise_value(key, value)
    if value is None and (default is None or key in _NULLABLE_TYPES):
        return value
    types = _allowed_types(key, default)
    if types is not None and float in types and isinstance(value, str):
        # PyYAML (YAML 1.1) reads ``1e-4`` (no dot) as a string.
        try:
            value = float(value)
        except ValueError:
            pass
    # bool is an int subclass: reject True where a number is expected.
    if types is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
        raise ConfigError(f"{source}: {key} must be {_type_name(types)}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{source}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key == "optimizer.param_rules":
        for rule, mults in value.items():
            if rule == "_delete_":
                continue
            if not isinstance(mults, dict):
                raise ConfigError(f"{source}: optimizer.param_rules.{rule} must be a mapping of lr_mult/decay_mult")
            for name, mult in mults.items():
                if name not in _PARAM_RULE_KEYS:
                    raise ConfigError(
                        f"{source}: unknown key optimizer.param_rules.{rule}.{name}{_suggest(name, _PARAM_RULE_KEYS)}"
                    )
                if isinstance(mult, str):
                    try:
                        mults[name] = mult = float(mult)
                    except ValueError:
                        pass
                if isinstance(mult, bool) or not isinstance(mult, (int, float)):
                    raise ConfigError(f"{source}: optimizer.param_rules.{rule}.{name} must be a number, got {mult!r}")
    if key == "optimizer.layer_decay":
        for name in value:
            if name not in _LAYER_DECAY_KEYS:
                raise ConfigError(f"{source}: unknown key optimizer.layer_decay.{name}{_suggest(name, _LAYER_DECAY_KEYS)}")
        missing = [k for k in _LAYER_DECAY_KEYS if k not in value]
        if missing:
            raise ConfigError(f"{source}: optimizer.layer_decay needs {', '.join(missing)}")
    return value


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _all_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, dict) and full not in _FREE_FORM:
            keys += _all_keys(v, full + ".")
    return keys


def _validate_tree(tree: dict, schema: dict, source: str, prefix: str = "") -> None:
    """Check ``tree`` (a possibly partial config) against ``schema``; raise ConfigError."""
    for key, value in tree.items():
        if key == "_delete_" and prefix:
            continue
        full = f"{prefix}{key}"
        if key not in schema:
            siblings = [f"{prefix}{k}" for k in schema]
            hint = _suggest(full, siblings) or _suggest(full, _all_keys(DEFAULTS))
            raise ConfigError(f"{source}: unknown key {full!r}{hint}")
        default = schema[key]
        if isinstance(default, dict) and full not in _FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {full} must be a mapping, got {value!r}")
            _validate_tree(value, default, source, full + ".")
        else:
            tree[key] = _check_value(full, value, default, source)


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


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
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
    _validate_tree(data, DEFAULTS, str(path))
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base)
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from None
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
        _validate_tree(patch, DEFAULTS, f"--set {text}")
        if isinstance(value, dict):
            # ``--set model.kwargs={a: 1}`` replaces the mapping rather than merging into it.
            node[parts[-1]] = {**value, "_delete_": True}
        out = merge_config(out, patch)
    return out


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Validate a full config and check the keys every run needs; returns ``cfg``."""
    _validate_tree(cfg, DEFAULTS, source)
    for key in _REQUIRED:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise ConfigError(f"{source}: {key} must be set")
    sched, train = cfg["schedule"], cfg["train"]
    if sched["max_iters"] <= 0:
        raise ConfigError(f"{source}: schedule.max_iters must be positive, got {sched['max_iters']}")
    for k in ("eval_interval", "checkpoint_interval", "log_interval"):
        if train[k] < 0:
            raise ConfigError(f"{source}: train.{k} must be >= 0 (0 disables), got {train[k]}")
    if cfg["data"]["batch_size"] < 1:
        raise ConfigError(f"{source}: data.batch_size must be >= 1, got {cfg['data']['batch_size']}")
    return cfg


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> dict:
    """Load ``path`` (with its ``_base_`` chain) over :data:`DEFAULTS`, apply ``overrides``.

    Returns the resolved config. ``train.work_dir`` defaults to ``runs/<config stem>``.
    Raises :class:`ConfigError` naming the file (or the ``--set``) for any schema violation.
    """
    path = Path(path)
    cfg = merge_config(DEFAULTS, _load_raw(path))
    cfg = apply_overrides(cfg, overrides)
    validate_config(cfg, str(path))
    if cfg["train"]["work_dir"] is None:
        cfg["train"]["work_dir"] = str(Path("runs") / path.stem)
    return cfg


def dump_config(cfg: dict) -> str:
    """YAML text of a resolved config (keys in schema order)."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically (temp file in the same dir + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dump_config(cfg))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
