"""Swin Transformer backbone with mmseg's structure and parameter names (docs/algorithm.md §10.2, §11.2).

Why not timm's ``SwinTransformer`` as is: the published SSA-Seg / mmseg checkpoints were trained
with mmseg's Swin, and timm's differs in ways that change the features at the paper's input
sizes (128 = 512/4 tokens is not a multiple of the window 7):

* mmseg pads the token map to window multiples **before** the cyclic shift and builds the shift
  mask on the padded map; timm shifts first and pads afterwards;
* mmseg always shifts odd blocks and never shrinks the window; timm shrinks the window (and drops
  the shift) where a stage's resolution at construction time is not larger than the window;
* mmseg layer-normalises every returned stage (``norm{i}``); timm has one final norm.

So the block logic is written here (mmseg order), while the attention itself is timm's
``WindowAttention`` (relative position bias, fused SDPA), held as ``attn.w_msa`` so that the
parameter names are mmseg's: ``patch_embed.projection``, ``stages.{i}.blocks.{j}.attn.w_msa.*``,
``ffn.layers.0.0`` / ``ffn.layers.1``, ``stages.{i}.downsample.{norm,reduction}`` (mmseg's
``nn.Unfold`` channel order) and ``norm{i}``. The mmseg pretrained Swin files named in the configs
and the official SSA-Seg checkpoints therefore load by prefix only; :func:`convert_swin_official`
maps the Microsoft (and timm >= 0.9) layout onto these names.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath
from timm.models.swin_transformer import WindowAttention, window_partition, window_reverse
from torch import Tensor, nn

from ..layers import init_weights_
from ..weights import register_converter, strip_prefixes

StateDict = dict[str, Tensor]

# Kernel-position order of the Microsoft/timm PatchMerging concat, (h, w): (0,0),(1,0),(0,1),(1,1);
# mmseg's nn.Unfold order is (0,0),(0,1),(1,0),(1,1). The permutation is its own inverse.
_MERGE_PERM = [0, 2, 1, 3]


def shifted_window_mask(height: int, width: int, window: int, shift: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """mmseg's SW-MSA attention mask for a padded map of ``height x width`` tokens.

    The map is split into 3 x 3 regions per axis ``[0, n-window), [n-window, n-shift), [n-shift, n)``;
    tokens of different regions in one window must not attend to each other (bias -100).
    Returns ``(num_windows, window**2, window**2)``.
    """

    def region(n: int) -> Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - window).long() + (idx >= n - shift).long()

    ids = region(height)[:, None] * 3 + region(width)[None, :]
    windows = window_partition(ids[None, :, :, None], (window, window)).reshape(-1, window * window)
    return (windows[:, None, :] != windows[:, :, None]).to(dtype) * -100.0


class SwinPatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv + LayerNorm: ``(B, 3, H, W) -> (B, H/p, W/p, C)``.

    Inputs that are not multiples of the patch are zero-padded bottom/right (mmseg "corner").
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.projection(x).permute(0, 2, 3, 1))


class ShiftWindowMSA(nn.Module):
    """(Shifted-)window self-attention in mmseg's order: pad to window multiples, roll, attend.

    ``forward(x (B, H, W, C)) -> (B, H, W, C)`` (DropPath applied, residual not added).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size} for window {window_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.w_msa = WindowAttention(
            dim, num_heads, window_size=window_size, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop
        )
        self.drop = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        _, height, width, channels = x.shape
        ws, shift = self.window_size, self.shift_size
        x = F.pad(x, (0, 0, 0, (-width) % ws, 0, (-height) % ws))
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, shift, x.device, x.dtype)
        windows = window_partition(x, (ws, ws)).reshape(-1, ws * ws, channels)
        windows = self.w_msa(windows, mask=mask)
        x = window_reverse(windows.reshape(-1, ws, ws, channels), (ws, ws), hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return self.drop(x[:, :height, :width].contiguous())


class SwinFFN(nn.Module):
    """mmcv ``FFN``: ``layers`` = [Linear-GELU-Dropout], Linear, Dropout; then DropPath."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop)), nn.Linear(hidden, dim), nn.Dropout(drop)
        )
        self.dropout_layer = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout_layer(self.layers(x))


class SwinBlock(nn.Module):
    """Pre-norm block: ``x + SW-MSA(LN(x))`` then ``x + FFN(LN(x))`` on ``(B, H, W, C)``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        shift: bool,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowMSA(
            dim, num_heads, window_size, window_size // 2 if shift else 0, qkv_bias, attn_drop, drop, drop_path
        )
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = SwinFFN(dim, int(dim * mlp_ratio), drop, drop_path)

    def _inner(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner, x, use_reentrant=False)
        return self._inner(x)


class PatchMerging(nn.Module):
    """2x2 token merge in mmseg's ``nn.Unfold`` channel order (index ``c*4 + kh*2 + kw``),
    LayerNorm(4C), Linear(4C -> 2C, no bias): ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)``."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """``depth`` blocks (even ones W-MSA, odd ones SW-MSA), then an optional PatchMerging.

    ``forward(x) -> (stage output before downsampling, input of the next stage)``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_paths: Sequence[float],
        downsample: bool,
        with_cp: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, mlp_ratio, window_size, j % 2 == 1, qkv_bias, drop, attn_drop, drop_paths[j], with_cp)
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim, 2 * dim) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


