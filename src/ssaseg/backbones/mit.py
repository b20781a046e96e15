"""Mix Transformer (MiT), the SegFormer backbone, written like mmseg's ``MixVisionTransformer``.

Two mmseg choices are kept on purpose:

* attention is an ``nn.MultiheadAttention`` (query = tokens, key/value = spatially reduced
  tokens). The paper's GMAC figures come from an mmcv-1.x counter that does not count this module
  (its ``get_flops`` hooks module types only), and mmseg checkpoints store it as ``attn.attn.in_proj_*`` /
  ``attn.attn.out_proj.*``;
* the Mix-FFN "linear" layers are 1x1 convs (``ffn.layers.0`` fc1, ``.1`` 3x3 depthwise,
  ``.4`` fc2).

State-dict layout (mmseg): ``layers.{i}.0`` patch embedding (``projection``, ``norm``),
``layers.{i}.1.{j}`` blocks (``norm1``, ``attn.attn.*``, ``attn.sr``, ``attn.norm``, ``norm2``,
``ffn.layers.*``), ``layers.{i}.2`` the stage's LayerNorm. :func:`convert_official_mit` maps the
original NVlabs layout (``patch_embed{s}``, ``block{s}.{j}.attn.q/kv/proj/sr``, ``mlp.fc1/dwconv/
fc2``, ``norm{s}``; also smp's MiT encoder) onto it, and :func:`convert_hf_mit` the HF transformers
layout (``nvidia/mit-b*``: ``[segformer.]encoder.block.{s}.{j}.attention.self.query|key|value``).
The converter ``"mit"`` (:func:`checkpoint_filter_fn`) accepts all three.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from ..layers import init_weights_, map_to_tokens, tokens_to_map
from ..weights import register_converter, strip_prefixes


def _layer_norm(dim: int) -> nn.LayerNorm:
    # mmseg's MixVisionTransformer default norm_cfg is LN with eps 1e-6 (as NVlabs' SegFormer).
    return nn.LayerNorm(dim, eps=1e-6)


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: conv (kernel k, stride s, padding k//2) then LayerNorm.

    ``forward(x (B, Cin, H, W)) -> (tokens (B, N, C), (H', W'))``.
    """

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride, padding=kernel_size // 2)
        self.norm = _layer_norm(embed_dims)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(map_to_tokens(x)), hw


class EfficientMultiheadAttention(nn.Module):
    """SegFormer's efficient self-attention: keys/values come from the tokens downsampled by a
    ``sr_ratio`` x ``sr_ratio`` strided conv (``sr``) and a LayerNorm (``norm``).

    ``forward(x (B, N, C), hw, identity (B, N, C)) -> identity + drop_path(attn(x))``.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        sr_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=attn_drop, bias=qkv_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dropout_layer = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, stride=sr_ratio)
            self.norm = _layer_norm(embed_dims)

    def forward(self, x: Tensor, hw: tuple[int, int], identity: Tensor) -> Tensor:
        x_kv = x
        if self.sr_ratio > 1:
            x_kv = self.norm(map_to_tokens(self.sr(tokens_to_map(x, hw))))
        # nn.MultiheadAttention is sequence-first here, as in mmseg (batch_first=False also keeps
        # it off the fused "fast path", which torch.onnx/torch.compile handle less well);
        # need_weights=False lets it use scaled_dot_product_attention.
        q, kv = x.transpose(0, 1), x_kv.transpose(0, 1)
        out = self.attn(q, kv, kv, need_weights=False)[0].transpose(0, 1)
        return identity + self.dropout_layer(self.proj_drop(out))


class MixFFN(nn.Module):
    """1x1 conv -> 3x3 depthwise conv -> GELU -> dropout -> 1x1 conv -> dropout, plus identity.

    ``forward(x (B, N, C), hw, identity (B, N, C)) -> (B, N, C)``.
    """

    def __init__(self, embed_dims: int, hidden: int, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(embed_dims, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Dropout(drop),
            nn.Conv2d(hidden, embed_dims, 1),
            nn.Dropout(drop),
        )
        self.dropout_layer = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, hw: tuple[int, int], identity: Tensor) -> Tensor:
        out = map_to_tokens(self.layers(tokens_to_map(x, hw)))
        return identity + self.dropout_layer(out)


class TransformerEncoderLayer(nn.Module):
    """Pre-norm block: ``x = x + attn(norm1(x))``; ``x = x + ffn(norm2(x))``."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        hidden: int,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        qkv_bias: bool = True,
        sr_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.norm1 = _layer_norm(embed_dims)
        self.attn = EfficientMultiheadAttention(
            embed_dims, num_heads, attn_drop_rate, drop_rate, drop_path_rate, qkv_bias, sr_ratio
        )
        self.norm2 = _layer_norm(embed_dims)
        self.ffn = MixFFN(embed_dims, hidden, drop_rate, drop_path_rate)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = self.attn(self.norm1(x), hw, identity=x)
        return self.ffn(self.norm2(x), hw, identity=x)


