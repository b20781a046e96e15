"""Small building blocks shared by backbones and decoders.

``ConvModule`` keeps mmcv's attribute names (``conv``, ``bn``/``gn``, ``activate``) so that mmseg
checkpoints map onto ssaseg modules without renaming.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "hswish": nn.Hardswish}


def build_norm(kind: str, channels: int, num_groups: int = 32) -> tuple[str, nn.Module]:
    """Return (mmcv attribute name, module) for ``kind`` in {"bn", "gn", "ln"}.

    ``"bn"`` is plain BatchNorm2d; the trainer converts it to SyncBatchNorm under DDP when the
    config asks for it (mmseg's SyncBN configs fall back to BN in one process).
    """
    if kind == "bn":
        return "bn", nn.BatchNorm2d(channels)
    if kind == "gn":
        return "gn", nn.GroupNorm(num_groups, channels)
    if kind == "ln":
        return "ln", nn.GroupNorm(1, channels)
    raise ValueError(f"unknown norm {kind!r}; expected 'bn', 'gn' or 'ln'")


class ConvModule(nn.Sequential):
    """Conv2d -> norm -> activation, with mmcv's names and its bias rule (no bias before a norm).

    ``forward(x (B, Cin, H, W)) -> (B, Cout, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm: str | None = "bn",
        act: str | None = "relu",
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=norm is None
        )
        if norm is not None:
            name, module = build_norm(norm, out_channels, num_groups)
            self.add_module(name, module)
        if act is not None:
            if act not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {act!r}; expected one of {sorted(_ACTIVATIONS)}")
            self.activate = _ACTIVATIONS[act](inplace=True) if act != "gelu" else nn.GELU()


def tokens_to_map(x: Tensor, hw: tuple[int, int] | list[int]) -> Tensor:
    """Token sequence ``x (B, H*W, C)`` -> feature map ``(B, C, H, W)`` for ``hw = (H, W)``."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], hw[0], hw[1])


def map_to_tokens(x: Tensor) -> Tensor:
    """Feature map ``x (B, C, H, W)`` -> token sequence ``(B, H*W, C)`` (row-major positions)."""
    return x.flatten(2).transpose(1, 2)


def resize(x: Tensor, size: tuple[int, int] | list[int], align_corners: bool = False) -> Tensor:
    """Bilinear resize of ``x (B, C, H, W)`` to ``size``; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def resize_concat(features: Sequence[Tensor], align_corners: bool = False) -> Tensor:
    """Resize every map ``(B, C_i, H_i, W_i)`` to the first one's size (bilinear) and concatenate
    them: ``(B, sum C_i, H_0, W_0)`` (mmseg's ``input_transform="resize_concat"``)."""
    size = features[0].shape[-2:]
    return torch.cat([resize(f, size, align_corners) for f in features], dim=1)


def init_weights_(
    m: nn.Module,
    *,
    linear: bool = True,
    norms: tuple[type[nn.Module], ...] = (nn.LayerNorm,),
    convs: tuple[type[nn.Module], ...] = (nn.Conv2d,),
) -> None:
    """From-scratch init of one module with the rules mmseg's / timm's backbones share.

    * ``nn.Linear`` (when ``linear``): weight ~ trunc-normal(std 0.02), bias 0;
    * instances of ``norms``: weight 1, bias 0;
    * instances of ``convs``: weight ~ N(0, sqrt(2 / fan_out)), ``fan_out = k_h * k_w * out / groups``
      (integer division, as the references), bias 0.

    Any other module is left as it is. The caller picks the traversal (``model.apply`` is
    post-order, ``model.modules()`` pre-order); it fixes the order of the random draws, so each
    backbone keeps the one it had.
    """
    if linear and isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, norms):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, convs):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