class SwinTransformer(nn.Module):
    """Swin Transformer (mmseg ``SwinTransformer`` semantics; no absolute position embedding).

    Args:
        embed_dims: width of stage 0 (96 T, 128 B, 192 L); stage i has ``embed_dims * 2**i``.
        depths / num_heads: per stage.
        window_size, mlp_ratio, patch_size, qkv_bias: as in the paper (7, 4, 4, True).
        drop_rate, attn_drop_rate: dropout after the position step / on attention weights.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (0.3 in the configs).
        out_indices: stages returned, each layer-normalised by ``norm{i}``.
        with_cp: activation checkpointing of every block (saves memory, costs a second forward).

    ``forward(images (B, 3, H, W)) -> [(B, embed_dims * 2**i, H / (4 * 2**i), W / (4 * 2**i))]``
    for i in ``out_indices``; any H, W works (maps are padded to window multiples internally).
    """

    def __init__(
        self,
        embed_dims: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        patch_size: int = 4,
        in_channels: int = 3,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if any(not 0 <= i < len(depths) for i in out_indices):
            raise ValueError(f"out_indices {list(out_indices)} out of range for {len(depths)} stages")
        self.in_channels = in_channels
        self.out_indices = list(out_indices)
        self.patch_embed = SwinPatchEmbed(in_channels, embed_dims, patch_size)
        self.drop_after_pos = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        widths = [embed_dims * 2**i for i in range(len(depths))]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.stages.append(
                SwinStage(
                    widths[i], depth, num_heads[i], mlp_ratio, window_size, qkv_bias, drop_rate, attn_drop_rate,
                    dpr[start:start + depth], downsample=i < len(depths) - 1, with_cp=with_cp,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(widths[i]))
        self.out_channels = [widths[i] for i in self.out_indices]
        self.strides = [patch_size * 2**i for i in self.out_indices]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # mmseg's from-scratch init (used before the pretrained weights are loaded): Linear and
        # LayerNorm only; the convs keep PyTorch's default init.
        init_weights_(m, convs=())

    def forward(self, images: Tensor) -> list[Tensor]:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"SwinTransformer expects images (B, {self.in_channels}, H, W), got {tuple(images.shape)}")
        x = self.drop_after_pos(self.patch_embed(images))
        outs = []
        for i, stage in enumerate(self.stages):
            out, x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return outs


def _merge_to_unfold(w: Tensor) -> Tensor:
    """PatchMerging weight/norm param in Microsoft order -> mmseg Unfold order (last dim 4C)."""
    lead, four_c = w.shape[:-1], w.shape[-1]
    w = w.reshape(*lead, 4, four_c // 4)[..., _MERGE_PERM, :]
    return w.transpose(-1, -2).reshape(*lead, four_c)


# The out-norms ``norm{i}`` exist only in mmseg's Swin: Microsoft / timm files leave them at their
# initial values (mmseg also starts them from scratch).
@register_converter("swin", keep_initial=r"norm\d+\.(weight|bias)")
def checkpoint_filter_fn(state: StateDict) -> StateDict:
    """A published Swin checkpoint (mmseg, Microsoft or timm layout; ``backbone.`` / ``module.``
    prefixes stripped) -> this module's names. mmseg files keep their names, minus the
    ``relative_position_index`` / ``attn_mask`` buffers (recomputed here)."""
    state = strip_prefixes(state)
    if any(k.startswith("layers.") for k in state):
        return convert_swin_official(state)
    return {k: v for k, v in state.items() if not k.endswith(("relative_position_index", "attn_mask"))}


def convert_swin_official(state: StateDict) -> StateDict:
    """Microsoft Swin (or timm >= 0.9) classification state dict -> ssaseg/mmseg Swin names.

    Microsoft: ``layers.{i}.downsample`` ends stage i; timm moves it to the start of stage i+1
    (detected by the absence of ``layers.0.downsample``). The classification ``head`` and final
    ``norm`` and the non-persistent buffers are dropped; PatchMerging parameters are permuted
    into the Unfold order.
    """
    timm_layout = not any(k.startswith("layers.0.downsample.") for k in state)
    out: StateDict = {}
    for key, value in state.items():
        if key.endswith(("relative_position_index", "attn_mask")) or key.startswith(("head.", "norm.")):
            continue
        if timm_layout:
            key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        if ".downsample." in key:
            value = _merge_to_unfold(value)
        key = key.replace("patch_embed.proj.", "patch_embed.projection.")
        key = re.sub(r"^layers\.", "stages.", key)
        key = key.replace(".attn.", ".attn.w_msa.")
        key = key.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
        out[key] = value
    return out
