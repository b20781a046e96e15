"""Checkpoint loading and conversion from the published (official mmseg 0.30) layouts.

Official SSA-Seg checkpoints name the segmentor's parts ``backbone.*``, ``decode_head.*`` and
``auxiliary_head.*`` (OCRNet: ``decode_head.0.*`` is the stage-0 FCN, ``decode_head.1.*`` the SSA
head). :func:`convert_official_state_dict` maps them onto ssaseg's ``backbone.*``,
``decoder.*``, ``classifier.*`` and ``aux_heads.<i>.{decoder,classifier}.*``:

* the SSA classifier's parameters get their ssaseg names (:data:`SSA_PARAMETER_NAMES`);
* ``conv_seg`` goes to the classifier, everything else of a head to its decoder;
* the unused ``ssa_loss.criterion.empty_weight`` buffer (docs/algorithm.md §2) is dropped;
* architecture-specific rules (e.g. a backbone whose ssaseg module names differ) are registered
  by the zoo files with :func:`register_key_converter` and run after the generic mapping.

Reading files and checked loading live in the leaf module :mod:`ssaseg.weights` (always
``torch.load(..., weights_only=True)`` or safetensors: no arbitrary unpickling); this module adds
the segmentor-level key mapping on top and re-exports the readers under their old names.
"""
from __future__ import annotations

import os
import re
from typing import Callable

from torch import nn

from .weights import (
    StateDict,
    WeightsError,
    load_state_dict_checked,
    read_checkpoint,
    read_state_dict,
    unwrap_state_dict,
)

__all__ = [
    "SSA_PARAMETER_NAMES",
    "StateDict",
    "WeightsError",
    "register_key_converter",
    "has_key_converter",
    "convert_official_state_dict",
    "read_checkpoint",
    "read_state_dict",
    "unwrap_state_dict",
    "load_checkpoint",
    "apply_state_dict",
    "load_state_dict_checked",
]

#: official SSA head name -> ssaseg SSAClassifier attribute.
SSA_PARAMETER_NAMES: dict[str, str] = {
    "conv_seg": "conv_seg",
    "get_feat_pos": "position_encoder",
    "center_pos": "class_position",
    "center_content_proj": "semantic_proj",
    "center_pos_proj": "spatial_proj",
    "center_proj": "center_proj",
    "gt_center_content_proj": "teacher_semantic_proj",
    "gt_center_pos_proj": "teacher_spatial_proj",
    "gt_center_proj": "teacher_center_proj",
}
#: official buffers that no ssaseg module owns (never used by any computation).
DROPPED_SUFFIXES = ("ssa_loss.criterion.empty_weight", "criterion.empty_weight")

KeyConverter = Callable[[StateDict], StateDict]
_KEY_CONVERTERS: dict[str, KeyConverter] = {}


def register_key_converter(arch: str) -> Callable[[KeyConverter], KeyConverter]:
    """Decorator registering an architecture-specific state-dict rewrite, run after the generic one."""

    def wrap(fn: KeyConverter) -> KeyConverter:
        _KEY_CONVERTERS[arch] = fn
        return fn

    return wrap


def has_key_converter(arch: str) -> bool:
    """Whether ``arch`` registered a key converter (its zoo module registers it on import, which
    building one of its models does)."""
    return arch in _KEY_CONVERTERS


def _head_key(rest: str, decoder_prefix: str, classifier_prefix: str) -> str:
    """Map a key inside an official head (``rest`` has the ``decode_head.`` prefix removed)."""
    first, _, tail = rest.partition(".")
    if first in SSA_PARAMETER_NAMES:
        return f"{classifier_prefix}{SSA_PARAMETER_NAMES[first]}.{tail}"
    return f"{decoder_prefix}{rest}"


def convert_official_state_dict(state_dict: StateDict, arch: str | None = None) -> StateDict:
    """Map an official SSA-Seg / mmseg 0.30 segmentor state dict onto ssaseg names.

    Args:
        state_dict: the checkpoint's ``state_dict`` (a ``{"state_dict": ...}`` or ``{"model": ...}``
            wrapper and DDP ``module.`` prefixes are removed first).
        arch: optional architecture name (e.g. ``"segformer"``) whose registered converter runs
            after the generic mapping.
    Returns:
        A new state dict with ssaseg keys; the tensors are shared, not copied.
    """
    for wrapper in ("state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    cascade = any(k.startswith("decode_head.1.") for k in state_dict)
    out: StateDict = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.endswith(DROPPED_SUFFIXES):
            continue
        if cascade and key.startswith("decode_head.0."):
            new = _head_key(key[len("decode_head.0."):], "aux_heads.0.decoder.", "aux_heads.0.classifier.")
        elif cascade and key.startswith("decode_head.1."):
            new = _head_key(key[len("decode_head.1."):], "decoder.", "classifier.")
        elif key.startswith("decode_head."):
            new = _head_key(key[len("decode_head."):], "decoder.", "classifier.")
        elif key.startswith("auxiliary_head."):
            m = re.match(r"auxiliary_head\.(\d+)\.(.*)", key)
            index, rest = (m.group(1), m.group(2)) if m else ("0", key[len("auxiliary_head."):])
            new = _head_key(rest, f"aux_heads.{index}.decoder.", f"aux_heads.{index}.classifier.")
        else:
            new = key
        out[new] = value
    if arch is not None:
        if not has_key_converter(arch):
            raise KeyError(f"no key converter registered for arch {arch!r}; known: {sorted(_KEY_CONVERTERS)}")
        out = _KEY_CONVERTERS[arch](out)
    return out


def load_checkpoint(model: nn.Module, path: str | os.PathLike, arch: str | None = None, strict: bool = True) -> None:
    """Load a full-model checkpoint file (ssaseg or official layout) into ``model``.

    See :func:`apply_state_dict`; raises :class:`~ssaseg.weights.WeightsError` (a ``ValueError``)
    naming the file when it cannot be read or does not fit.
    """
    apply_state_dict(model, read_state_dict(path), path, arch, strict)


def apply_state_dict(
    model: nn.Module, state: StateDict, source: str | os.PathLike, arch: str | None = None, strict: bool = True
) -> None:
    """Load ``state`` (ssaseg or official layout) into ``model``.

    ``arch`` selects the architecture's key converter for official checkpoints; by default it is
    ``model.architecture`` (recorded by :func:`ssaseg.create_model`) when that architecture
    registered one. ``source`` names the file in the error that lists missing/unexpected/
    mis-shaped keys.
    """
    if any(k.startswith(("decode_head.", "auxiliary_head.", "module.decode_head.")) for k in state):
        if arch is None:
            inferred = getattr(model, "architecture", None)
            arch = inferred if inferred is not None and has_key_converter(inferred) else None
        state = convert_official_state_dict(state, arch)
    load_state_dict_checked(model, state, source, strict)
