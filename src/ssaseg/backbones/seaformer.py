"""SeaFormer backbone (Wan et al., ICLR 2023; fudan-zvg/SeaFormer ``seaformer-seg``), docs/algorithm.md §11.1.

A stem and five stacks of MobileNetV2 inverted residuals (``smb1..smb5``), with squeeze-enhanced
axial attention layers (``trans{i}``) after the last ``len(depths)`` stacks. Module names are
the original ones, so the published ImageNet checkpoints (``SeaFormer_B_cls_76.4.pth``,
``SeaFormer_L_cls_79.9.pth``) load with their keys unchanged (their ``linear.*`` classifier is
dropped).

Activations as in the original: the inverted residuals use ReLU (``StackedMV2Block`` is built
without an activation argument), the attention blocks ReLU6, gates h_sigmoid = ReLU6(x+3)/6.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, make_divisible
from torch import Tensor, nn

from ..layers import init_weights_
from ..weights import StateDict, register_converter, strip_prefixes

#: Keys of the ImageNet classifier in the published classification checkpoints.
CLASSIFICATION_HEAD_PREFIXES = ("linear.",)


class Conv2dBN(nn.Sequential):
    """Bias-free conv ``c`` followed by BatchNorm ``bn`` (the original ``Conv2d_BN`` names)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand, act] -> kxk depthwise (stride s), act -> 1x1 project.

    ``forward(x (B, inp, H, W)) -> (B, oup, ceil(H/s), ceil(W/s))``; residual when s = 1 and
    inp = oup.
    """

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int, expand_ratio: float) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [Conv2dBN(inp, hidden), nn.ReLU(inplace=True)]
        layers += [
            Conv2dBN(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden),
            nn.ReLU(inplace=True),
            Conv2dBN(hidden, oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class StackedMV2Block(nn.Module):
    """A stack ``layer1..layerN`` of inverted residuals given by rows (k, t, c, s); the first
    stack also owns the stem (3x3 stride-2 Conv2dBN + ReLU) as ``stem_block``."""

    def __init__(self, cfgs: Sequence[Sequence[int]], stem: bool, inp_channel: int) -> None:
        super().__init__()
        self.stem_block = (
            nn.Sequential(Conv2dBN(3, inp_channel, 3, 2, 1), nn.ReLU(inplace=True)) if stem else None
        )
        self.num_layers = len(cfgs)
        for i, (k, t, c, s) in enumerate(cfgs):
            out_channel = make_divisible(c, 8)
            self.add_module(f"layer{i + 1}", InvertedResidual(inp_channel, out_channel, k, s, t))
            inp_channel = out_channel
        self.out_channels = inp_channel

    def forward(self, x: Tensor) -> Tensor:
        if self.stem_block is not None:
            x = self.stem_block(x)
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


class SqueezeAxialPositionalEmbedding(nn.Module):
    """Learnable ``(1, dim, length)`` embedding, linearly resized to the squeezed axis length.

    ``forward(x (B, dim, n)) -> x + interp(pos_embed, n)``.
    """

    def __init__(self, dim: int, length: int = 16) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, dim, length))

    def forward(self, x: Tensor) -> Tensor:
        return x + F.interpolate(self.pos_embed, size=x.shape[-1], mode="linear", align_corners=False)


class SeaAttention(nn.Module):
    """Squeeze-enhanced axial attention (original ``Sea_Attention``).

    Row and column attention on the axis-averaged q/k/v (with axial positional embeddings),
    broadcast back and added to v; the sum, projected and h_sigmoid-gated, multiplies a
    detail-enhancement branch (3x3 depthwise + 1x1 conv on [q; k; v]).

    ``forward(x (B, dim, H, W)) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float = 2.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        nh_kd = key_dim * num_heads
        self.dh = int(attn_ratio * key_dim) * num_heads
        self.to_q = Conv2dBN(dim, nh_kd)
        self.to_k = Conv2dBN(dim, nh_kd)
        self.to_v = Conv2dBN(dim, self.dh)
        self.proj = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, dim))
        self.proj_encode_row = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, self.dh))
        self.pos_emb_rowq = SqueezeAxialPositionalEmbedding(nh_kd)
        self.pos_emb_rowk = SqueezeAxialPositionalEmbedding(nh_kd)
        self.proj_encode_column = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, self.dh))
        self.pos_emb_columnq = SqueezeAxialPositionalEmbedding(nh_kd)
        self.pos_emb_columnk = SqueezeAxialPositionalEmbedding(nh_kd)
        self.dwconv = Conv2dBN(2 * self.dh, 2 * self.dh, 3, 1, 1, groups=2 * self.dh)
        self.act = nn.ReLU6()
        self.pwconv = Conv2dBN(2 * self.dh, dim)
        self.sigmoid = nn.Hardsigmoid()  # h_sigmoid: ReLU6(x + 3) / 6

    def _axial(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Multi-head attention along one squeezed axis: q, k (B, nh·kd, n), v (B, dh, n) -> (B, dh, n)."""
        batch, _, n = q.shape
        q = q.reshape(batch, self.num_heads, -1, n).transpose(2, 3)  # (B, nh, n, kd)
        k = k.reshape(batch, self.num_heads, -1, n)  # (B, nh, kd, n)
        v = v.reshape(batch, self.num_heads, -1, n).transpose(2, 3)  # (B, nh, n, d)
        attn = ((q @ k) * self.scale).softmax(dim=-1)
        return (attn @ v).transpose(2, 3).reshape(batch, self.dh, n)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        detail = self.pwconv(self.act(self.dwconv(torch.cat([q, k, v], dim=1))))
        rows = self._axial(self.pos_emb_rowq(q.mean(-1)), self.pos_emb_rowk(k.mean(-1)), v.mean(-1))
        cols = self._axial(self.pos_emb_columnq(q.mean(-2)), self.pos_emb_columnk(k.mean(-2)), v.mean(-2))
        rows = self.proj_encode_row(rows.unsqueeze(-1))  # (B, dh, H, 1)
        cols = self.proj_encode_column(cols.unsqueeze(-2))  # (B, dh, 1, W)
        gate = self.proj(v + (rows + cols))
        return self.sigmoid(gate) * detail


class Mlp(nn.Module):
    """1x1 Conv2dBN -> 3x3 depthwise conv (bias) -> ReLU6 -> 1x1 Conv2dBN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Conv2dBN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.ReLU6()
        self.fc2 = Conv2dBN(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """``x + drop_path(attn(x))``, then ``x + drop_path(mlp(x))``."""

    def __init__(
        self, dim: int, key_dim: int, num_heads: int, mlp_ratio: float, attn_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.attn = SeaAttention(dim, key_dim, num_heads, attn_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


class BasicLayer(nn.Module):
    """``transformer_blocks``: ``depth`` SeaFormer blocks with linearly increasing drop path."""

    def __init__(
        self,
        depth: int,
        dim: int,
        key_dim: int,
        num_heads: int,
        mlp_ratio: float,
        attn_ratio: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # as the original (float32)
        self.transformer_blocks = nn.ModuleList(
            [Block(dim, key_dim, num_heads, mlp_ratio, attn_ratio, rate) for rate in rates]
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


class SeaFormer(nn.Module):
    """SeaFormer feature extractor.

    Args:
        cfgs: five lists of (kernel, expand ratio, channels, stride) rows, one per ``smb{i}``.
        channels: input width of each stack (``channels[0]`` is the stem width) and, last, the
            output width of the last stack.
        emb_dims: width of each attention layer (= output width of the stack before it).
        key_dims: per-head query/key width of each attention layer.
        depths: number of blocks of each attention layer ``trans{i}``; they follow the last
            ``len(depths)`` stacks.
        num_heads: attention heads (8 for B and L).
        attn_ratio: value width per head / key width.
        mlp_ratios: MLP expansion of each attention layer.
        drop_path_rate: stochastic depth, increasing linearly within each attention layer.

    ``forward(images (B, 3, H, W)) -> list[Tensor]``: the output of ``smb2`` (stride 8), then
    the output of every attention layer (strides of their stacks). With odd intermediate sizes
    the stride-2 convs round up (padding k//2), so any input size works, e.g. 96 px -> 1/64 map
    of 2x2.
    """

    def __init__(
        self,
        cfgs: Sequence[Sequence[Sequence[int]]],
        channels: Sequence[int],
        emb_dims: Sequence[int],
        key_dims: Sequence[int],
        depths: Sequence[int],
        num_heads: int = 8,
        attn_ratio: float = 2.0,
        mlp_ratios: Sequence[float] = (2, 4),
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if not (len(depths) == len(emb_dims) == len(key_dims) == len(mlp_ratios)) or len(depths) > len(cfgs):
            raise ValueError(
                f"SeaFormer: depths {list(depths)}, emb_dims {list(emb_dims)}, key_dims {list(key_dims)} and "
                f"mlp_ratios {list(mlp_ratios)} need one entry per attention layer (at most {len(cfgs)})"
            )
        self.num_stacks = len(cfgs)
        self.num_trans = len(depths)
        out_channels, strides, stride = [], [], 1
        for i, cfg in enumerate(cfgs):
            smb = StackedMV2Block(cfg, stem=i == 0, inp_channel=channels[i])
            setattr(self, f"smb{i + 1}", smb)
            stride *= (2 if i == 0 else 1) * math.prod(row[3] for row in cfg)
            t = i - (self.num_stacks - self.num_trans)
            if t >= 0 and smb.out_channels != emb_dims[t]:
                raise ValueError(
                    f"SeaFormer: smb{i + 1} outputs {smb.out_channels} channels but emb_dims[{t}] is {emb_dims[t]}"
                )
            if i == 1 or t >= 0:
                out_channels.append(smb.out_channels)
                strides.append(stride)
        for t in range(self.num_trans):
            setattr(
                self,
                f"trans{t + 1}",
                BasicLayer(depths[t], emb_dims[t], key_dims[t], num_heads, mlp_ratios[t], attn_ratio, drop_path_rate),
            )
        self.out_channels: list[int] = out_channels
        self.strides: list[int] = strides
        self.init_weights()

    def init_weights(self) -> None:
        """The original ``init_weights`` (He-normal convs with fan = k·k·out/groups, BN 1/0).

        As in the original (mmseg calls it before loading), this also resets the zero-init BN of
        the attention projections to 1; the positional embeddings keep their N(0, 1) init.
        """
        for m in self.modules():
            init_weights_(m, linear=False, norms=(nn.BatchNorm2d,))

    def forward(self, images: Tensor) -> list[Tensor]:
        outputs = []
        x = images
        for i in range(self.num_stacks):
            x = getattr(self, f"smb{i + 1}")(x)
            if i == 1:
                outputs.append(x)  # the shared 1/8 detail feature
            t = i - (self.num_stacks - self.num_trans)
            if t >= 0:
                x = getattr(self, f"trans{t + 1}")(x)
                outputs.append(x)
        return outputs


# Like the original loader, prefer ``state_dict_ema`` over ``state_dict`` / ``model``. The
# published files were written by timm's train script, which also pickles its
# ``argparse.Namespace`` arguments: that plain attribute container (and only it) is allowed in
# the weights-only unpickler, for these loads only.
@register_converter(
    "seaformer", wrappers=("state_dict_ema", "state_dict", "model"), allowed_globals=(argparse.Namespace,)
)
def checkpoint_filter_fn(state_dict: StateDict) -> StateDict:
    """Published classification / mmseg-backbone layout -> :class:`SeaFormer` keys.

    Strips ``module.`` and ``backbone.`` prefixes and drops the ImageNet classifier.
    """
    return {k: v for k, v in strip_prefixes(state_dict).items() if not k.startswith(CLASSIFICATION_HEAD_PREFIXES)}


#: Architecture of SeaFormer-B and -L (docs/algorithm.md §10.7; fudan-zvg/SeaFormer seaformer_{base,large}.py).
SEAFORMER_CONFIGS: dict[str, dict] = {
    "seaformer_b": dict(
        cfgs=[
            [[3, 1, 16, 1], [3, 4, 32, 2], [3, 3, 32, 1]],
            [[5, 3, 64, 2], [5, 3, 64, 1]],
            [[3, 3, 128, 2], [3, 3, 128, 1]],
            [[5, 4, 192, 2]],
            [[3, 6, 256, 2]],
        ],
        channels=[16, 32, 64, 128, 192, 256],
        emb_dims=[192, 256],
        key_dims=[16, 24],
        depths=[4, 4],
        mlp_ratios=[2, 4],
    ),
    "seaformer_l": dict(
        cfgs=[
            [[3, 3, 32, 1], [3, 4, 64, 2], [3, 4, 64, 1]],
            [[5, 4, 128, 2], [5, 4, 128, 1]],
            [[3, 4, 192, 2], [3, 4, 192, 1]],
            [[5, 4, 256, 2]],
            [[3, 6, 320, 2]],
        ],
        channels=[32, 64, 128, 192, 256, 320],
        emb_dims=[192, 256, 320],
        key_dims=[16, 20, 24],
        depths=[3, 3, 3],
        mlp_ratios=[2, 4, 6],
    ),
}
