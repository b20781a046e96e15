"""AFFormer backbone ("Head-Free Lightweight Semantic Segmentation with Linear Transformer",
Dong et al., AAAI 2023; official code dongbo811/AFFormer, ``tools/afformer.py``).

Structure (docs/algorithm.md §11.1). A stem of two 3x3 stride-2 Conv-BN-Hardswish layers brings the image to
1/4. Each of the four stages then

1. runs two depthwise-separable "patch embeds" in sequence (``patch_embed_stages.{i}``); the
   first feeds the *restore* path, the second (the output of the first, possibly strided) feeds
   the *attention* path;
2. ``mhca_stages.{i}``: restore path = inverted-bottleneck ``Restore`` block (residual);
   attention path (stages 1-3) = ``MHCAEncoder``: a shared convolutional position encoding, and
   transformer blocks whose token mixer is the *adaptive frequency filter*: factorised linear
   attention (``q @ (softmax_N(k)^T v)``) plus a high-pass branch (per-head-group depthwise
   3/5/7 convs on ``v``, gated by ``q``) and a low-pass branch (pyramid average pooling of ``v``
   at sizes 1/2/3/6, upsampled);
3. the attention path is resized to the restore path (bilinear, ``align_corners=True``), the two
   are summed (stage 0 sums the two embeds before ``Restore``) and a 1x1 Conv-BN-Hardswish
   ``aggregate`` sets the output width.

Strides of the attention path: stage 1 downsamples both paths to 1/8; stages 2 and 3 keep the
restore path at 1/8 and run attention at 1/16 and 1/32. Outputs of afformer_b: 96 @ 1/4,
176 @ 1/8, 216 @ 1/8, 216 @ 1/8.

Parameter names follow the official code (``stem.*``, ``patch_embed_stages.*``,
``mhca_stages.*``, ``MHCA_layers``, ``factoratt_crpe``, ``Restore``, ...), so
``AFFormer_base_ImageNet1k_new.pth`` loads without renaming. As in the official code, the
position encoding ``cpe`` and the frequency filter ``crpe`` of an encoder are *shared* by all
its blocks and appear in the state dict under every block that holds them (``state_dict``
repeats shared modules; ``parameters()`` counts them once). All norms are plain
``nn.BatchNorm2d`` / ``nn.LayerNorm`` (the official model never uses SyncBN).
"""
from __future__ import annotations


import torch
from timm.layers import DropPath
from torch import Tensor, nn

from ..layers import ConvModule, init_weights_, map_to_tokens, resize, tokens_to_map
from ..weights import register_converter, strip_prefixes

__all__ = ["AFFormer", "checkpoint_filter_fn"]