class MixVisionTransformer(nn.Module):
    """MiT backbone (mmseg semantics).

    Args:
        embed_dims: base width; stage ``i`` has ``embed_dims * num_heads[i]`` channels
            (B0: 32 -> 32,64,160,256; B1-B5: 64 -> 64,128,320,512).
        num_layers: blocks per stage (B0/B1 2,2,2,2; B2 3,4,6,3; B3 3,4,18,3; B4 3,8,27,3;
            B5 3,6,40,3).
        num_heads: heads per stage (1,2,5,8 for every MiT).
        patch_sizes, strides: patch-embedding kernels and strides (7,3,3,3 and 4,2,2,2).
        sr_ratios: spatial-reduction ratio of the keys/values per stage (8,4,2,1).
        mlp_ratio: Mix-FFN expansion (4).
        qkv_bias: biases of the q/k/v projections.
        drop_rate, attn_drop_rate: dropout after attention/FFN and on the attention weights.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (0.1 in the configs).
        in_channels: image channels.

    ``forward(images (B, in_channels, H, W)) -> [(B, C_i, H/s_i, W/s_i)]``, ``s = 4, 8, 16, 32``.
    Attributes ``out_channels`` and ``strides``.
    """

    def __init__(
        self,
        embed_dims: int = 64,
        num_layers: Sequence[int] = (3, 4, 6, 3),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        patch_sizes: Sequence[int] = (7, 3, 3, 3),
        strides: Sequence[int] = (4, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        stages = len(num_layers)
        if not stages == len(num_heads) == len(patch_sizes) == len(strides) == len(sr_ratios):
            raise ValueError(
                "num_layers, num_heads, patch_sizes, strides and sr_ratios need one entry per stage, got "
                f"{list(num_layers)}, {list(num_heads)}, {list(patch_sizes)}, {list(strides)}, {list(sr_ratios)}"
            )
        self.out_channels = [embed_dims * h for h in num_heads]
        self.strides = [int(math.prod(strides[: i + 1])) for i in range(stages)]
        dpr = torch.linspace(0, drop_path_rate, sum(num_layers), device="cpu").tolist()
        cur = 0
        self.layers = nn.ModuleList()
        for i, depth in enumerate(num_layers):
            dim = self.out_channels[i]
            patch_embed = PatchEmbed(in_channels, dim, patch_sizes[i], strides[i])
            blocks = nn.ModuleList(
                TransformerEncoderLayer(
                    dim, num_heads[i], int(mlp_ratio * dim), drop_rate, attn_drop_rate, dpr[cur + j], qkv_bias,
                    sr_ratios[i],
                )
                for j in range(depth)
            )
            self.layers.append(nn.ModuleList([patch_embed, blocks, _layer_norm(dim)]))
            in_channels = dim
            cur += depth
        self.init_weights()

    def init_weights(self) -> None:
        """mmseg's from-scratch init: trunc-normal Linear, fan-out normal Conv2d, unit LayerNorm
        (the attention's packed ``in_proj_weight`` keeps PyTorch's xavier init, as in mmseg)."""
        for m in self.modules():
            init_weights_(m)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for patch_embed, blocks, norm in self.layers:
            x, hw = patch_embed(x)
            for blk in blocks:
                x = blk(x, hw)
            x = tokens_to_map(norm(x), hw)
            outs.append(x)
        return outs


_OFFICIAL_STAGE = re.compile(r"^(patch_embed|block|norm)(\d+)\.(.*)$")


def is_official_mit_layout(state_dict: dict[str, Tensor]) -> bool:
    """True for the original NVlabs SegFormer / smp layout (``patch_embed1.*``, ``block1.*``)."""
    return any(k.startswith(("patch_embed1.", "block1.")) for k in state_dict)


def convert_official_mit(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map an original NVlabs MiT state dict onto :class:`MixVisionTransformer`'s (mmseg) layout.

    ``patch_embed{s}.proj|norm`` -> ``layers.{s-1}.0.projection|norm``;
    ``block{s}.{j}.attn.q`` + ``.attn.kv`` -> ``layers.{s-1}.1.{j}.attn.attn.in_proj_weight|bias``
    (concatenated q, k, v along dim 0); ``.attn.proj`` -> ``.attn.attn.out_proj``; ``.attn.sr|norm``
    unchanged; ``.mlp.fc1|dwconv.dwconv|fc2`` -> ``.ffn.layers.0|1|4`` (Linear weights reshaped to
    1x1 conv kernels); ``norm{s}`` -> ``layers.{s-1}.2``. The ImageNet classifier ``head.*`` is
    dropped. An unrecognised key raises ``KeyError`` naming it.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            continue
        m = _OFFICIAL_STAGE.match(key)
        if m is None:
            raise KeyError(f"not an official MiT key: {key!r}")
        kind, stage, rest = m.group(1), int(m.group(2)) - 1, m.group(3)
        if kind == "patch_embed":
            out[f"layers.{stage}.0.{rest.replace('proj.', 'projection.', 1)}"] = value
        elif kind == "norm":
            out[f"layers.{stage}.2.{rest}"] = value
        else:
            block, _, tail = rest.partition(".")
            prefix = f"layers.{stage}.1.{block}."
            if tail.startswith("attn.kv."):
                continue  # merged into in_proj with attn.q below
            if tail.startswith("attn.q."):
                param = tail[len("attn.q."):]
                kv_key = f"block{stage + 1}.{block}.attn.kv.{param}"
                if kv_key not in state_dict:
                    raise KeyError(f"official MiT checkpoint has {key!r} but not {kv_key!r}")
                out[f"{prefix}attn.attn.in_proj_{param}"] = torch.cat([value, state_dict[kv_key]], dim=0)
            elif tail.startswith("attn.proj."):
                out[prefix + tail.replace("attn.proj.", "attn.attn.out_proj.", 1)] = value
            elif tail.startswith("mlp."):
                sub = tail[len("mlp."):]
                for old, new in (("fc1.", "0."), ("dwconv.dwconv.", "1."), ("fc2.", "4.")):
                    if sub.startswith(old):
                        if old != "dwconv.dwconv." and sub.endswith("weight"):
                            value = value.reshape(*value.shape, 1, 1)
                        out[f"{prefix}ffn.layers.{new}{sub[len(old):]}"] = value
                        break
                else:
                    raise KeyError(f"not an official MiT key: {key!r}")
            else:  # norm1, norm2, attn.sr, attn.norm keep their names
                out[prefix + tail] = value
    return out


_HF_STAGE = re.compile(r"^encoder\.(patch_embeddings|block|layer_norm)\.(\d+)\.(.*)$")
#: HF SegFormer block names -> NVlabs names (key/value are merged into ``attn.kv`` separately).
_HF_BLOCK_NAMES = (
    ("layer_norm_1.", "norm1."),
    ("layer_norm_2.", "norm2."),
    ("attention.self.query.", "attn.q."),
    ("attention.self.sr.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."),
    ("attention.output.dense.", "attn.proj."),
    ("mlp.dense1.", "mlp.fc1."),
    ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv."),
    ("mlp.dense2.", "mlp.fc2."),
)


def is_hf_mit_layout(state_dict: dict[str, Tensor]) -> bool:
    """True for the HF transformers layout (``[segformer.]encoder.patch_embeddings.0.*``)."""
    return any(k.removeprefix("segformer.").startswith("encoder.patch_embeddings.") for k in state_dict)


def convert_hf_mit(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map an HF transformers MiT/SegFormer state dict (``SegformerModel``, or the encoder of
    ``SegformerForImageClassification`` / ``SegformerForSemanticSegmentation``, as published in
    ``nvidia/mit-b*``) onto the NVlabs layout, for :func:`convert_official_mit`.

    ``encoder.patch_embeddings.{s}.proj|layer_norm`` -> ``patch_embed{s+1}.proj|norm``;
    ``encoder.block.{s}.{j}.*`` -> ``block{s+1}.{j}.*`` (``attention.self.key`` and ``.value``
    concatenated into ``attn.kv``, other names per ``_HF_BLOCK_NAMES``);
    ``encoder.layer_norm.{s}`` -> ``norm{s+1}``. The classifier / decode head is dropped; an
    unrecognised encoder key raises ``KeyError`` naming it.
    """
    state_dict = {k.removeprefix("segformer."): v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = _HF_STAGE.match(key)
        if m is None:
            if key.startswith(("classifier.", "decode_head.")):
                continue
            raise KeyError(f"not an HF SegFormer encoder key: {key!r}")
        kind, stage, rest = m.group(1), int(m.group(2)) + 1, m.group(3)
        if kind == "patch_embeddings":
            out[f"patch_embed{stage}.{rest.replace('layer_norm.', 'norm.', 1)}"] = value
        elif kind == "layer_norm":
            out[f"norm{stage}.{rest}"] = value
        else:
            block, _, tail = rest.partition(".")
            prefix = f"block{stage}.{block}."
            if tail.startswith("attention.self.value."):
                continue  # merged with the key below
            if tail.startswith("attention.self.key."):
                param = tail[len("attention.self.key."):]
                value_key = f"encoder.block.{stage - 1}.{block}.attention.self.value.{param}"
                if value_key not in state_dict:
                    raise KeyError(f"HF SegFormer checkpoint has {key!r} but not {value_key!r}")
                out[f"{prefix}attn.kv.{param}"] = torch.cat([value, state_dict[value_key]], dim=0)
                continue
            for old, new in _HF_BLOCK_NAMES:
                if tail.startswith(old):
                    out[prefix + new + tail[len(old):]] = value
                    break
            else:
                raise KeyError(f"not an HF SegFormer encoder key: {key!r}")
    return out


@register_converter("mit")
def checkpoint_filter_fn(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Turn a published MiT checkpoint into this module's layout (timm ``checkpoint_filter_fn`` style).

    Accepts the mmseg layout (``mit_b*_20220624-*.pth``; returned as is), the original NVlabs
    / smp layout (converted with :func:`convert_official_mit`), the HF transformers layout
    (:func:`convert_hf_mit`, then the NVlabs conversion) and segmentor checkpoints whose
    backbone keys carry a ``backbone.`` prefix (stripped).
    """
    if is_hf_mit_layout(state_dict):
        state_dict = convert_hf_mit(state_dict)
    state_dict = strip_prefixes(state_dict)
    if is_official_mit_layout(state_dict):
        return convert_official_mit(state_dict)
    return {k: v for k, v in state_dict.items() if not k.startswith("head.")}
