"""Model and dataset construction from a resolved config, and the AMP policy."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..config import ConfigError

__all__ = ["build_model", "build_datasets", "resolve_amp", "autocast"]


def build_model(cfg: dict, load_weights: bool = True) -> nn.Module:
    """``create_model`` from the ``model`` section; with ``load_weights``, then the backbone weights
    (``model.backbone_weights``: a pretrained tag such as ``imagenet``, downloaded into the cache,
    or a local file; :func:`ssaseg.pretrained.load_backbone_weights`) and the full checkpoint
    (``model.checkpoint``; :func:`ssaseg.checkpoints.load_checkpoint`).

    ``load_weights=False`` builds the architecture only (resuming, or loading a trained checkpoint
    right after). Weight-file problems raise :class:`ssaseg.weights.WeightsError` (a user error).
    """
    from ..models import create_model

    mcfg = cfg["model"]
    kwargs = dict(mcfg["kwargs"])
    if mcfg["classifier_kwargs"]:
        kwargs["classifier_kwargs"] = dict(mcfg["classifier_kwargs"])
    weights = dict(backbone_weights=mcfg["backbone_weights"], checkpoint=mcfg["checkpoint"]) if load_weights else {}
    try:
        model = create_model(mcfg["name"], mcfg["num_classes"], classifier=mcfg["classifier"], **weights, **kwargs)
    except KeyError as err:
        raise ConfigError(f"model.name: {err.args[0]}") from None
    except TypeError as err:
        raise ConfigError(f"model.kwargs / model.classifier_kwargs do not fit {mcfg['name']!r}: {err}") from None
    return model


def build_datasets(cfg: dict, train: bool = True, val: bool = True) -> tuple[Any, Any]:
    """``(train_dataset or None, val_dataset or None)`` via ``ssaseg.data.build_dataset``."""
    from ..data import build_dataset

    dcfg = cfg["data"]
    train_ds = build_dataset(dcfg, dcfg["train_split"], train=True) if train else None
    val_ds = build_dataset(dcfg, dcfg["val_split"], train=False) if val else None
    k = cfg["model"]["num_classes"]
    for ds in (train_ds, val_ds):
        if ds is not None and hasattr(ds, "classes") and len(ds.classes) != k:
            raise ConfigError(
                f"model.num_classes is {k} but dataset {dcfg['dataset']!r} has {len(ds.classes)} classes"
            )
    return train_ds, val_ds


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None = full precision)."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs CUDA (GradScaler); use bf16 or off on CPU")
        return torch.float16
    raise ConfigError(f"train.amp must be auto, bf16, fp16 or off, got {mode!r}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` or a null context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