class DWConv2dBN(nn.Module):
    """Depthwise kxk conv (no bias) -> pointwise 1x1 conv (no bias) -> BN -> Hardswish.

    ``forward(x (B, C, H, W)) -> (B, C, H/stride, W/stride)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(
            channels, channels, kernel_size, stride, (kernel_size - 1) // 2, groups=channels, bias=False
        )
        self.pwconv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.Hardswish()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.pwconv(self.dwconv(x))))


class DWCPatchEmbed(nn.Module):
    """One patch embed of a stage (official name kept for its ``patch_conv`` key)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.patch_conv = DWConv2dBN(channels, kernel_size=3, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.patch_conv(x)


class PatchEmbedStage(nn.Module):
    """Two patch embeds in sequence; returns both outputs ``[restore_input, attention_input]``.

    Args:
        channels: stage width (the embeds keep it).
        strides: stride of the first and of the second embed.
    """

    def __init__(self, channels: int, strides: tuple[int, int]) -> None:
        super().__init__()
        self.patch_embeds = nn.ModuleList([DWCPatchEmbed(channels, s) for s in strides])

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for embed in self.patch_embeds:
            x = embed(x)
            outputs.append(x)
        return outputs


class ConvPosEnc(nn.Module):
    """Convolutional position encoding on tokens: ``x + dwconv3x3(x)``.

    ``forward(x (B, N, C), size (H, W)) -> (B, N, C)``.
    """

    def __init__(self, dim: int, k: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        feat = tokens_to_map(x, size)
        return map_to_tokens(self.proj(feat) + feat)


class LowPassModule(nn.Module):
    """Low-pass branch: split channels in four, average-pool to 1/2/3/6, upsample, ReLU.

    ``forward(x (B, C, H, W)) -> (B, C, H, W)``; ``C`` must be divisible by 4.
    """

    def __init__(self, channels: int, sizes: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        if channels % len(sizes):
            raise ValueError(f"LowPassModule needs channels divisible by {len(sizes)}, got {channels}")
        self.stages = nn.ModuleList([nn.AdaptiveAvgPool2d(s) for s in sizes])
        self.relu = nn.ReLU()
        self.channel_splits = [channels // len(sizes)] * len(sizes)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        chunks = torch.split(x, self.channel_splits, dim=1)
        # The official code uses the deprecated F.upsample (bilinear, align_corners False).
        priors = [resize(pool(chunk), size) for pool, chunk in zip(self.stages, chunks)]
        return self.relu(torch.cat(priors, dim=1))


class FilterModule(nn.Module):
    """The frequency filter ("crpe" in the official code): ``q * HP(v) + LP(v)``.

    High-pass: depthwise convs of sizes ``window`` on consecutive groups of heads of ``v``
    (``{3: 2, 5: 3, 7: 3}`` = 2 heads with 3x3, 3 heads with 5x5, 3 heads with 7x7).

    ``forward(q, v (B, heads, N, Ch), size (H, W)) -> (B, heads, N, Ch)``.
    """

    def __init__(self, head_dim: int, num_heads: int, window: dict[int, int]) -> None:
        super().__init__()
        if sum(window.values()) != num_heads:
            raise ValueError(f"crpe window {window} must cover all {num_heads} heads")
        self.num_heads = num_heads
        self.channel_splits = [split * head_dim for split in window.values()]
        self.conv_list = nn.ModuleList(
            [nn.Conv2d(ch, ch, k, padding=k // 2, groups=ch) for k, ch in zip(window, self.channel_splits)]
        )
        self.LP = LowPassModule(head_dim * num_heads)

    def forward(self, q: Tensor, v: Tensor, size: tuple[int, int]) -> Tensor:
        b, h, n, ch = q.shape
        v_img = v.transpose(2, 3).reshape(b, h * ch, *size)
        low = self.LP(v_img)
        high = torch.cat([conv(x) for conv, x in zip(self.conv_list, torch.split(v_img, self.channel_splits, 1))], 1)
        high = high.reshape(b, h, ch, n).transpose(2, 3)
        low = low.reshape(b, h, ch, n).transpose(2, 3)
        return q * high + low


class FrequencyFilterAttention(nn.Module):
    """Factorised linear attention plus the shared frequency filter (official
    ``Frequency_FilterModule``, attribute ``factoratt_crpe`` of a block).

    ``forward(x (B, N, C), size (H, W)) -> (B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int, shared_crpe: FilterModule, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.crpe = shared_crpe

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        # softmax over the tokens of k, then (Ch x Ch) context: linear in N.
        context = k.softmax(dim=2).transpose(2, 3) @ v
        out = self.scale * (q @ context) + self.crpe(q, v, size)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """3x3 depthwise conv on tokens (the MLP's ``dwconv.dwconv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, size)))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x) + dwconv(fc1(x))))`` on tokens ``(B, N, C)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.fc1(x)
        return self.fc2(self.act(x + self.dwconv(x, size)))


class MHCABlock(nn.Module):
    """``x = cpe(x); x += attn(LN(x)); x += mlp(LN(x))`` (pre-norm, LayerNorm eps 1e-6).

    ``cpe`` and ``crpe`` are the encoder's shared modules (registered here too, as officially).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: int,
        drop_path: float,
        shared_cpe: ConvPosEnc,
        shared_crpe: FilterModule,
    ) -> None:
        super().__init__()
        self.cpe = shared_cpe
        self.crpe = shared_crpe
        self.factoratt_crpe = FrequencyFilterAttention(dim, num_heads, shared_crpe)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.cpe(x, size)
        x = x + self.drop_path(self.factoratt_crpe(self.norm1(x), size))
        return x + self.drop_path(self.mlp(self.norm2(x), size))


class MHCAEncoder(nn.Module):
    """The attention path of a stage. ``forward(x (B, C, H, W)) -> (B, C, H, W)``."""

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        mlp_ratio: int,
        drop_path_list: list[float],
        crpe_window: dict[int, int],
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MHCAEncoder width {dim} is not divisible by num_heads {num_heads}")
        self.cpe = ConvPosEnc(dim, k=3)
        self.crpe = FilterModule(dim // num_heads, num_heads, crpe_window)
        self.MHCA_layers = nn.ModuleList(
            [
                MHCABlock(dim, num_heads, mlp_ratio, drop_path_list[i], self.cpe, self.crpe)
                for i in range(num_layers)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[2], x.shape[3])
        tokens = map_to_tokens(x)
        for layer in self.MHCA_layers:
            tokens = layer(tokens, size)
        return tokens_to_map(tokens, size)


class Restore(nn.Module):
    """Residual inverted bottleneck: 1x1 (C -> C/2, BN, Hardswish) -> dw 3x3 -> BN -> Hardswish
    -> 1x1 (C/2 -> C, BN). ``forward(x (B, C, H, W)) -> (B, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = channels // 2
        self.conv1 = ConvModule(channels, hidden, 1, norm="bn", act="hswish")
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False)
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()
        self.conv2 = ConvModule(hidden, channels, 1, norm="bn", act=None)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.norm(self.dwconv(self.conv1(x)))))


class MHCAStage(nn.Module):
    """Fuse the restore path and (stages > 0) the attention path, then ``aggregate``.

    ``forward([restore_input, attention_input]) -> (B, out_dim, H_restore, W_restore)``.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        num_layers: int,
        num_heads: int,
        mlp_ratio: int,
        drop_path_list: list[float],
        with_attention: bool,
        crpe_window: dict[int, int],
    ) -> None:
        super().__init__()
        self.Restore = Restore(dim)
        self.aggregate = ConvModule(dim, out_dim, 1, norm="bn", act="hswish")
        self.mhca_blks = (
            nn.ModuleList([MHCAEncoder(dim, num_layers, num_heads, mlp_ratio, drop_path_list, crpe_window)])
            if with_attention
            else None
        )

    def forward(self, inputs: list[Tensor]) -> Tensor:
        if self.mhca_blks is None:
            return self.aggregate(self.Restore(inputs[0] + inputs[1]))
        local = self.Restore(inputs[0])
        glob = resize(self.mhca_blks[0](inputs[1]), local.shape[-2:], align_corners=True)
        return self.aggregate(local + glob)


class AFFormer(nn.Module):
    """AFFormer backbone (one restore path + one attention path per stage, ``num_path = 1``).

    Args:
        embed_dims: stage widths; stage ``i`` outputs ``embed_dims[i + 1]`` (the last one its
            own width).
        num_layers: transformer blocks per stage (stage 0 has no attention path, so its entry
            is unused, as officially).
        mlp_ratios: MLP expansion per stage.
        num_heads: attention heads per stage.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        crpe_window: ``{kernel: heads}`` of the high-pass depthwise convs.
        in_chans: image channels.

    ``forward(images (B, 3, H, W)) -> [F1 (B, d1, H/4, W/4), F2 (B, d2, H/8, W/8),
    F3 (B, d3, H/8, W/8), F4 (B, d3, H/8, W/8)]`` for ``embed_dims = [d0, d1, d2, d3]``.
    """

    #: strides of (restore-path embed, attention-path embed) per stage.
    EMBED_STRIDES = ((1, 1), (2, 1), (1, 2), (1, 4))

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (32, 96, 176, 216),
        num_layers: tuple[int, ...] = (1, 2, 6, 2),
        mlp_ratios: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (8, 8, 8, 8),
        drop_path_rate: float = 0.0,
        crpe_window: dict[int, int] | None = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        num_stages = len(self.EMBED_STRIDES)
        for name, value in (("embed_dims", embed_dims), ("num_layers", num_layers),
                            ("mlp_ratios", mlp_ratios), ("num_heads", num_heads)):
            if len(value) != num_stages:
                raise ValueError(f"AFFormer {name} needs {num_stages} entries, got {list(value)}")
        crpe_window = dict(crpe_window or {3: 2, 5: 3, 7: 3})
        total = sum(num_layers)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # torch.linspace(0, rate, total)
        starts = [sum(num_layers[:i]) for i in range(num_stages)]

        self.stem = nn.Sequential(
            ConvModule(in_chans, embed_dims[0] // 2, 3, stride=2, norm="bn", act="hswish"),
            ConvModule(embed_dims[0] // 2, embed_dims[0], 3, stride=2, norm="bn", act="hswish"),
        )
        self.patch_embed_stages = nn.ModuleList(
            [PatchEmbedStage(embed_dims[i], self.EMBED_STRIDES[i]) for i in range(num_stages)]
        )
        out_dims = [embed_dims[i + 1] if i + 1 < num_stages else embed_dims[i] for i in range(num_stages)]
        self.mhca_stages = nn.ModuleList(
            [
                MHCAStage(
                    embed_dims[i],
                    out_dims[i],
                    num_layers[i],
                    num_heads[i],
                    mlp_ratios[i],
                    dpr[starts[i] : starts[i] + num_layers[i]],
                    with_attention=i > 0,
                    crpe_window=crpe_window,
                )
                for i in range(num_stages)
            ]
        )
        self.out_channels = out_dims
        stride, strides = 4, []
        for first, _ in self.EMBED_STRIDES:
            stride *= first
            strides.append(stride)
        self.strides = strides
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """The official ``_init_weights`` (used when training without ImageNet weights): the
        shared rules, with BatchNorm reset to 1/0 as LayerNorm."""
        init_weights_(m, norms=(nn.LayerNorm, nn.BatchNorm2d))

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stem(images)
        outs = []
        for embed, stage in zip(self.patch_embed_stages, self.mhca_stages):
            x = stage(embed(x))
            outs.append(x)
        return outs


@register_converter("afformer")
def checkpoint_filter_fn(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a published AFFormer checkpoint onto :class:`AFFormer` keys.

    ``AFFormer_base_ImageNet1k_new.pth`` (dongbo811/AFFormer) uses this module's names already;
    a ``backbone.`` / ``module.`` prefix (segmentor or DDP checkpoints) is stripped and an
    ImageNet classifier (``cls_head.*`` / ``head.*``; the official model class defines one but
    leaves it commented out) is dropped.
    """
    return {k: v for k, v in strip_prefixes(state_dict).items() if not k.startswith(("cls_head.", "head."))}
