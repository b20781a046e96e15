"""The written contracts between the parts of a :class:`~ssaseg.segmentor.Segmentor` (a leaf
module: it imports nothing from ssaseg).

A segmentor is ``backbone -> decoder -> classifier`` (smp's encoder -> decoder -> head):

* a :class:`Backbone` turns images into a list of multi-scale feature maps and says what they
  are (``out_channels``, ``strides``);
* a :class:`Decoder` turns that list into ONE feature map ``F (B, channels, h, w)``; it knows
  nothing of classes or classifiers (its width ``channels`` is what the classifier is built on);
* a :class:`CascadeDecoder` (OCRNet) also receives the logits of the segmentor's first auxiliary
  head and says so with ``takes_prev_logits = True``;
* a :class:`Classifier` turns ``F`` into logits, and in training into its loss terms.

These are structural types (:class:`typing.Protocol`): any ``nn.Module`` with these attributes
fits, no base class needed. ``tests/test_model_contract.py`` checks every registered model
against them, with the real feature shapes.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Backbone", "Decoder", "CascadeDecoder", "Classifier"]


@runtime_checkable
class Backbone(Protocol):
    """Multi-scale feature extractor.

    ``forward(images (B, 3, H, W)) -> [features_i (B, out_channels[i], h_i, w_i)]``, one map per
    level, where ``h_i`` is ``H / strides[i]`` rounded down or up (the architecture's convolution
    padding decides; a backbone that needs divisible inputs raises ``ValueError`` saying so).
    """

    #: channels of each returned level, in order.
    out_channels: list[int]
    #: down-sampling factor of each returned level relative to the input (e.g. ``[4, 8, 16, 32]``).
    strides: list[int]

    def __call__(self, images: Tensor) -> list[Tensor]: ...


@runtime_checkable
class Decoder(Protocol):
    """Decode head without its classifier (mmseg's ``BaseDecodeHead`` minus ``conv_seg``).

    ``forward(features: list[(B, C_i, h_i, w_i)]) -> F (B, channels, h, w)``, usually at the
    stride of the finest level it reads. ``channels`` is mmseg's name for this width.
    """

    #: C, the width of ``F``: the classifier is built with ``in_channels = channels``.
    channels: int

    def __call__(self, features: list[Tensor]) -> Tensor: ...


@runtime_checkable
class CascadeDecoder(Protocol):
    """A decoder that refines the logits of a previous stage (OCRNet's object-context head).

    ``forward(features, prev_logits (B, K, h', w')) -> F (B, channels, h, w)``; the segmentor feeds
    it the logits of ``aux_heads[0]``, which therefore stays in the model after ``deploy()``.
    """

    channels: int
    takes_prev_logits: ClassVar[Literal[True]]

    def __call__(self, features: list[Tensor], prev_logits: Tensor) -> Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """Pixel classifier (``ssaseg.classifiers``): the only part that knows the classes.

    Eval: ``forward(F (B, C, h, w)) -> logits (B, K, h, w)``. Train: ``forward(F, target (B, H, W)
    long) -> (logits, losses: dict[str, Tensor])``, every loss already weighted. ``deploy()``
    drops train-only modules in place (it may be a no-op).
    """

    num_classes: int

    def __call__(self, feat: Tensor, target: Tensor | None = None) -> Tensor | tuple[Tensor, dict[str, Tensor]]: ...

    def deploy(self) -> Classifier: ...
