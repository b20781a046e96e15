"""EfficientFormerV2 backbone, CGRSeg's segmentation variant ("Rethinking Vision Transformers
for MobileNet Size and Speed", Li et al., ICCV 2023; segmentation variant from
nizhenliang/CGRSeg ``efficientformer_v2.py``, docs/algorithm.md §11.1).

Layout (snap-research key names, so ``eformer_{s2,l}_450.pth`` loads after dropping the
classification head, see :func:`checkpoint_filter_fn`):

* ``patch_embed``: two 3x3 stride-2 conv-BN-GELU layers -> 1/4;
* ``network.{0,2,4,6}``: the four stages (``nn.Sequential`` of blocks), tapped as outputs
  (1/4, 1/8, 1/16, 1/32); ``network.{1,3,5}``: the downsampling embeddings between them
  (3x3 stride-2 conv + BN; the last one adds an attention-downsampling branch);
* FFN block: ``x + ls2 * MLP(x)`` with MLP = 1x1 -> BN -> GELU -> dw 3x3 -> BN -> GELU -> 1x1 -> BN;
* AttnFFN block (the last ``vit_num`` blocks of stages 2 and 3): ``x + ls1 * Attention4D(x)``
  first; in stage 2 the attention runs on a stride-2 grid and is upsampled back.

Segmentation changes relative to the ImageNet model (CGRSeg): attention biases are new
parameters ``attention_biases_seg`` sized for a 512x512 input (one bias per head and relative
offset of the 512-px token grid of that layer) and, at run time, the gathered
``(heads, N_q0, N_k0)`` bias table is resized **bicubically** to the actual ``(N_q, N_k)`` (the
official behaviour: the table is treated as an image, not re-gathered per grid). They start at
zero: the ImageNet ``attention_biases`` (a different key) are not used. BatchNorm trains normally
(docs/algorithm.md Q21: the official ``train()`` override that freezes BN is defeated by its own SyncBN
conversion). The offset-index tables are recomputed at construction and are not saved; the
official legacy buffers ``attention_biases`` / ``attention_bias_idxs`` are not created (the
``cgrseg`` key converter drops them from official checkpoints).
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from ..weights import register_converter, strip_prefixes

__all__ = [
    "EfficientFormerV2",
    "efficientformerv2_s2_feat",
    "efficientformerv2_l_feat",
    "checkpoint_filter_fn",
    "KEEP_INITIAL",
    "is_timm_layout",
    "EFFICIENTFORMER_V2_ARCHS",
]

#: widths, depths, number of attention blocks in stages 2-3, drop-path rate, MLP expansion per block.
EFFICIENTFORMER_V2_ARCHS: dict[str, dict] = {
    "S2": {
        "widths": (32, 64, 144, 288),
        "depths": (4, 4, 12, 8),
        "vit_num": 4,
        "drop_path_rate": 0.02,
        "expansion_ratios": ((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4)),
    },
    "L": {
        "widths": (40, 80, 192, 384),
        "depths": (5, 5, 15, 10),
        "vit_num": 6,
        "drop_path_rate": 0.1,
        "expansion_ratios": (
            (4,) * 5,
            (4,) * 5,
            (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
            (4, 4, 4, 3, 3, 3, 3, 4, 4, 4),
        ),
    },
}


def _conv_bn(in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (with bias, as in the snap code) followed by BatchNorm2d; keys ``0.*``, ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups),
        nn.BatchNorm2d(out_ch),
    )


def _bias_offsets(query_res: int, key_res: int) -> tuple[int, Tensor]:
    """Relative-offset index table of a ``query_res^2 x key_res^2`` attention (snap ordering).

    Query point ``p`` sits at ``p * ceil(key_res / query_res)`` on the key grid; each distinct
    ``(|dy|, |dx|)`` gets an index in order of first appearance when scanning queries, then
    keys, row-major (the snap / CGRSeg loop, vectorised). Returns (number of distinct offsets,
    index table ``(query_res^2, key_res^2)`` long).
    """
    step = math.ceil(key_res / query_res)
    cpu = torch.device("cpu")  # explicit: a model may be built under a ``torch.device`` context
    q = torch.arange(query_res, device=cpu) * step
    k = torch.arange(key_res, device=cpu)
    dy = (q[:, None, None, None] - k[None, None, :, None]).abs()  # (qy, 1, ky, 1)
    dx = (q[None, :, None, None] - k[None, None, None, :]).abs()  # (1, qx, 1, kx)
    span = int(max(q.max(), k.max())) + 1
    codes = (dy * span + dx).reshape(-1)  # scan order: qy, qx, ky, kx
    n = codes.numel()
    first = torch.full((span * span,), n, dtype=torch.long, device=cpu)
    first = first.scatter_reduce(0, codes, torch.arange(n, device=cpu), reduce="amin")
    present = (first < n).nonzero().squeeze(1)
    rank = torch.full((span * span,), -1, dtype=torch.long, device=cpu)
    rank[present[first[present].argsort()]] = torch.arange(len(present), device=cpu)
    return len(present), rank[codes].view(query_res**2, key_res**2)


class _SegAttentionBias(nn.Module):
    """Holds ``attention_biases_seg (heads, offsets)`` and its non-persistent index table."""

    def _init_bias(self, num_heads: int, query_res: int, key_res: int) -> None:
        count, idxs = _bias_offsets(query_res, key_res)
        self.attention_biases_seg = nn.Parameter(torch.zeros(num_heads, count))
        self.register_buffer("attention_bias_idxs_seg", idxs, persistent=False)

    def _bias(self, n_q: int, n_k: int) -> Tensor:
        """Bias ``(1, heads, n_q, n_k)``: the 512-px table, bicubically resized when needed."""
        bias = self.attention_biases_seg[:, self.attention_bias_idxs_seg].unsqueeze(0)
        if bias.shape[-2:] != (n_q, n_k):
            bias = F.interpolate(bias, size=(n_q, n_k), mode="bicubic", align_corners=False)
        return bias


class Attention4D(_SegAttentionBias):
    """Multi-head self-attention on a 2-D map with talking heads and a local ``v`` branch.

    Args:
        dim: channels.
        resolution: token-grid side at a 512-px input (sizes the bias table).
        stride: 2 runs attention on a stride-2 grid (dw 3x3 conv + BN) and upsamples the result.
        key_dim, num_heads, attn_ratio: per-head q/k width (32), heads (8), v width = ratio x key.

    ``forward(x (B, dim, H, W)) -> (B, dim, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        resolution: int,
        stride: int | None = None,
        key_dim: int = 32,
        num_heads: int = 8,
        attn_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        if stride is not None:
            resolution = math.ceil(resolution / stride)
            self.stride_conv = _conv_bn(dim, dim, 3, stride, groups=dim)
            self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear")
        else:
            self.stride_conv = None
            self.upsample = None
        self.q = _conv_bn(dim, num_heads * key_dim)
        self.k = _conv_bn(dim, num_heads * key_dim)
        self.v = _conv_bn(dim, self.dh)
        self.v_local = _conv_bn(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, dim, 1), nn.BatchNorm2d(dim))
        self._init_bias(num_heads, resolution, resolution)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        b, _, h, w = x.shape
        n = h * w
        q = self.q(x).reshape(b, self.num_heads, self.key_dim, n).transpose(2, 3)
        k = self.k(x).reshape(b, self.num_heads, self.key_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, self.d, n).transpose(2, 3)
        attn = (q @ k) * self.scale + self._bias(n, n)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        out = (attn @ v).transpose(2, 3).reshape(b, self.dh, h, w) + v_local
        if self.upsample is not None:
            out = self.upsample(out)
        return self.proj(out)


