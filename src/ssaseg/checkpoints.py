"""Checkpoint loading and conversion from the published (official mmseg 0.30) layouts.

Official SSA-Seg checkpoints name the segmentor's parts ``backbone.*``, ``decode_head.*`` and
``auxiliary_head.*`` (OCRNet: ``decode_head.0.*`` is the stage-0 FCN, ``decode_head.1.*`` the SSA
head). :func:`convert_official_state_dict` maps them onto ssaseg's ``backbone.*``,
``decoder.*``, ``classifier.*`` and ``aux_heads.<i>.{decoder,classifier}.*``:

* the SSA classifier's parameters get their ssaseg names (:data:`SSA_PARAMETER_NAMES`);
* ``conv_seg`` goes to the classifier, everything else of a head to its decoder;
* the unused ``ssa_loss.criterion.empty_weight`` buffer (spec §2) is dropped;
* architecture-specific rules (e.g. a backbone whose ssaseg module names differ) are registered
  by the zoo files with :func:`register_key_converter` and run after the generic mapping.

Loading is always ``torch.load(..., weights_only=True)`` or safetensors: no arbitrary unpickling.
"""
from __future__ import annotations

import os
import re
from typing import Callable

import torch
from torch import Tensor, nn

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

StateDict = dict[str, Tensor]
KeyConverter = Callable[[StateDict], StateDict]
_KEY_CONVERTERS: dict[str, KeyConverter] = {}


def register_key_converter(arch: str) -> Callable[[KeyConverter], KeyConverter]:
    """Decorator registering an architecture-specific state-dict rewrite, run after the generic one."""

    def wrap(fn: KeyConverter) -> KeyConverter:
        _KEY_CONVERTERS[arch] = fn
        return fn

    return wrap


def has_key_converter(arch: str) -> bool:
    """Whether an architecture registered a key converter (imports the zoo so it can)."""
    from .models import _import_zoo

    _import_zoo()
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


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ``.pth``/``.pt`` file with ``weights_only=True`` (or a ``.safetensors`` file) into a dict.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file when it is missing, corrupt,
    holds arbitrary pickled objects, or is not a dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file or a pickle holding arbitrary objects
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def unwrap_state_dict(
    obj: dict, wrappers: tuple[str, ...] = ("state_dict", "model", "state_dict_ema")
) -> StateDict:
    """The flat state dict inside a checkpoint dict: the first of ``wrappers`` present, else ``obj``."""
    for wrapper in wrappers:
        if wrapper in obj and isinstance(obj[wrapper], dict):
            return obj[wrapper]
    return obj


def read_state_dict(
    path: str | os.PathLike, wrappers: tuple[str, ...] = ("state_dict", "model", "state_dict_ema")
) -> StateDict:
    """Read a checkpoint file (see :func:`read_checkpoint`) into a flat state dict.

    ``wrappers``: keys of nested state dicts, tried in order (SeaFormer's loader puts
    ``state_dict_ema`` first, as the original does).
    """
    return unwrap_state_dict(read_checkpoint(path), wrappers)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, arch: str | None = None, strict: bool = True) -> None:
    """Load a full-model checkpoint file (ssaseg or official layout) into ``model``.

    See :func:`apply_state_dict`; raises ``ValueError`` naming the file when it does not fit.
    """
    apply_state_dict(model, read_state_dict(path), path, arch, strict)


def apply_state_dict(
    model: nn.Module, state: StateDict, source: str | os.PathLike, arch: str | None = None, strict: bool = True
) -> None:
    """Load ``state`` (ssaseg or official layout) into ``model``.

    ``arch`` selects the architecture's key converter for official checkpoints; by default it is
    inferred from ``model.model_name`` (set by :func:`ssaseg.create_model`). ``source`` names the
    file in the error that lists missing/unexpected/mis-shaped keys.
    """
    if any(k.startswith(("decode_head.", "auxiliary_head.", "module.decode_head.")) for k in state):
        if arch is None and getattr(model, "model_name", None):
            from .models import architecture_of

            inferred = architecture_of(model.model_name)
            arch = inferred if has_key_converter(inferred) else None
        state = convert_official_state_dict(state, arch)
    load_state_dict_checked(model, state, source, strict)


def load_state_dict_checked(
    model: nn.Module, state: StateDict, source: str | os.PathLike, strict: bool = True
) -> None:
    """``model.load_state_dict(state, strict)``, but a misfit raises a ``ValueError`` that names
    ``source`` (the file) and lists missing / unexpected / mis-shaped keys (first 20 of each)."""
    own = model.state_dict()
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if shape_errors or (strict and (missing or unexpected)):
        lines = [f"checkpoint {os.fspath(source)} does not fit {type(model).__name__}:"]
        lines += [f"  shape mismatch {e}" for e in shape_errors[:20]]
        lines += [f"  missing {k}" for k in missing[:20]] + [f"  unexpected {k}" for k in unexpected[:20]]
        raise ValueError("\n".join(lines))
    model.load_state_dict(state, strict=strict)


def load_backbone_weights(module: nn.Module, state: StateDict, source: str | os.PathLike, keep_initial: str = "") -> list[str]:
    """Strict load of ``state`` into ``module``, except that parameters whose names fully match the
    regex ``keep_initial`` may be absent from ``state`` (they keep their initial values).

    A misfit raises ``ValueError`` naming ``source`` (see ``load_state_dict_checked``). Returns the
    names that kept their initial values.
    """
    own = module.state_dict()
    kept = [k for k in own if k not in state and keep_initial and re.fullmatch(keep_initial, k)]
    load_state_dict_checked(module, {**state, **{k: own[k] for k in kept}}, source)
    return kept
