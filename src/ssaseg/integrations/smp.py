"""segmentation-models-pytorch models with an ssaseg classifier.

An smp model is ``encoder -> decoder -> segmentation_head`` where the head is one convolution
(1x1 for FPN, DeepLabV3(+), Segformer, UPerNet, Linknet; 3x3 for Unet, Unet++, MAnet, PAN,
PSPNet), an optional upsampling and an activation. :func:`from_smp` keeps the encoder and the
decoder (their weights included) and puts an ssaseg classifier where the head was, reading the
decoder's output F::

    import segmentation_models_pytorch as smp
    model = from_smp(smp.FPN("resnet34", encoder_weights=None, classes=19), classifier="ssa")
    losses = model.train()(images, targets)      # ssaseg Segmentor: dict with "loss"
    logits = model.eval()(images)                # (B, 19, H, W)

The result is an ordinary :class:`~ssaseg.Segmentor` (state-dict keys ``backbone.*`` = smp's
``encoder.*``, ``decoder.decoder.*`` = smp's ``decoder.*``, ``classifier.*``), so it trains with
``ssaseg train`` (register it with :func:`ssaseg.register_model`, see docs/integrations.md)
or with any loop. smp encoders need H and W divisible by their output stride (32 for most).
"""
from __future__ import annotations

import inspect

from torch import Tensor, nn

from ..classifiers import build_classifier
from ..segmentor import Segmentor

__all__ = ["from_smp", "SmpDecoder"]


class SmpDecoder(nn.Module):
    """An smp decoder with ssaseg's decoder contract: ``forward(features: list) -> F (B, C, h, w)``
    and ``channels = C``. smp >= 0.5 decoders take the list; older ones take ``*features``."""

    def __init__(self, decoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.channels = channels
        params = inspect.signature(decoder.forward).parameters.values()
        self.star_args = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.decoder(*features) if self.star_args else self.decoder(features)


def _head_conv(model: nn.Module) -> nn.Conv2d:
    head = getattr(model, "segmentation_head", None)
    if head is None or not isinstance(head, nn.Sequential) or not isinstance(head[0], nn.Conv2d):
        raise ValueError(
            f"{type(model).__name__} has no smp segmentation_head (Conv2d, upsampling, activation); "
            "from_smp needs an smp segmentation model (Unet, FPN, DeepLabV3Plus, Segformer, UPerNet, ...)"
        )
    activation = getattr(head[-1], "activation", head[-1]) if len(head) > 1 else nn.Identity()
    if not isinstance(activation, nn.Identity):
        raise ValueError(
            f"{type(model).__name__}'s head ends with {type(activation).__name__}: the classifier produces logits, "
            "build the smp model with activation=None"
        )
    return head[0]


def from_smp(
    model: nn.Module,
    classifier: str = "ssa",
    classifier_kwargs: dict | None = None,
    dropout: float = 0.1,
    align_corners: bool = False,
) -> Segmentor:
    """``Segmentor(model.encoder, model.decoder, <classifier>)`` from an smp segmentation model.

    Args:
        model: an smp model (any architecture whose ``segmentation_head`` starts with a conv),
            built with ``activation=None`` and without ``aux_params``. Its head's
            ``in_channels`` (C) and ``out_channels`` (K) size the classifier; the head itself
            is dropped (for a 3x3 head the linear classifier is a 1x1 conv, not smp's 3x3).
        classifier: ``"ssa"``, ``"cac"`` or ``"linear"``.
        classifier_kwargs: passed to the classifier.
        dropout: Dropout2d rate of the classifier (mmseg's 0.1; smp has none).
        align_corners: of the resize of the eval logits to the input size.
    """
    conv = _head_conv(model)
    if getattr(model, "classification_head", None) is not None:
        raise ValueError("from_smp does not carry smp's aux_params classification head; build the smp model without aux_params")
    kwargs = {"dropout": dropout, **(classifier_kwargs or {})}
    head = build_classifier(classifier, conv.in_channels, conv.out_channels, **kwargs)
    decoder = SmpDecoder(model.decoder, conv.in_channels)
    return Segmentor(model.encoder, decoder, head, align_corners=align_corners)
