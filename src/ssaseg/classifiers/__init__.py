"""Pixel classifiers (linear, SSA, CAC; CGR for CGRSeg). They take a decoder feature map and share one interface
(:class:`ssaseg.contracts.Classifier`):

* eval: ``forward(feat (B,C,h,w)) -> logits (B,K,h,w)``
* train: ``forward(feat, target (B,H,W) long) -> (logits, losses: dict[str, Tensor])``
* ``deploy()`` drops train-only modules.

:data:`CLASSIFIERS` is the one list of classifier kinds (``create_model(..., classifier=kind)``).
An architecture may implement a kind its own way when its official baseline does:
:class:`CGRClassifier` is the ``"linear"`` kind of ``cgrseg_*`` (the official two-stage head).
"""
from __future__ import annotations

from torch import nn

from .cac import CACClassifier
from .cgr import CGRClassifier
from .linear import LinearClassifier
from .ssa import SSAClassifier

#: Classifier kind -> class, for every decoder: the only list of classifier names.
CLASSIFIERS: dict[str, type[nn.Module]] = {"linear": LinearClassifier, "ssa": SSAClassifier, "cac": CACClassifier}


def check_classifier(kind: str) -> None:
    """Raise ``ValueError`` naming the choices unless ``kind`` is a key of :data:`CLASSIFIERS`."""
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; expected one of {sorted(CLASSIFIERS)}")


def build_classifier(kind: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build the classifier ``kind`` (a key of :data:`CLASSIFIERS`) for a decoder with
    ``in_channels`` output channels; ``kwargs`` go to its constructor."""
    check_classifier(kind)
    return CLASSIFIERS[kind](in_channels, num_classes, **kwargs)


__all__ = ["CACClassifier", "CGRClassifier", "LinearClassifier", "SSAClassifier", "build_classifier", "check_classifier", "CLASSIFIERS"]
