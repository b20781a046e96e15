"""Encoder -> decoder -> classifier segmentor (mmseg's EncoderDecoder and CascadeEncoderDecoder).

The parts follow the contracts of :mod:`ssaseg.contracts`:

* the backbone (:class:`~ssaseg.contracts.Backbone`) returns a list of multi-scale features and
  has ``out_channels`` and ``strides``;
* the decoder (:class:`~ssaseg.contracts.Decoder`) turns them into one feature map
  ``F (B, channels, h, w)`` and knows nothing of the classifier;
* the classifier (:class:`~ssaseg.contracts.Classifier`) turns ``F`` into logits (and, in
  training, into its loss terms).

Auxiliary heads are (decoder, classifier) pairs whose losses are added with their own weight. A
decoder whose class attribute ``takes_prev_logits`` is true (:class:`~ssaseg.contracts.CascadeDecoder`,
OCRNet) also receives the logits of ``aux_heads[0]``, which makes the model a cascade.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .classifiers import LinearClassifier, build_classifier
from .decoders.fcn import FCNDecoder
from .model_format import PretrainedMixin


class AuxHead(nn.Module):
    """An auxiliary head: a decoder and a (linear) classifier with its own loss weight."""

    def __init__(self, decoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.classifier = classifier

    def forward(self, features: list[Tensor], target: Tensor | None = None):
        """Eval: logits ``(B, K, h, w)``. Train: ``(logits, losses)``."""
        feat = self.decoder(features)
        if self.training:
            return self.classifier(feat, target)
        return self.classifier(feat)


class Segmentor(PretrainedMixin, nn.Module):
    """``Segmentor(backbone, decoder, classifier, aux_heads=())``.

    ``backbone``, ``decoder`` and ``classifier`` satisfy :class:`~ssaseg.contracts.Backbone`,
    :class:`~ssaseg.contracts.Decoder` (or :class:`~ssaseg.contracts.CascadeDecoder`, which needs
    ``aux_heads[0]`` to feed it) and :class:`~ssaseg.contracts.Classifier`; ``classifier`` is
    built on ``decoder.channels``.

    Train mode: ``model(images (B,3,H,W), targets (B,H,W) long) -> dict`` of loss terms: the
    classifier's keys, ``aux.<key>`` for a single auxiliary head (``aux<i>.<key>`` for several),
    and ``loss``, their sum.
    Eval mode: ``model(images) -> logits (B, K, H, W)`` resized to the input size (bilinear).
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder: nn.Module,
        classifier: nn.Module,
        aux_heads: tuple[nn.Module, ...] | list[nn.Module] = (),
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.classifier = classifier
        self.aux_heads = nn.ModuleList(aux_heads)
        self.align_corners = align_corners
        self.is_cascade = bool(getattr(decoder, "takes_prev_logits", False))
        if self.is_cascade and len(self.aux_heads) == 0:
            raise ValueError("a cascade decoder (takes_prev_logits) needs aux_heads[0] to feed it")

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def _aux_prefix(self, index: int) -> str:
        return "aux." if len(self.aux_heads) == 1 else f"aux{index}."

    def decode(self, features: list[Tensor], prev_logits: Tensor | None = None) -> Tensor:
        """Decoder feature map ``F (B, C, h, w)``."""
        if self.is_cascade:
            return self.decoder(features, prev_logits)
        return self.decoder(features)

    def forward(self, images: Tensor, targets: Tensor | None = None):
        features = self.backbone(images)
        if self.training:
            if targets is None:
                raise ValueError("Segmentor in train mode needs targets (B, H, W); call .eval() for inference")
            return self._forward_train(features, targets)
        prev = self.aux_heads[0](features) if self.is_cascade else None
        logits = self.classifier(self.decode(features, prev))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def _forward_train(self, features: list[Tensor], targets: Tensor) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        prev = None
        for index, head in enumerate(self.aux_heads):
            logits, aux_losses = head(features, targets)
            if index == 0:
                # docs/algorithm.md Q28: reuse stage-0 logits instead of a second forward pass.
                prev = logits
            prefix = self._aux_prefix(index)
            losses.update({prefix + k: v for k, v in aux_losses.items()})
        _, head_losses = self.classifier(self.decode(features, prev), targets)
        losses = {**head_losses, **losses}
        losses["loss"] = torch.stack([v.float() for v in losses.values()]).sum()
        return losses

    def deploy(self) -> "Segmentor":
        """Drop train-only modules: the classifier's teacher, and aux heads not used at test."""
        if hasattr(self.classifier, "deploy"):
            self.classifier.deploy()
        if not self.is_cascade:
            self.aux_heads = nn.ModuleList()
        else:
            self.aux_heads = nn.ModuleList(self.aux_heads[:1])
        return self


def build_segmentor(
    backbone: nn.Module,
    decoder: nn.Module,
    num_classes: int,
    classifier: str = "ssa",
    classifier_kwargs: dict | None = None,
    aux_heads: tuple[nn.Module, ...] | list[nn.Module] = (),
    dropout: float = 0.1,
    align_corners: bool = False,
) -> Segmentor:
    """Attach a classifier of kind ``classifier`` (a key of :data:`ssaseg.classifiers.CLASSIFIERS`)
    to ``decoder`` (width ``decoder.channels``); ``dropout`` is its default dropout before the
    1x1 classification, ``classifier_kwargs`` go to its constructor and win over it."""
    kwargs = {"dropout": dropout, **(classifier_kwargs or {})}
    head = build_classifier(classifier, decoder.channels, num_classes, **kwargs)
    return Segmentor(backbone, decoder, head, aux_heads=aux_heads, align_corners=align_corners)


def fcn_aux_head(
    in_channels: int, num_classes: int, in_index: int, channels: int = 256, loss_weight: float = 0.4
) -> AuxHead:
    """mmseg's FCN auxiliary head (the paper's UperNet / FCN models): ``FCNHead`` on backbone level
    ``in_index`` (one 3x3 ConvModule to ``channels``, BN), a linear classifier with dropout 0.1,
    cross entropy x ``loss_weight``. Used in training only (``deploy()`` drops it)."""
    decoder = FCNDecoder(in_channels, channels, in_index=in_index, num_convs=1, kernel_size=3)
    return AuxHead(decoder, LinearClassifier(channels, num_classes, dropout=0.1, loss_weight=loss_weight))
