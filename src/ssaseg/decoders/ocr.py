"""OCR decoder (mmseg ``OCRHead`` without its classifier): stage 1 of the OCRNet cascade.

Module names follow mmseg (``bottleneck``, ``spatial_gather_module``, ``object_context_block``
with ``query_project``/``key_project``/``value_project``/``out_project``/``bottleneck``), so
an official ``decode_head.1.*`` maps onto ``decoder.*`` by prefix only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ConvModule, resize_concat


class SpatialGatherModule(nn.Module):
    """Object-region representations: class-probability-weighted sums of the pixel features.

    ``forward(feats (B, C, h, w), probs (B, K, h, w)) -> context (B, C, K, 1)``; the softmax of
    ``scale * probs`` is taken over the h·w positions of each class map.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, feats: Tensor, probs: Tensor) -> Tensor:
        weights = F.softmax(self.scale * probs.flatten(2), dim=2)  # (B, K, N)
        context = weights @ feats.flatten(2).transpose(1, 2)  # (B, K, C)
        return context.transpose(1, 2).unsqueeze(3)


class ObjectAttentionBlock(nn.Module):
    """mmseg ``ObjectAttentionBlock`` (a ``SelfAttentionBlock``) at ``scale = 1``.

    Pixels (queries) attend to the K object-region representations (keys/values); the result is
    projected back to ``in_channels`` and fused with the pixel features by a 1x1 ConvModule.

    ``forward(query_feats (B, C, h, w), key_feats (B, C, K, 1)) -> (B, C, h, w)``.
    """

    def __init__(self, in_channels: int, channels: int, norm: str = "bn") -> None:
        super().__init__()
        self.channels = channels
        # key_query_num_convs=2, key_query_norm=True, share_key_query=False.
        self.key_project = nn.Sequential(
            ConvModule(in_channels, channels, 1, norm=norm), ConvModule(channels, channels, 1, norm=norm)
        )
        self.query_project = nn.Sequential(
            ConvModule(in_channels, channels, 1, norm=norm), ConvModule(channels, channels, 1, norm=norm)
        )
        # value_out_num_convs=1 (a bare ConvModule, as mmseg's build_project with one conv), with_out.
        self.value_project = ConvModule(in_channels, channels, 1, norm=norm)
        self.out_project = ConvModule(channels, in_channels, 1, norm=norm)
        self.bottleneck = ConvModule(in_channels * 2, in_channels, 1, norm=norm)

    def forward(self, query_feats: Tensor, key_feats: Tensor) -> Tensor:
        query = self.query_project(query_feats).flatten(2).transpose(1, 2)  # (B, N, c)
        key = self.key_project(key_feats).flatten(2)  # (B, c, K)
        value = self.value_project(key_feats).flatten(2).transpose(1, 2)  # (B, K, c)
        attention = F.softmax((query @ key) * self.channels**-0.5, dim=-1)  # matmul_norm
        context = (attention @ value).transpose(1, 2).reshape(query_feats.shape[0], -1, *query_feats.shape[2:])
        context = self.out_project(context)
        return self.bottleneck(torch.cat([context, query_feats], dim=1))


class OCRDecoder(nn.Module):
    """Object-contextual representations (OCRNet), fed with the logits of the stage-0 head.

    Args:
        in_channels: channels of the levels in ``in_index`` (resized to the first level's size
            and concatenated, mmseg ``input_transform="resize_concat"``).
        channels: C, the output channels (512).
        ocr_channels: key/query/value width of the object attention (256).
        in_index: backbone levels to read.
        scale: softmax scale of the spatial gather; only 1 is supported (docs/algorithm.md Q23: mmseg's
            ``scale > 1`` path is broken and never used).
        norm: "bn" (SyncBN in the mmseg configs).
        align_corners: flag of the resize-concat.

    ``forward(features: list[(B, C_i, H_i, W_i)], prev_logits (B, K, H_0, W_0)) -> F (B, C, H_0, W_0)``
    where level 0 of ``in_index`` fixes ``H_0 x W_0`` and ``prev_logits`` must have that size.
    """

    takes_prev_logits = True

    def __init__(
        self,
        in_channels: list[int],
        channels: int = 512,
        ocr_channels: int = 256,
        in_index: list[int] | None = None,
        scale: int = 1,
        norm: str = "bn",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if scale != 1:
            raise ValueError(f"OCRDecoder supports only scale=1 (docs/algorithm.md Q23), got scale={scale}")
        in_index = list(range(len(in_channels))) if in_index is None else list(in_index)
        if len(in_index) != len(in_channels):
            raise ValueError(f"in_index {in_index} and in_channels {in_channels} must have the same length")
        self.in_index = in_index
        self.channels = channels
        self.align_corners = align_corners
        self.bottleneck = ConvModule(sum(in_channels), channels, 3, norm=norm)
        self.spatial_gather_module = SpatialGatherModule(scale)
        self.object_context_block = ObjectAttentionBlock(channels, ocr_channels, norm=norm)

    def forward(self, features: list[Tensor], prev_logits: Tensor) -> Tensor:
        x = resize_concat([features[i] for i in self.in_index], self.align_corners)
        size = x.shape[-2:]
        if prev_logits.shape[-2:] != size:
            raise ValueError(
                f"OCRDecoder: prev_logits are {tuple(prev_logits.shape[-2:])} but the features are "
                f"{tuple(size)}; the stage-0 head must read the same resize-concat levels"
            )
        feats = self.bottleneck(x)
        context = self.spatial_gather_module(feats, prev_logits)
        return self.object_context_block(feats, context)
