"""Reading weight files and loading them into modules: the bottom layer of ssaseg's weights code.

This module imports only torch, safetensors and the standard library, so every other module
(backbones, checkpoints, pretrained configs, the engine) can use it without import cycles.

* :func:`read_checkpoint` / :func:`read_state_dict`: ``torch.load(weights_only=True)`` or
  safetensors; a missing, empty, truncated or corrupt file raises :class:`WeightsError` naming
  it. Extra classes for the weights-only unpickler are allowed only around that one load
  (``torch.serialization.safe_globals``), never process-wide.
* :func:`register_converter` / :func:`get_converter`: per-architecture key converters, pure
  functions ``state_dict -> state_dict`` that map the published layouts of one backbone onto
  its module names. The backbone files register them; pretrained configs name them.
* :func:`load_state_dict_checked` and :func:`load_weights`: strict (or non-strict) loading with a
  key report; a misfit raises :class:`WeightsError` naming the file and the keys.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "StateDict",
    "WeightsError",
    "LoadReport",
    "Converter",
    "DEFAULT_WRAPPERS",
    "read_checkpoint",
    "unwrap_state_dict",
    "read_state_dict",
    "register_converter",
    "get_converter",
    "list_converters",
    "load_state_dict_checked",
    "load_weights",
    "strip_prefixes",
]

StateDict = dict[str, Tensor]

#: Keys under which checkpoints nest their state dict, tried in order: mmseg/mmcv
#: (``state_dict``), timm/DeiT-style training scripts and snap-research (``model``), EMA copies.
DEFAULT_WRAPPERS: tuple[str, ...] = ("state_dict", "model", "state_dict_ema")


class WeightsError(ValueError):
    """A weights file that is missing, empty, corrupt, or does not fit the model.

    A user error: the message is one paragraph naming the file (the CLI prints it and exits
    with code 2). Subclasses ``ValueError`` so that existing ``except ValueError`` still works.
    """


def _describe(path: str) -> str:
    size = os.path.getsize(path)
    return f"{size} bytes"


def read_checkpoint(path: str | os.PathLike, allowed_globals: Sequence[type] = ()) -> dict:
    """Read a ``.pth``/``.pt``/``.bin`` file with ``weights_only=True`` (or a ``.safetensors`` file).

    Args:
        path: the file.
        allowed_globals: extra classes the weights-only unpickler may rebuild for this one load
            (e.g. ``argparse.Namespace`` pickled by timm's train script). Scoped with
            ``torch.serialization.safe_globals``; nothing is registered process-wide.
    Returns:
        The checkpoint dict (for safetensors: the flat state dict).
    Raises:
        WeightsError: naming the file when it is missing, empty, truncated or corrupt, holds
            objects other than tensors and plain containers, or is not a dict.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError(f"weights file not found: {path}")
    if not os.path.isfile(path):
        raise WeightsError(f"weights path {path} is not a file")
    if os.path.getsize(path) == 0:
        raise WeightsError(f"weights file {path} is empty (0 bytes): an interrupted download? Fetch it again")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise WeightsError(
                f"cannot read safetensors file {path} ({_describe(path)}): {err}; the file is truncated or "
                "corrupt, fetch it again"
            ) from None
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, or a pickle of arbitrary objects
        unsafe = _first_global(str(err))
        if unsafe is not None:
            reason = (
                f"it pickles {unsafe}, and ssaseg unpickles only tensors and plain containers "
                "(weights_only=True); re-save its state dict with torch.save or safetensors"
            )
        elif "WeightsUnpickler error:" in str(err):
            detail = str(err).split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
            reason = (
                f"it is not a weights-only torch checkpoint ({detail}): corrupt, or a pickle of arbitrary "
                "objects, which ssaseg never unpickles; re-save it with torch.save or safetensors"
            )
        else:  # EOFError, BadZipFile, PytorchStreamReader / seek errors
            text = str(err).strip().splitlines()[0] if str(err).strip() else ""
            text = text.split(". ")[0].rstrip(".")  # torch appends advice we do not want to repeat
            reason = f"the file is truncated or corrupt ({type(err).__name__}: {text}); fetch it again"
        raise WeightsError(f"cannot read weights file {path} ({_describe(path)}): {reason}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"weights file {path} holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def _first_global(message: str) -> str | None:
    """The class named by torch's weights-only refusal (``Unsupported global: GLOBAL mod.Cls``)."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return m.group(1) if m else None


def unwrap_state_dict(obj: dict, wrappers: Sequence[str] = DEFAULT_WRAPPERS) -> StateDict:
    """The flat state dict inside a checkpoint dict: the first of ``wrappers`` present, else ``obj``."""
    for wrapper in wrappers:
        if wrapper in obj and isinstance(obj[wrapper], dict):
            return obj[wrapper]
    return obj


def read_state_dict(
    path: str | os.PathLike, wrappers: Sequence[str] = DEFAULT_WRAPPERS, allowed_globals: Sequence[type] = ()
) -> StateDict:
    """:func:`read_checkpoint` then :func:`unwrap_state_dict` (``wrappers`` tried in order)."""
    return unwrap_state_dict(read_checkpoint(path, allowed_globals), wrappers)


def strip_prefixes(state_dict: StateDict, prefixes: Sequence[str] = ("module.", "backbone.")) -> StateDict:
    """Remove DDP (``module.``) and segmentor (``backbone.``) prefixes; when any key has the
    ``backbone.`` prefix, keys without it (decoder, heads) are dropped."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "backbone." in prefixes and any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return state_dict


# ---------------------------------------------------------------------------------------------
# Per-architecture key converters

Converter = Callable[[StateDict], StateDict]


@dataclass(frozen=True)
class _ConverterEntry:
    convert: Converter
    keep_initial: str
    wrappers: tuple[str, ...]
    allowed_globals: tuple[type, ...]


_CONVERTERS: dict[str, _ConverterEntry] = {}


def register_converter(
    name: str,
    keep_initial: str = "",
    wrappers: Sequence[str] = DEFAULT_WRAPPERS,
    allowed_globals: Sequence[type] = (),
) -> Callable[[Converter], Converter]:
    """Decorator registering a backbone's key converter under ``name``.

    Args:
        name: the converter name that :class:`ssaseg.pretrained.PretrainedCfg` ``converter``
            fields refer to (one per backbone architecture, e.g. ``"mit"``).
        keep_initial: regex (full match) of the module's state-dict keys that published files do
            not provide and that keep their initial values (e.g. new segmentation-only parameters).
        wrappers: nesting keys of the checkpoint dict, tried in order.
        allowed_globals: classes the weights-only unpickler may rebuild for these files.
    """

    def wrap(fn: Converter) -> Converter:
        if name in _CONVERTERS and _CONVERTERS[name].convert is not fn:
            raise ValueError(f"weights converter {name!r} is registered twice")
        _CONVERTERS[name] = _ConverterEntry(fn, keep_initial, tuple(wrappers), tuple(allowed_globals))
        return fn

    return wrap


def get_converter(name: str) -> Converter:
    """The converter function registered under ``name`` (KeyError listing the known names)."""
    return _entry(name).convert


def list_converters() -> list[str]:
    """Sorted names of the registered converters (those of the backbone modules imported so far)."""
    return sorted(_CONVERTERS)


def _entry(name: str) -> _ConverterEntry:
    if name not in _CONVERTERS:
        raise KeyError(f"no weights converter {name!r} is registered; known: {list_converters()}")
    return _CONVERTERS[name]


# ---------------------------------------------------------------------------------------------
# Checked loading


@dataclass
class LoadReport:
    """What :func:`load_state_dict_checked` did: keys of the module absent from the file
    (``missing``; empty under strict loading), keys of the file the module does not have
    (``unexpected``), and the module keys that kept their initial values by request."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    kept_initial: list[str] = field(default_factory=list)


def load_state_dict_checked(
    module: nn.Module,
    state: StateDict,
    source: str | os.PathLike,
    strict: bool = True,
    keep_initial: str = "",
) -> LoadReport:
    """``module.load_state_dict(state)`` with a report instead of torch's traceback.

    Args:
        module: the target.
        state: the (converted) state dict.
        source: the file, named in the error.
        strict: every key of ``module`` must be in ``state`` and vice versa (except
            ``keep_initial``). Non-strict loading still refuses mis-shaped tensors.
        keep_initial: regex (full match) of module keys that may be absent from ``state``; they
            keep their initial values and are listed in ``LoadReport.kept_initial``.
    Raises:
        WeightsError: naming ``source`` and listing mis-shaped, missing and unexpected keys
            (the first 20 of each).
    """
    own = module.state_dict()
    kept = sorted(k for k in own if k not in state and keep_initial and re.fullmatch(keep_initial, k))
    shape_errors = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(state) - set(kept))
    unexpected = sorted(set(state) - set(own))
    if shape_errors or (strict and (missing or unexpected)):
        lines = [f"weights file {os.fspath(source)} does not fit {type(module).__name__}:"]
        lines += [f"  shape mismatch {e}" for e in shape_errors[:20]]
        lines += [f"  missing {k}" for k in missing[:20]] + [f"  unexpected {k}" for k in unexpected[:20]]
        total = len(shape_errors) + len(missing) + len(unexpected)
        shown = min(len(shape_errors), 20) + min(len(missing), 20) + min(len(unexpected), 20)
        if total > shown:
            lines.append(f"  ... and {total - shown} more")
        raise WeightsError("\n".join(lines))
    module.load_state_dict({**state, **{k: own[k] for k in kept}}, strict=strict)
    return LoadReport(missing=missing, unexpected=unexpected, kept_initial=kept)


def load_weights(module: nn.Module, path: str | os.PathLike, converter: str, strict: bool = True) -> LoadReport:
    """Read ``path``, convert it with the registered ``converter`` and load it checked.

    The one loading path of every backbone: reading (with the converter's wrappers and allowed
    classes), key conversion, and :func:`load_state_dict_checked` with the converter's
    ``keep_initial``.

    Raises:
        WeightsError: naming ``path`` when it cannot be read, is not in a layout the converter
            knows, or does not fit ``module``.
    """
    entry = _entry(converter)
    state = read_state_dict(path, entry.wrappers, entry.allowed_globals)
    try:
        state = entry.convert(state)
    except (KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise WeightsError(f"weights file {os.fspath(path)} is not in a {converter!r} layout ssaseg knows: {message}") from None
    return load_state_dict_checked(module, state, path, strict=strict, keep_initial=entry.keep_initial)
