"""Model registry: ``create_model(name, num_classes, classifier=...)`` and ``list_models()``.

Every architecture lives in one file under :mod:`ssaseg.zoo` and registers its variants with
:func:`register_model`. An entry point builds the architecture only; weights are a separate
concern (:func:`load_checkpoint`, :mod:`ssaseg.checkpoints`), as in timm.
"""
from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from typing import Callable, Protocol

from torch import nn

from .segmentor import Segmentor


class ModelEntrypoint(Protocol):
    def __call__(self, num_classes: int, classifier: str = "ssa", **kwargs) -> Segmentor: ...


_ENTRYPOINTS: dict[str, ModelEntrypoint] = {}
_ZOO_IMPORTED = False


def register_model(fn: Callable[..., Segmentor]) -> Callable[..., Segmentor]:
    """Decorator: register ``fn`` under its function name."""
    name = fn.__name__
    if name in _ENTRYPOINTS and _ENTRYPOINTS[name] is not fn:
        raise ValueError(f"model {name!r} is registered twice")
    _ENTRYPOINTS[name] = fn
    return fn


def _import_zoo() -> None:
    global _ZOO_IMPORTED
    if _ZOO_IMPORTED:
        return
    from . import zoo

    for module in pkgutil.iter_modules(zoo.__path__):
        importlib.import_module(f"{zoo.__name__}.{module.name}")
    _ZOO_IMPORTED = True


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style ``pattern``."""
    _import_zoo()
    return sorted(n for n in _ENTRYPOINTS if fnmatch.fnmatch(n, pattern))


def create_model(
    name: str,
    num_classes: int,
    classifier: str = "ssa",
    checkpoint: str | None = None,
    **kwargs,
) -> Segmentor:
    """Build a registered segmentor.

    Args:
        name: registry name, see :func:`list_models`.
        num_classes: K, the number of classes.
        classifier: ``"ssa"`` or ``"linear"``.
        checkpoint: optional path to a full-model checkpoint (ssaseg or official layout).
        **kwargs: architecture arguments of the entry point (e.g. ``drop_path_rate``),
            plus ``classifier_kwargs`` (a dict passed to the classifier).
    """
    _import_zoo()
    if name not in _ENTRYPOINTS:
        import difflib

        close = difflib.get_close_matches(name, _ENTRYPOINTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (see ssaseg.list_models())")
    if classifier not in ("ssa", "linear"):
        raise ValueError(f"classifier must be 'ssa' or 'linear', got {classifier!r}")
    model = _ENTRYPOINTS[name](num_classes=num_classes, classifier=classifier, **kwargs)
    # Recorded so that load_checkpoint can pick the architecture's key converter.
    model.model_name = name
    model.model_args = dict(kwargs)
    model.classifier_name = classifier
    if checkpoint is not None:
        from .checkpoints import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model


def architecture_of(name: str) -> str:
    """The architecture (zoo module) a registered model belongs to, e.g. ``"upernet_swin"``."""
    _import_zoo()
    return _ENTRYPOINTS[name].__module__.rsplit(".", 1)[-1]


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())
