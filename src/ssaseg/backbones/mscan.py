"""MSCAN, the SegNeXt backbone (Guo et al., NeurIPS 2022), with mmseg 1.x semantics and key names.

Module names follow mmseg's ``MSCAN`` (and the SegNeXt release), so the published ImageNet
checkpoints (``mscan_{t,s,b,l}_20230227-*.pth``, SegNeXt ``mscan_*.pth``) load without renaming:
``patch_embed{s}.proj.*`` (stage 1: a two-conv stem ``proj.{0,1,3,4}``; later stages: ``proj`` and
``norm``), ``block{s}.{j}.{norm1, attn.proj_1, attn.spatial_gating_unit.conv0|conv{i}_{1,2}|conv3,
attn.proj_2, norm2, mlp.fc1, mlp.dwconv.dwconv, mlp.fc2, layer_scale_1, layer_scale_2}`` and
``norm{s}`` (a LayerNorm after each stage).

The blocks run in NCHW throughout (mmseg converts to tokens and back around every block; the
arithmetic is identical). Only the per-stage LayerNorm needs channels-last.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from ..layers import init_weights_
from ..weights import register_converter, strip_prefixes

#: Published ImageNet weights of MSCAN are classification checkpoints; their classifier is not
#: part of the segmentation backbone.
_CLASSIFIER_PREFIXES = ("head.",)


def _norm2d(kind: str, channels: int) -> nn.Module:
    """The 2-D norm of the MSCAN blocks and patch embeddings (SyncBN in the configs)."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(32, channels)
    raise ValueError(f"MSCAN norm must be 'bn' or 'gn', got {kind!r}")


class StemConv(nn.Module):
    """Stage-1 patch embedding: two 3x3 stride-2 convs (norm, GELU between, norm after).

    ``forward(x (B, Cin, H, W)) -> (B, C, H/4, W/4)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "bn") -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, out_channels // 2, 3, stride=2, padding=1),
            _norm2d(norm, out_channels // 2),
            nn.GELU(),
            nn.Conv2d(out_channels // 2, out_channels, 3, stride=2, padding=1),
            _norm2d(norm, out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class OverlapPatchEmbed(nn.Module):
    """Stages 2-4 patch embedding: one 3x3 stride-2 conv and a norm. ``(B,Cin,H,W) -> (B,C,H/2,W/2)``."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int = 3, stride: int = 2, norm: str = "bn") -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = _norm2d(norm, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class AttentionModule(nn.Module):
    """Multi-scale convolutional attention (MSCA): a depthwise square conv, then for every strip
    size k a depthwise (1,k) -> (k,1) branch; branches are summed with the square conv's output,
    mixed by a 1x1 conv, and the result gates the input multiplicatively.

    ``forward(x (B, C, H, W)) -> (B, C, H, W)``.
    """

    def __init__(self, dim: int, square_kernel: int = 5, strip_kernels: Sequence[int] = (7, 11, 21)) -> None:
        super().__init__()
        self.num_branches = len(strip_kernels)
        self.conv0 = nn.Conv2d(dim, dim, square_kernel, padding=square_kernel // 2, groups=dim)
        for i, k in enumerate(strip_kernels):
            self.add_module(f"conv{i}_1", nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim))
            self.add_module(f"conv{i}_2", nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim))
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.conv0(x)
        total = attn
        for i in range(self.num_branches):
            total = total + getattr(self, f"conv{i}_2")(getattr(self, f"conv{i}_1")(attn))
        return self.conv3(total) * x


class SpatialAttention(nn.Module):
    """1x1 conv -> GELU -> MSCA -> 1x1 conv, plus the input (an inner residual, as in mmseg)."""

    def __init__(self, dim: int, square_kernel: int = 5, strip_kernels: Sequence[int] = (7, 11, 21)) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = AttentionModule(dim, square_kernel, strip_kernels)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DWConv(nn.Module):
    """3x3 depthwise conv, wrapped so that the key is ``mlp.dwconv.dwconv`` as in the checkpoints."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    """Conv MLP: 1x1 -> 3x3 depthwise -> GELU -> dropout -> 1x1 -> dropout. ``(B,C,H,W) -> (B,C,H,W)``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    """MSCAN block: ``x + ls1 * attn(norm1(x))``, then ``x + ls2 * mlp(norm2(x))`` (layer scale 1e-2).

    ``forward(x (B, C, H, W)) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm: str = "bn",
        square_kernel: int = 5,
        strip_kernels: Sequence[int] = (7, 11, 21),
        layer_scale_init: float = 1e-2,
    ) -> None:
        super().__init__()
        self.norm1 = _norm2d(norm, dim)
        self.attn = SpatialAttention(dim, square_kernel, strip_kernels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = _norm2d(norm, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MSCAN(nn.Module):
    """Multi-scale convolutional attention network (SegNeXt backbone).

    Args:
        embed_dims: channels of the four stages (T: 32,64,160,256; S/B/L: 64,128,320,512).
        depths: blocks per stage (T 3,3,5,2; S 2,2,4,2; B 3,3,12,3; L 3,5,27,3).
        mlp_ratios: MLP expansion per stage (8,8,4,4 in every SegNeXt config).
        drop_rate: dropout inside the MLPs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        norm: "bn" (SyncBN in the configs; the trainer converts under DDP) or "gn".
        in_channels: image channels.
        square_kernel, strip_kernels: MSCA kernel sizes (5 and 7/11/21 in SegNeXt).

    ``forward(images (B, in_channels, H, W)) -> [(B, embed_dims[i], H/s_i, W/s_i)]`` with strides
    ``s = 4, 8, 16, 32``. Attributes ``out_channels`` and ``strides``.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm: str = "bn",
        in_channels: int = 3,
        square_kernel: int = 5,
        strip_kernels: Sequence[int] = (7, 11, 21),
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise ValueError(
                f"embed_dims, depths and mlp_ratios need one entry per stage, got "
                f"{list(embed_dims)}, {list(depths)}, {list(mlp_ratios)}"
            )
        self.num_stages = len(embed_dims)
        self.out_channels = list(embed_dims)
        self.strides = [4 * 2**i for i in range(self.num_stages)]
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(self.num_stages):
            if i == 0:
                patch_embed: nn.Module = StemConv(in_channels, embed_dims[0], norm)
            else:
                patch_embed = OverlapPatchEmbed(embed_dims[i - 1], embed_dims[i], norm=norm)
            blocks = nn.ModuleList(
                Block(embed_dims[i], mlp_ratios[i], drop_rate, dpr[cur + j], norm, square_kernel, strip_kernels)
                for j in range(depths[i])
            )
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i]))
        self.init_weights()

    def init_weights(self) -> None:
        """mmseg's from-scratch init: trunc-normal Linear, fan-out normal Conv2d, unit LayerNorm."""
        for m in self.modules():
            init_weights_(m)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            # LayerNorm over channels: NCHW -> NHWC -> NCHW.
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


@register_converter("mscan")
def checkpoint_filter_fn(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Turn a published MSCAN checkpoint into this module's layout.

    The published files (mmseg ``mscan_*_20230227-*.pth``, SegNeXt ``mscan_*.pth``) already use
    these names; a ``backbone.`` prefix (a segmentor checkpoint) is stripped and the ImageNet
    classifier (``head.*``) is dropped.
    """
    state_dict = strip_prefixes(state_dict)
    return {k: v for k, v in state_dict.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
