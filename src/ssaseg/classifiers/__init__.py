"""Pixel classifiers (linear, SSA, CAC). All take a decoder feature map and share one interface:

* eval: ``forward(feat (B,C,h,w)) -> logits (B,K,h,w)``
* train: ``forward(feat, target (B,H,W) long) -> (logits, losses: dict[str, Tensor])``
* ``deploy()`` drops train-only modules.
"""
from __future__ import annotations

from torch import nn

from .cac import CACClassifier
from .linear import LinearClassifier
from .ssa import SSAClassifier

CLASSIFIERS: dict[str, type[nn.Module]] = {"linear": LinearClassifier, "ssa": SSAClassifier, "cac": CACClassifier}


def build_classifier(kind: str, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build ``"linear"``, ``"ssa"`` or ``"cac"`` for a decoder with ``in_channels`` output channels."""
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; expected one of {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[kind](in_channels, num_classes, **kwargs)


__all__ = ["CACClassifier", "LinearClassifier", "SSAClassifier", "build_classifier", "CLASSIFIERS"]
