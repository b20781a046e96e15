"""CGRSeg decoder ("Context-Guided Spatial Feature Reconstruction for Efficient Semantic
Segmentation", Ni et al., ECCV 2024; official head ``CGRSeg`` in nizhenliang/CGRSeg, SSA
variant ``CGRSeg_ssa``; docs/algorithm.md §7, §10.9).

Decoder (:class:`CGRDecoder`), on backbone levels ``in_index`` (1/8, 1/16, 1/32):

1. pyramid pool aggregation: every level average-pooled to half the size of the coarsest one
   and concatenated (``sum(in_channels)`` channels);
2. ``trans``: a stack of ``next_repeat`` RCMs (rectangular self-calibration modules) on it,
   then split back per level ("global semantics");
3. top-down, coarsest level first: ``local = level_i (+ 1x1 conv of the previous result,
   upsampled)``; ``local = meta[i](local)`` (an RCM); ``SIM[i]`` fuses it with the level's global
   semantics (``BN(1x1(local)) * h_sigmoid(BN(1x1(global)))`` upsampled) -> ``channels``;
4. ``linear_fuse``: a depthwise 1x1 ConvModule (BN, ReLU) on the finest result -> ``F``.

RCM = ``x + gamma * ConvMlp(BN(RCA(x)))``, RCA = ``dwconv_kxk(x) * sigmoid(band convs
(1 x dw, dw x 1) of (row pool + column pool))``.

The official baseline refines ``F`` in a second stage that needs the class logits: the
coarse logits ``conv_seg(dropout(F))`` weight a spatial gather of the *pre-fuse* map ``x``
into one vector per class, a dynamic-prototype block (``lgc``, a GC-block-like channel gate
driven by attention pooling over the class vectors) gates ``x``, and the *same* ``conv_seg``
classifies ``lgc(x) + x``. Since that stage is a classifier, ssaseg implements it as
:class:`ssaseg.classifiers.cgr.CGRClassifier` (the ``classifier="linear"`` head of ``cgrseg_*``):
the decoder then stops at ``x`` (``linear_fuse=False``) and the classifier owns ``linear_fuse``,
``conv_seg`` and ``lgc``. The SSA variant drops the second stage (docs/algorithm.md Q20): the decoder ends with
``linear_fuse`` and SSA classifies ``F``. The official ``spatial_gather_module`` has no
parameters; the unused one of the SSA head is not built.

Norms: the SIM blocks use SyncBN in the official code (plain BN here; the trainer converts BN
to SyncBN under DDP), RCM/RCA use BatchNorm2d, ``linear_fuse`` the config's SyncBN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ConvModule, resize

__all__ = ["RCA", "RCM", "CGRDecoder"]


class RCA(nn.Module):
    """Rectangular self-calibration attention.

    ``out = dwconv_hw(x) * excite(pool_h(x) + pool_w(x))`` where ``excite`` = grouped (1 x k)
    conv -> BN -> ReLU -> grouped (k x 1) conv -> sigmoid, ``k = band_kernel_size``.

    ``forward(x (B, C, H, W)) -> (B, C, H, W)``.
    """

    def __init__(self, inp: int, band_kernel_size: int = 11, square_kernel_size: int = 3, ratio: int = 1) -> None:
        super().__init__()
        self.dwconv_hw = nn.Conv2d(inp, inp, square_kernel_size, padding=square_kernel_size // 2, groups=inp)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        gc = inp // ratio
        k = band_kernel_size
        self.excite = nn.Sequential(
            nn.Conv2d(inp, gc, kernel_size=(1, k), padding=(0, k // 2), groups=gc),
            nn.BatchNorm2d(gc),
            nn.ReLU(inplace=True),
            nn.Conv2d(gc, inp, kernel_size=(k, 1), padding=(k // 2, 0), groups=gc),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        gate = self.excite(self.pool_h(x) + self.pool_w(x))
        return gate * self.dwconv_hw(x)


class ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv (timm 0.6 ``ConvMlp`` without norm and dropout)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RCM(nn.Module):
    """Rectangular self-calibration module (a MetaNeXt block with an RCA token mixer):
    ``x + gamma * mlp(BN(RCA(x)))``, ``gamma`` initialised to 1e-6.

    ``forward(x (B, C, H, W)) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        dw_size: int = 11,
        mlp_ratio: float = 2.0,
        square_kernel_size: int = 3,
        ratio: int = 1,
        ls_init_value: float = 1e-6,
    ) -> None:
        super().__init__()
        self.token_mixer = RCA(dim, band_kernel_size=dw_size, square_kernel_size=square_kernel_size, ratio=ratio)
        self.norm = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(torch.full((dim,), ls_init_value))

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        return x + y * self.gamma.view(1, -1, 1, 1)


