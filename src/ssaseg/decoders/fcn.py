"""FCN decoder (mmseg ``FCNHead`` without its classifier): the paper's auxiliary and cascade head."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers import ConvModule, resize_concat


class FCNDecoder(nn.Module):
    """``num_convs`` ConvModules on one backbone level, or on the resize-concat of several.

    Args:
        in_channels: channels of the selected level, or the list of channels when ``in_index``
            is a list (then the levels are resized to the first one's size and concatenated).
        channels: C, the output channels.
        in_index: which backbone level(s) to read.
        num_convs: number of ConvModules (mmseg allows 0 only with ``in_channels == channels``).
        kernel_size: kernel of each ConvModule (3 for aux heads, 1 for OCRNet stage 0).
        concat_input: concatenate the input to the conv output and fuse with one more ConvModule.
        norm: "bn" (SyncBN in mmseg configs) or "gn".

    ``forward(features: list[(B, C_i, H_i, W_i)]) -> F (B, channels, H_j, W_j)``.
    """

    def __init__(
        self,
        in_channels: int | list[int],
        channels: int,
        in_index: int | list[int] = -1,
        num_convs: int = 1,
        kernel_size: int = 3,
        concat_input: bool = False,
        dilation: int = 1,
        norm: str = "bn",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(in_index, list) != isinstance(in_channels, list):
            raise ValueError("in_index and in_channels must both be ints or both be lists")
        self.in_index = in_index
        self.align_corners = align_corners
        total_in = sum(in_channels) if isinstance(in_channels, list) else in_channels
        if num_convs == 0 and total_in != channels:
            raise ValueError(f"num_convs=0 needs in_channels == channels, got {total_in} and {channels}")
        self.channels = channels
        self.convs = nn.Sequential(
            *[
                ConvModule(total_in if i == 0 else channels, channels, kernel_size, dilation=dilation, norm=norm)
                for i in range(num_convs)
            ]
        )
        self.conv_cat = (
            ConvModule(total_in + channels, channels, kernel_size, norm=norm) if concat_input else None
        )

    def _select(self, features: list[Tensor]) -> Tensor:
        if isinstance(self.in_index, list):
            return resize_concat([features[i] for i in self.in_index], self.align_corners)
        return features[self.in_index]

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self._select(features)
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return out
