"""UperNet decoder (mmseg ``UPerHead`` without its classifier): PPM on the last level + FPN.

Attribute names follow mmseg (``psp_modules``, ``bottleneck``, ``lateral_convs``, ``fpn_convs``,
``fpn_bottleneck``) so that official ``decode_head.*`` weights load as ``decoder.*``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..layers import ConvModule, resize, resize_concat


class PPM(nn.ModuleList):
    """Pyramid pooling: for each scale s, AdaptiveAvgPool2d(s) -> 1x1 ConvModule -> upsample.

    ``forward(x (B, Cin, H, W)) -> list of len(pool_scales) tensors (B, channels, H, W)``.
    Keys ``{i}.1.conv.weight`` / ``{i}.1.bn.*`` as mmseg's PPM.
    """

    def __init__(
        self, pool_scales: Sequence[int], in_channels: int, channels: int, norm: str = "bn", align_corners: bool = False
    ) -> None:
        super().__init__(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvModule(in_channels, channels, 1, norm=norm))
            for scale in pool_scales
        )
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        return [resize(branch(x), x.shape[-2:], self.align_corners) for branch in self]


class UPerDecoder(nn.Module):
    """UperNet (PPM + FPN) decoder returning ``F`` = ``fpn_bottleneck`` output.

    Args:
        in_channels: channels of the selected backbone levels (finest first).
        channels: C, the width of every internal map and of ``F`` (512 in the paper's configs).
        in_index: the backbone levels to read (default: the first ``len(in_channels)``).
        pool_scales: PPM scales on the coarsest level.
        norm: "bn" (SyncBN in the mmseg configs; the trainer converts under DDP).
        align_corners: flag of every bilinear resize (mmseg configs: False).

    ``forward(features: list[(B, C_i, H_i, W_i)]) -> F (B, channels, H_0, W_0)`` at the resolution
    of the finest selected level (1/4 of the input for Swin and ViT-Adapter).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        in_index: Sequence[int] | None = None,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "bn",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        in_channels = list(in_channels)
        if len(in_channels) < 2:
            raise ValueError(f"UPerDecoder needs at least two levels, got in_channels={in_channels}")
        self.in_index = list(range(len(in_channels))) if in_index is None else list(in_index)
        if len(self.in_index) != len(in_channels):
            raise ValueError(f"in_index {self.in_index} and in_channels {in_channels} differ in length")
        self.in_channels = in_channels
        self.channels = channels
        self.align_corners = align_corners
        self.psp_modules = PPM(pool_scales, in_channels[-1], channels, norm=norm, align_corners=align_corners)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3, norm=norm)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1, norm=norm) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, norm=norm) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, norm=norm)

    def psp_forward(self, x: Tensor) -> Tensor:
        """PPM branch on the coarsest level: ``(B, C_last, h, w) -> (B, channels, h, w)``."""
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))

    def forward(self, features: list[Tensor]) -> Tensor:
        if len(features) <= max(self.in_index):
            raise ValueError(f"UPerDecoder reads levels {self.in_index} but got {len(features)} features")
        inputs = [features[i] for i in self.in_index]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        laterals.append(self.psp_forward(inputs[-1]))
        # Top-down pathway: add each coarser lateral, upsampled, to the next finer one.
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:], self.align_corners)
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        return self.fpn_bottleneck(resize_concat(outs, self.align_corners))
