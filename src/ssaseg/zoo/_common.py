"""Helpers shared by the zoo entry points (this module registers no models).

* :func:`with_overrides`: a variant's architecture arguments with the caller's overrides;
* :class:`FCNAuxArgs`: the settings of mmseg's FCN auxiliary head on backbone level 2
  (:func:`ssaseg.segmentor.fcn_aux_head`);
* :class:`UPerNetArgs` and :func:`upernet_segmentor`: UPerHead + that auxiliary head +
  classifier on any 4-level backbone (the UperNet models' arguments extend it).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from torch import nn

from ..decoders.uper import UPerDecoder
from ..segmentor import Segmentor, build_segmentor, fcn_aux_head

ArgsT = TypeVar("ArgsT")


def with_overrides(variant: str, args: ArgsT, overrides: Mapping[str, Any]) -> ArgsT:
    """``dataclasses.replace(args, **overrides)``: the entry point ``variant``'s architecture
    arguments ``args`` (a frozen dataclass instance) with the caller's ``overrides``.

    Raises:
        TypeError: ``"{variant}() got unexpected arguments [...]; accepted: [...]"`` when an
            override is not a field of ``args``.
    """
    accepted = sorted(f.name for f in dataclasses.fields(args) if f.init)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TypeError(f"{variant}() got unexpected arguments {unknown}; accepted: {accepted}")
    return dataclasses.replace(args, **overrides)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FCNAuxArgs:
    """mmseg's FCN auxiliary head on backbone level 2 (:func:`ssaseg.segmentor.fcn_aux_head`).

    Attributes:
        aux: build the auxiliary head (training only; ``deploy()`` drops it).
        aux_channels: width of its 3x3 ConvModule.
        aux_loss_weight: weight of its cross entropy.
    """

    aux: bool = True
    aux_channels: int = 256
    aux_loss_weight: float = 0.4


@dataclasses.dataclass(frozen=True, kw_only=True)
class UPerNetArgs(FCNAuxArgs):
    """mmseg's UperNet head (the settings of :func:`upernet_segmentor`), with the FCN auxiliary
    head of :class:`FCNAuxArgs`.

    Attributes:
        channels: C, width of the UPerHead (PPM, FPN) and of ``F``.
        pool_scales: PPM pooling grid sizes on the last level.
        head_norm: norm of the head's ConvModules, ``"bn"`` (SyncBN under DDP) or ``"gn"``.
        dropout: Dropout2d before the classifier's 1x1 convolution.
        align_corners: flag of every bilinear resize (decoder and logits).
    """

    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    head_norm: str = "bn"
    dropout: float = 0.1
    align_corners: bool = False


def upernet_segmentor(
    backbone: nn.Module, num_classes: int, classifier: str, classifier_kwargs: dict | None, args: UPerNetArgs
) -> Segmentor:
    """UperNet on ``backbone``: UPerHead on all its levels, the FCN auxiliary head on level 2
    when ``args.aux``, and the classifier."""
    decoder = UPerDecoder(
        backbone.out_channels, args.channels, pool_scales=args.pool_scales, norm=args.head_norm,
        align_corners=args.align_corners,
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        aux_heads=[fcn_aux_head(backbone.out_channels[2], num_classes, 2, args.aux_channels, args.aux_loss_weight)]
        if args.aux
        else [],
        dropout=args.dropout, align_corners=args.align_corners,
    )
