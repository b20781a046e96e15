"""SeaFormer's LightHead decoder (fudan-zvg/SeaFormer ``light_head.py``) without its classifier.

Module names follow the original (``fuse{i}.local_embedding``, ``fuse{i}.global_act``,
``linear_fuse``), so an official ``decode_head.*`` maps onto ``decoder.*`` by prefix only.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import ConvModule, resize


class FusionBlock(nn.Module):
    """``local 1x1 conv+BN (x_l)`` × upsampled ``h_sigmoid(global 1x1 conv+BN (x_g))``.

    ``forward(x_l (B, inp, H, W), x_g (B, oup, h, w)) -> (B, embed_dim, H, W)``; the gate is
    resized bilinearly (align_corners False) to the local size.
    """

    def __init__(self, inp: int, oup: int, embed_dim: int, norm: str = "bn") -> None:
        super().__init__()
        self.local_embedding = ConvModule(inp, embed_dim, 1, norm=norm, act=None)
        self.global_act = ConvModule(oup, embed_dim, 1, norm=norm, act=None)
        self.act = nn.Hardsigmoid()  # h_sigmoid: ReLU6(x + 3) / 6

    def forward(self, x_l: Tensor, x_g: Tensor) -> Tensor:
        gate = resize(self.act(self.global_act(x_g)), x_l.shape[-2:], align_corners=False)
        return self.local_embedding(x_l) * gate


class LightHead(nn.Module):
    """Top-down gated fusion of SeaFormer's levels into the first (1/8) level.

    Args:
        in_channels: channels of the levels in ``in_index`` (first = the 1/8 detail level).
        channels: C, output channels; must equal ``embed_dims[-1]`` (160 for B, 192 for L).
        embed_dims: output width of each fusion block ``fuse{i}`` (one per extra level).
        in_index: backbone levels to read (mmseg ``multiple_select``).
        is_dw: depthwise ``linear_fuse`` (True in the SeaFormer configs).
        norm: "bn" (SyncBN in the original configs).

    ``forward(features: list[(B, C_i, H_i, W_i)]) -> F (B, C, H_0, W_0)`` where level 0 of
    ``in_index`` fixes ``H_0 x W_0``.
    """

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        embed_dims: list[int],
        in_index: list[int] | None = None,
        is_dw: bool = True,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        in_index = list(range(len(in_channels))) if in_index is None else list(in_index)
        if len(in_index) != len(in_channels) or len(embed_dims) != len(in_channels) - 1:
            raise ValueError(
                f"LightHead needs len(in_index) == len(in_channels) == len(embed_dims) + 1, got "
                f"in_index {in_index}, in_channels {in_channels}, embed_dims {embed_dims}"
            )
        if embed_dims[-1] != channels:
            raise ValueError(f"LightHead: embed_dims[-1] ({embed_dims[-1]}) must equal channels ({channels})")
        self.in_index = in_index
        self.channels = channels
        self.embed_dims = list(embed_dims)
        self.linear_fuse = ConvModule(channels, channels, 1, groups=channels if is_dw else 1, norm=norm)
        for i, dim in enumerate(embed_dims):
            local_in = in_channels[0] if i == 0 else embed_dims[i - 1]
            self.add_module(f"fuse{i + 1}", FusionBlock(local_in, in_channels[i + 1], dim, norm=norm))

    def forward(self, features: list[Tensor]) -> Tensor:
        xs = [features[i] for i in self.in_index]
        detail = xs[0]
        for i in range(len(self.embed_dims)):
            detail = getattr(self, f"fuse{i + 1}")(detail, xs[i + 1])
        return self.linear_fuse(detail)
