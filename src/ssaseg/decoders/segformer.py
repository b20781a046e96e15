"""SegFormer's All-MLP decoder (mmseg ``SegformerHead`` without its classifier).

Names follow mmseg: ``convs.{i}`` (one 1x1 ConvModule per level) and ``fusion_conv``.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import ConvModule, resize_concat


class SegformerDecoder(nn.Module):
    """Per-level 1x1 ConvModule (norm, ReLU) -> bilinear resize to the first selected level ->
    concat -> ``fusion_conv`` 1x1 ConvModule. Returns F, the output of ``fusion_conv``.

    Args:
        in_channels: channels of the selected backbone levels (MiT-B5: 64,128,320,512).
        channels: C (256 in mmseg's SegFormer configs, also for B5; NVlabs used 768 for B2-B5).
        in_index: backbone levels to read (0-3).
        norm: norm of the ConvModules ("bn": SyncBN in the configs).
        align_corners: flag of the bilinear resizes.

    ``forward(features: list[(B, C_i, H_i, W_i)]) -> F (B, channels, H_j, W_j)``, ``j = in_index[0]``
    (stride 4 for MiT).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 256,
        in_index: Sequence[int] = (0, 1, 2, 3),
        norm: str = "bn",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(in_index):
            raise ValueError(f"in_channels {list(in_channels)} and in_index {list(in_index)} differ in length")
        self.in_index = list(in_index)
        self.channels = channels
        self.align_corners = align_corners
        self.convs = nn.ModuleList(ConvModule(c, channels, 1, norm=norm) for c in in_channels)
        self.fusion_conv = ConvModule(channels * len(in_channels), channels, 1, norm=norm)

    def forward(self, features: list[Tensor]) -> Tensor:
        # The 1x1 convs keep each level's size, so the first level's size is the target.
        outs = [conv(features[i]) for conv, i in zip(self.convs, self.in_index)]
        return self.fusion_conv(resize_concat(outs, self.align_corners))
