"""Model registry: ``create_model(name, num_classes, classifier=...)`` and ``list_models()``.

Every architecture lives in one file under :mod:`ssaseg.zoo` and registers its variants with
:func:`register_model`. Its architecture arguments are a frozen dataclass (e.g.
:class:`ssaseg.zoo.segnext.SegNeXtArgs`), one instance per variant holding the paper's values; an
entry point builds ``dataclasses.replace(variant, **overrides)``. An entry point builds the
architecture only; weights are a separate concern (``backbone_weights`` / ``checkpoint`` of
:func:`create_model`), as in timm.
"""
from __future__ import annotations

import fnmatch
import importlib
import os
import pkgutil
from typing import Any, Callable, Protocol

from torch import nn

from .classifiers import check_classifier
from .segmentor import Segmentor


class ModelEntrypoint(Protocol):
    """A registered model: ``entry(num_classes, classifier="ssa", classifier_kwargs=None,
    **overrides) -> Segmentor``.

    ``classifier`` is a key of :data:`ssaseg.classifiers.CLASSIFIERS`; ``classifier_kwargs`` go to
    the classifier's constructor (SSA constants, loss weights); ``overrides`` replace fields of the
    variant's architecture arguments (a frozen dataclass), and an unknown name raises
    ``TypeError`` listing the accepted ones.
    """

    def __call__(
        self, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
    ) -> Segmentor: ...


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
    checkpoint: str | os.PathLike | None = None,
    backbone_weights: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Segmentor:
    """Build a registered segmentor.

    Args:
        name: registry name, see :func:`list_models`; or ``"tu-<timm name>"`` for a timm
            ``features_only`` encoder with an ssaseg decoder (:mod:`ssaseg.integrations.timm`).
        num_classes: K, the number of classes.
        classifier: a key of :data:`ssaseg.classifiers.CLASSIFIERS`.
        checkpoint: optional path to a full-model checkpoint (ssaseg or official layout), loaded
            last.
        backbone_weights: optional published backbone weights: a tag such as ``"imagenet"`` or a
            local file (:func:`ssaseg.pretrained.load_backbone_weights`).
        **kwargs: architecture overrides of the entry point (fields of its arguments dataclass,
            e.g. ``drop_path_rate``), plus ``classifier_kwargs`` (a dict passed to the classifier).

    The model records how it was built, for saving and reloading: ``model.model_name = name``,
    ``model.model_args = dict(kwargs)`` (the overrides as passed, ``classifier_kwargs`` included)
    and ``model.classifier_name = classifier``.

    Raises:
        KeyError: unknown ``name``.
        ValueError: unknown ``classifier`` (the message lists the choices).
        TypeError: an override that is not an architecture argument of ``name``.
    """
    _import_zoo()
    timm_name = name[len("tu-"):] if name.startswith("tu-") else None
    if name not in _ENTRYPOINTS and timm_name is None:
        import difflib

        close = difflib.get_close_matches(name, _ENTRYPOINTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (see ssaseg.list_models())")
    check_classifier(classifier)
    if timm_name is not None:
        from .integrations.timm import create_timm_model

        # timm reads its own checkpoints: a local file in timm's layout, or True for timm's download.
        pretrained = kwargs.pop("pretrained", False) if backbone_weights is None else backbone_weights
        model = create_timm_model(timm_name, num_classes=num_classes, classifier=classifier, pretrained=pretrained,
                                  **kwargs)
    else:
        model = _ENTRYPOINTS[name](num_classes=num_classes, classifier=classifier, **kwargs)
    # Recorded for load_checkpoint (the architecture's key converter) and for save/load.
    model.model_name = name
    model.architecture = architecture_of(name)
    model.model_args = dict(kwargs)
    model.classifier_name = classifier
    if backbone_weights is not None and timm_name is None:
        from .pretrained import load_backbone_weights

        load_backbone_weights(model, name, backbone_weights)
    if checkpoint is not None:
        from .checkpoints import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model


def architecture_of(name: str) -> str:
    """The architecture (zoo module) a registered model belongs to, e.g. ``"upernet_swin"``;
    ``"timm"`` for the ``tu-`` models."""
    if name.startswith("tu-"):
        return "timm"
    _import_zoo()
    return _ENTRYPOINTS[name].__module__.rsplit(".", 1)[-1]


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())