class LGQuery(nn.Module):
    """Local-global stride-2 query: ``proj(dwconv3x3_s2(x) + subsample_2(x))``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Sequential(nn.Conv2d(in_dim, in_dim, 3, 2, 1, groups=in_dim))
        self.proj = _conv_bn(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.local(x) + self.pool(x))


class Attention4DDownsample(_SegAttentionBias):
    """Stride-2 attention: queries from :class:`LGQuery`, keys/values at full resolution.

    ``forward(x (B, dim, H, W)) -> (B, out_dim, ceil(H/2), ceil(W/2))``.
    """

    def __init__(
        self, dim: int, out_dim: int, resolution: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: int = 4
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        self.q = LGQuery(dim, num_heads * key_dim)
        self.k = _conv_bn(dim, num_heads * key_dim)
        self.v = _conv_bn(dim, self.dh)
        self.v_local = _conv_bn(self.dh, self.dh, 3, stride=2, groups=self.dh)
        self.proj = nn.Sequential(nn.GELU(), nn.Conv2d(self.dh, out_dim, 1), nn.BatchNorm2d(out_dim))
        self._init_bias(num_heads, math.ceil(resolution / 2), resolution)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.q(x)
        hq, wq = q.shape[-2:]
        q = q.reshape(b, self.num_heads, self.key_dim, hq * wq).transpose(2, 3)
        k = self.k(x).reshape(b, self.num_heads, self.key_dim, h * w)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, self.num_heads, self.d, h * w).transpose(2, 3)
        attn = ((q @ k) * self.scale + self._bias(hq * wq, h * w)).softmax(dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(b, self.dh, hq, wq) + v_local
        return self.proj(out)


class Embedding(nn.Module):
    """Downsampling between stages: 3x3 stride-2 conv + BN (``proj``/``norm``), or, with
    ``attention``, ``conv``/``bn`` plus an :class:`Attention4DDownsample` branch (``attn``).

    ``forward(x (B, in_chans, H, W)) -> (B, embed_dim, H/2, W/2)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, attention: bool = False, resolution: int = 0) -> None:
        super().__init__()
        self.asub = attention
        if attention:
            self.attn = Attention4DDownsample(in_chans, embed_dim, resolution)
            self.conv = nn.Conv2d(in_chans, embed_dim, 3, 2, 1)
            self.bn = nn.BatchNorm2d(embed_dim)
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, 3, 2, 1)
            self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.asub:
            return self.attn(x) + self.bn(self.conv(x))
        return self.norm(self.proj(x))


