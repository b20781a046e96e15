"""AFFormer's "head-free" decoder (official mmseg head ``CLS``; SSA variant ``CLS_ssa``).

The decoder is a single 1x1 ConvModule (``squeeze``: conv, GroupNorm(32), ReLU) on one backbone
level (AFFormer-B: level 3, 216 channels at 1/8) -> ``F (B, 256, H/8, W/8)``. Dropout and the 1x1
``conv_seg`` belong to the classifier.

The official head also builds an ``align`` ConvModule (256 -> 256, GN) that its ``forward`` never
calls (docs/algorithm.md Q19; 66,048 parameters, the reason for ``find_unused_parameters=True`` in the
official configs). It is omitted here; the ``afformer`` key converter registered in
:mod:`ssaseg.zoo.afformer` drops the ``decode_head.align.*`` keys of official checkpoints.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import ConvModule

__all__ = ["AFFormerDecoder"]


class AFFormerDecoder(nn.Module):
    """``squeeze`` (1x1 conv -> norm -> ReLU) on the level ``in_index``.

    Args:
        in_channels: channels of the selected backbone level (216 for AFFormer-B).
        channels: C, the output width (256).
        in_index: which backbone level to read (3).
        norm: ``"gn"`` (32 groups, the official ``ham_norm_cfg``) or ``"bn"``.

    ``forward(features: list[(B, C_i, H_i, W_i)]) -> F (B, channels, H_k, W_k)``.
    """

    def __init__(self, in_channels: int = 216, channels: int = 256, in_index: int = 3, norm: str = "gn") -> None:
        super().__init__()
        self.in_index = in_index
        self.channels = channels
        self.squeeze = ConvModule(in_channels, channels, 1, norm=norm, act="relu")

    def forward(self, features: list[Tensor]) -> Tensor:
        if not -len(features) <= self.in_index < len(features):
            raise IndexError(f"AFFormerDecoder reads level {self.in_index}, the backbone gave {len(features)}")
        return self.squeeze(features[self.in_index])