class NextLayer(nn.Module):
    """``block_num`` RCMs in sequence (official name of the ``trans`` stack)."""

    def __init__(self, block_num: int, dim: int, dw_size: int, mlp_ratio: float, square_kernel_size: int) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            [RCM(dim, dw_size=dw_size, mlp_ratio=mlp_ratio, square_kernel_size=square_kernel_size) for _ in range(block_num)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


class HSigmoid(nn.Module):
    """``relu6(x + 3) / 6`` (ReLU6 as a module, as officially)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + 3) / 6


class FuseBlockMulti(nn.Module):
    """Semantic injection (SIM): ``BN(1x1(x_l)) * up(h_sigmoid(BN(1x1(x_h))))``.

    ``forward(x_l (B, inp, H, W), x_h (B, inp, h, w)) -> (B, oup, H, W)``.
    """

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.fuse1 = ConvModule(inp, oup, 1, norm="bn", act=None)
        self.fuse2 = ConvModule(inp, oup, 1, norm="bn", act=None)
        self.act = HSigmoid()

    def forward(self, x_l: Tensor, x_h: Tensor) -> Tensor:
        return self.fuse1(x_l) * resize(self.act(self.fuse2(x_h)), x_l.shape[-2:])


class CGRDecoder(nn.Module):
    """The CGRSeg decoder up to ``F`` (see the module docstring).

    Args:
        in_channels: channels of the selected levels (B: [64, 144, 288], L: [80, 192, 384]).
        channels: C (256).
        in_index: backbone levels to read ([1, 2, 3]).
        is_dw: depthwise ``linear_fuse``.
        next_repeat: RCMs in the ``trans`` stack (B 6, L 5).
        mr: MLP ratio of every RCM (2).
        dw_size: band kernel of the per-level RCMs ``meta`` (B 11, L 9).
        neck_size: band kernel of the ``trans`` RCMs (B 11, L 9).
        square_kernel_size: RCA local depthwise kernel (3).
        ratio: RCA group ratio of the per-level RCMs (1).
        linear_fuse: end with ``linear_fuse`` (SSA variant). ``False`` returns the pre-fuse map
            ``x`` for :class:`ssaseg.classifiers.cgr.CGRClassifier`, which owns ``linear_fuse``
            then.

    ``forward(features: list[Tensor]) -> F (B, channels, H_1, W_1)`` at the resolution of the
    finest selected level (1/8).
    """

    def __init__(
        self,
        in_channels: list[int],
        channels: int = 256,
        in_index: list[int] | tuple[int, ...] = (1, 2, 3),
        is_dw: bool = True,
        next_repeat: int = 6,
        mr: float = 2.0,
        dw_size: int = 11,
        neck_size: int = 11,
        square_kernel_size: int = 3,
        ratio: int = 1,
        linear_fuse: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(in_index):
            raise ValueError(f"CGRDecoder: {len(in_channels)} in_channels for {len(in_index)} in_index entries")
        self.in_channels = list(in_channels)
        self.in_index = list(in_index)
        self.channels = channels
        self.trans = NextLayer(next_repeat, sum(in_channels), neck_size, mr, square_kernel_size)
        self.SIM = nn.ModuleList([FuseBlockMulti(c, channels) for c in in_channels])
        self.meta = nn.ModuleList(
            [RCM(c, dw_size=dw_size, mlp_ratio=mr, square_kernel_size=square_kernel_size, ratio=ratio) for c in in_channels]
        )
        self.conv = nn.ModuleList([nn.Conv2d(channels, c, 1) for c in in_channels[:-1]])
        self.linear_fuse = (
            ConvModule(channels, channels, 1, groups=channels if is_dw else 1, norm="bn", act="relu")
            if linear_fuse
            else None
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        if max(self.in_index) >= len(features):
            raise IndexError(f"CGRDecoder reads levels {self.in_index}, the backbone gave {len(features)}")
        xs = [features[i] for i in self.in_index]
        h, w = xs[-1].shape[-2:]
        pooled = [F.adaptive_avg_pool2d(x, ((h - 1) // 2 + 1, (w - 1) // 2 + 1)) for x in xs]
        global_semantics = self.trans(torch.cat(pooled, dim=1)).split(self.in_channels, dim=1)
        out = None
        for i in range(len(xs) - 1, -1, -1):
            local = xs[i] if out is None else xs[i] + self.conv[i](resize(out, xs[i].shape[-2:]))
            out = self.SIM[i](self.meta[i](local), global_semantics[i])
        return out if self.linear_fuse is None else self.linear_fuse(out)
