"""``configs/SCHEMA.md``, rendered from the schema (``python -m ssaseg.config`` rewrites it)."""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

import yaml

from ..tables import render_table
from .schema import ExperimentConfig, LayerDecay, ParamRule
from .validation import field_types, field_type

__all__ = ["SCHEMA_PATH", "render_schema_doc", "write_schema_doc"]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "configs" / "SCHEMA.md"

_INTRO = """\
# Experiment config schema

<!-- Generated from src/ssaseg/config/schema.py by `python -m ssaseg.config`; do not edit. -->

One YAML file per experiment. `_base_` (a path or a list of paths, relative to the file) is
merged first, depth-first, in order; the file's own keys then override (dicts merge
recursively, every other value is replaced; a mapping with `_delete_: true` replaces the
inherited mapping instead of merging into it). `ssaseg train CFG --set optimizer.lr=1e-4 --set
data.batch_size=2` overrides any key (value parsed as YAML). The resolved config is saved as
`config.yaml` in the run directory.

Resolution order, lowest first: the defaults below < the chosen `data.dataset`'s own defaults
(table "Dataset defaults") < the `_base_` files < the file < each `--set`. Every file and
every `--set` is validated on its own: an unknown key is an error that names the file and
suggests the nearest valid key; a bad value names the key, the value and what was expected; a
mapping that repeats a key is refused with the line. `model.name`, `model.num_classes` and
`data.dataset` are required.

Shared bases live in `configs/_base_/`: `datasets/*.yaml` and `schedules/*.yaml`, e.g.
`_base_: [../_base_/datasets/ade20k.yaml, ../_base_/schedules/poly_160k.yaml]`.
"""

_OUTRO = """\
## Notes

Parameter names in `param_rules` are ssaseg's (`backbone.*`, `decoder.*`, `classifier.*`,
`aux_heads.*`). mmseg's `head: lr_mult 10` is written as `decoder`, `classifier` and
`aux_heads` rules with the same multiplier, since mmseg's `head` matched `decode_head.*` and
`auxiliary_head.*`.

A run directory holds `config.yaml` (the resolved config), `log.jsonl` (one record per log
step: iteration, lr, mean loss terms, training time; one record per evaluation: aAcc, mIoU,
mAcc, per-class IoU/Acc), `tb/` (TensorBoard scalars) and `iter_<n>.pth` checkpoints (model,
optimizer, scheduler, iteration, RNG states, sampler position, resolved config, class names and
palette), written atomically. `ssaseg train CFG --resume auto` continues from the newest one.
`train.amp: off` may be written unquoted (YAML reads it as `false`, which means `off`).
"""

_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}


def _inline(value: Any) -> str:
    """A value as YAML flow text (``[2048, 512]``, ``null``, ``6.0e-05``)."""
    return yaml.safe_dump([value], default_flow_style=True, width=1000).strip()[1:-1]


def _type_name(tp: Any) -> str:
    inner, nullable = field_type(tp)
    if dataclasses.is_dataclass(inner):
        text = "mapping"
    elif typing.get_origin(inner) is dict:
        value_type = typing.get_args(inner)[1]
        text = "mapping" if value_type is Any else f"mapping of {value_type.__name__}"
    elif typing.get_origin(inner) is list:
        text = f"list[{_SCALARS[typing.get_args(inner)[0]]}]"
    else:
        text = _SCALARS[inner]
    return text + (" | null" if nullable else "")


def _allowed(f: dataclasses.Field) -> str:
    choices, check = f.metadata.get("choices"), f.metadata.get("check")
    parts = []
    if choices is not None:
        parts.append(" | ".join(f"`{c}`" for c in (choices() if callable(choices) else choices)))
    if check is not None:
        parts.append(check.expect)
    if f.metadata.get("required"):
        parts.append("required")
    return "; ".join(parts)


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split()).replace("``", "`")


def _section_table(cls: type, prefix: str, defaults: dict) -> str:
    rows = []
    for f in dataclasses.fields(cls):
        inner, nullable = field_type(field_types(cls)[f.name])
        if dataclasses.is_dataclass(inner) and not nullable:
            continue  # a nested section gets its own table
        default = "(none)" if f.name not in defaults else f"`{_inline(defaults[f.name])}`"
        doc = f.metadata["doc"].replace("``", "`")
        rows.append([f"`{prefix}{f.name}`", _type_name(field_types(cls)[f.name]), default, _allowed(f), doc])
    header = ["key", "type", "default", "allowed", "meaning"]
    return render_table(header, rows)


def _sections(cls: type, defaults: dict, prefix: str = "") -> list[str]:
    parts = []
    if prefix:
        doc = _doc(cls)
        parts += [f"## `{prefix.rstrip('.')}`", "", doc, "", _section_table(cls, prefix, defaults), ""]
    for f in dataclasses.fields(cls):
        inner, nullable = field_type(field_types(cls)[f.name])
        if dataclasses.is_dataclass(inner) and not nullable:
            parts += _sections(inner, defaults[f.name], f"{prefix}{f.name}.")
    return parts


def _dataset_table() -> str:
    from ..data.datasets import DATASETS
    from . import dataset_defaults

    trees = {name: dataset_defaults(name)["data"] for name in DATASETS}
    columns = [
        (section, key)
        for section in ("train_pipeline", "test_pipeline")
        for key in dict.fromkeys(k for tree in trees.values() for k in tree[section])
    ]
    header = ["`data.dataset`", *(f"`{section}.{key}`" for section, key in columns)]
    rows = [
        [f"`{name}`", *(_inline(tree[s][k]) if k in tree[s] else "(schema)" for s, k in columns)]
        for name, tree in trees.items()
    ]
    return render_table(header, rows)


def render_schema_doc() -> str:
    """The text of ``configs/SCHEMA.md``: every key's type, default, allowed values, meaning."""
    from . import schema_defaults

    parts = [_INTRO, *_sections(ExperimentConfig, schema_defaults())]
    parts += [
        "### `optimizer.param_rules` entries",
        "",
        _doc(ParamRule),
        "",
        _section_table(ParamRule, "optimizer.param_rules.<substring>.", dataclasses.asdict(ParamRule())),
        "",
        "### `optimizer.layer_decay`",
        "",
        _doc(LayerDecay),
        "",
        _section_table(LayerDecay, "optimizer.layer_decay.", {}),
        "",
        "## Dataset defaults",
        "",
        "Applied over the schema defaults above for the chosen `data.dataset` (from\n"
        "`ssaseg.data.DATASETS`); `_base_` files, the config and `--set` override them.",
        "",
        _dataset_table(),
        "",
        _OUTRO,
    ]
    return "\n".join(parts)


def write_schema_doc(path: str | os.PathLike = SCHEMA_PATH) -> bool:
    """Write :func:`render_schema_doc` to ``path`` atomically; True when the file changed."""
    path = Path(path)
    text = render_schema_doc()
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    from ..fileio import atomic_write

    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return True