class Mlp(nn.Module):
    """1x1 conv -> BN -> GELU -> dw 3x3 -> BN -> GELU -> 1x1 conv -> BN (``(B, C, H, W)``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        for conv in (self.fc1, self.fc2):  # the snap init (the dw ``mid`` conv keeps PyTorch's)
            trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)
        self.mid = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.mid_norm = nn.BatchNorm2d(hidden)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.mid_norm(self.mid(x)))
        return self.norm2(self.fc2(x))


class FFN(nn.Module):
    """``x + drop_path(layer_scale_2 * mlp(x))``."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float, layer_scale_init: float) -> None:
        super().__init__()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class AttnFFN(nn.Module):
    """``x + ls1 * Attention4D(x)``, then ``x + ls2 * mlp(x)``."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float,
        drop_path: float,
        layer_scale_init: float,
        resolution: int,
        stride: int | None,
    ) -> None:
        super().__init__()
        self.token_mixer = Attention4D(dim, resolution=resolution, stride=stride)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.token_mixer(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class EfficientFormerV2(nn.Module):
    """EfficientFormerV2 feature extractor (CGRSeg's ``efficientformerv2_*_feat``).

    Args:
        widths: stage widths.
        depths: blocks per stage.
        expansion_ratios: MLP expansion of every block, per stage.
        vit_num: number of trailing AttnFFN blocks in stages 2 and 3.
        drop_path_rate: stochastic depth, linear in the global block index.
        layer_scale_init: initial layer scale (1e-5).
        resolution: input side the attention-bias tables are sized for (512).

    ``forward(images (B, 3, H, W)) -> [(B, w0, H/4, W/4), (B, w1, H/8, W/8),
    (B, w2, H/16, W/16), (B, w3, H/32, W/32)]`` (H, W multiples of 32).
    """

    out_indices = (0, 2, 4, 6)

    def __init__(
        self,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        expansion_ratios: tuple[tuple[int, ...], ...],
        vit_num: int,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-5,
        resolution: int = 512,
    ) -> None:
        super().__init__()
        if not len(widths) == len(depths) == len(expansion_ratios) == 4:
            raise ValueError("EfficientFormerV2 needs 4 widths, depths and expansion-ratio tuples")
        for stage, (depth, ratios) in enumerate(zip(depths, expansion_ratios)):
            if len(ratios) != depth:
                raise ValueError(f"stage {stage}: {len(ratios)} expansion ratios for {depth} blocks")
        self.patch_embed = nn.Sequential(
            nn.Conv2d(3, widths[0] // 2, 3, 2, 1),
            nn.BatchNorm2d(widths[0] // 2),
            nn.GELU(),
            nn.Conv2d(widths[0] // 2, widths[0], 3, 2, 1),
            nn.BatchNorm2d(widths[0]),
            nn.GELU(),
        )
        total = sum(depths)
        network: list[nn.Module] = []
        for i, depth in enumerate(depths):
            res = math.ceil(resolution / 2 ** (i + 2))
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * (j + sum(depths[:i])) / (total - 1)
                ratio = expansion_ratios[i][j]
                if i >= 2 and j > depth - 1 - vit_num:
                    stride = 2 if i == 2 else None
                    blocks.append(AttnFFN(widths[i], ratio, dpr, layer_scale_init, res, stride))
                else:
                    blocks.append(FFN(widths[i], ratio, dpr, layer_scale_init))
            network.append(nn.Sequential(*blocks))
            if i + 1 < len(depths):
                network.append(Embedding(widths[i], widths[i + 1], attention=i >= 2, resolution=res))
        self.network = nn.ModuleList(network)
        self.out_channels = list(widths)
        self.strides = [4, 8, 16, 32]

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.patch_embed(images)
        outs = []
        for index, block in enumerate(self.network):
            x = block(x)
            if index in self.out_indices:
                outs.append(x)
        return outs


def _build(arch: str, **kwargs) -> EfficientFormerV2:
    cfg = EFFICIENTFORMER_V2_ARCHS[arch]
    kwargs.setdefault("drop_path_rate", cfg["drop_path_rate"])
    return EfficientFormerV2(cfg["widths"], cfg["depths"], cfg["expansion_ratios"], cfg["vit_num"], **kwargs)


def efficientformerv2_s2_feat(**kwargs) -> EfficientFormerV2:
    """EfficientFormerV2-S2 (CGRSeg-B backbone): widths 32/64/144/288, drop path 0.02."""
    return _build("S2", **kwargs)


def efficientformerv2_l_feat(**kwargs) -> EfficientFormerV2:
    """EfficientFormerV2-L (CGRSeg-L backbone): widths 40/80/192/384, drop path 0.1."""
    return _build("L", **kwargs)


#: parameters an ImageNet checkpoint does not provide (they start at zero, as in CGRSeg).
KEEP_INITIAL = r".*\.attention_biases_seg"
#: keys of the snap-research ImageNet checkpoints that the segmentation backbone does not use:
#: the classifier (``norm``, ``head``, ``dist_head``) and the 224-px attention-bias tables (the
#: seg variant learns new ``attention_biases_seg`` from zero, as CGRSeg does), plus the index
#: buffers that official CGRSeg / SSA-Seg segmentor checkpoints carry (recomputed here).
_SNAP_DROPPED_PREFIXES = ("norm.", "head.", "dist_head.", "head_dist.")
_SNAP_DROPPED_SUFFIXES = (".attention_biases", ".attention_bias_idxs", ".attention_bias_idxs_seg")


_TIMM_STEM = {"stem.conv1.conv.": "patch_embed.0.", "stem.conv1.bn.": "patch_embed.1.",
               "stem.conv2.conv.": "patch_embed.3.", "stem.conv2.bn.": "patch_embed.4."}
#: (pattern, replacement) on the part of a timm key after ``stages.{i}.blocks.{j}.`` /
#: ``stages.{i}.downsample.``; timm's ConvNorm ``conv``/``bn`` become snap's Sequential indices.
_TIMM_RULES = [
    (re.compile(r"^mlp\.fc1\.conv\."), "mlp.fc1."),
    (re.compile(r"^mlp\.fc1\.bn\."), "mlp.norm1."),
    (re.compile(r"^mlp\.mid\.conv\."), "mlp.mid."),
    (re.compile(r"^mlp\.mid\.bn\."), "mlp.mid_norm."),
    (re.compile(r"^mlp\.fc2\.conv\."), "mlp.fc2."),
    (re.compile(r"^mlp\.fc2\.bn\."), "mlp.norm2."),
    (re.compile(r"^ls([12])\.gamma$"), r"layer_scale_\1"),
    (re.compile(r"^attn\.q\.local\."), "attn.q.local.0."),
    (re.compile(r"^attn\.q\.proj\.conv\."), "attn.q.proj.0."),
    (re.compile(r"^attn\.q\.proj\.bn\."), "attn.q.proj.1."),
    (re.compile(r"^(token_mixer|attn)\.(stride_conv|q|k|v|v_local)\.conv\."), r"\1.\2.0."),
    (re.compile(r"^(token_mixer|attn)\.(stride_conv|q|k|v|v_local)\.bn\."), r"\1.\2.1."),
    (re.compile(r"^(token_mixer|attn)\.proj\.conv\."), r"\1.proj.1."),
    (re.compile(r"^(token_mixer|attn)\.proj\.bn\."), r"\1.proj.2."),
]
_TIMM_STAGE = re.compile(r"^stages\.(\d+)\.(blocks\.(\d+)|downsample)\.(.*)$")


def _from_timm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm ``efficientformerv2_*`` keys -> snap keys (stage ``i`` -> ``network.{2i}``, its
    downsample -> ``network.{2i-1}``; layer scales ``(C,)`` -> ``(C, 1, 1)``)."""
    attn_downsample = {m.group(1) for k in state_dict if (m := re.match(r"^stages\.(\d+)\.downsample\.attn\.", k))}
    out = {}
    for key, value in state_dict.items():
        for prefix, new in _TIMM_STEM.items():
            if key.startswith(prefix):
                out[new + key[len(prefix):]] = value
                break
        else:
            m = _TIMM_STAGE.match(key)
            if m is None:  # norm / head / head_dist: the ImageNet classifier
                out[key] = value
                continue
            stage, rest = m.group(1), m.group(4)
            if m.group(3) is not None:
                prefix = f"network.{2 * int(stage)}.{m.group(3)}."
            else:
                prefix = f"network.{2 * int(stage) - 1}."
                asub = stage in attn_downsample
                rest = re.sub(r"^conv\.conv\.", "conv." if asub else "proj.", rest)
                rest = re.sub(r"^conv\.bn\.", "bn." if asub else "norm.", rest)
            for pattern, repl in _TIMM_RULES:
                rest, hits = pattern.subn(repl, rest)
                if hits:
                    break
            if rest.startswith("layer_scale_"):
                value = value.reshape(-1, 1, 1)
            out[prefix + rest] = value
    return out


def is_timm_layout(state_dict: dict[str, Tensor]) -> bool:
    """True for timm's ``efficientformerv2_*`` layout (``stem.conv1.*``, ``stages.*``)."""
    return any(k.startswith("stem.conv1.") for k in state_dict)


@register_converter("efficientformer_v2", keep_initial=KEEP_INITIAL)
def checkpoint_filter_fn(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a published EfficientFormerV2 checkpoint onto :class:`EfficientFormerV2` keys.

    Accepts the snap-research ImageNet files (``eformer_s2_450.pth``, ``eformer_l_450.pth``; the
    ``{"model": ...}`` wrapper is removed by :func:`ssaseg.checkpoints.read_state_dict`), the
    ``backbone.*`` part of a CGRSeg segmentor checkpoint (same names), and timm's
    ``efficientformerv2_{s2,l}.snap_dist_in1k`` files (renamed by :func:`is_timm_layout` /
    ``_from_timm``). A ``backbone.`` prefix, the classifier and the ImageNet attention-bias
    tables are dropped (CGRSeg loads them non-strictly and never uses them; timm also orders
    them differently). ImageNet files have no ``attention_biases_seg``: the converter is
    registered with ``keep_initial=KEEP_INITIAL``, so they keep their initial zeros.
    """
    state_dict = strip_prefixes(state_dict)
    if is_timm_layout(state_dict):
        state_dict = _from_timm(state_dict)
    out = {
        k: v
        for k, v in state_dict.items()
        if not k.startswith(_SNAP_DROPPED_PREFIXES) and not k.endswith(_SNAP_DROPPED_SUFFIXES)
    }
    return out
