"""SeaFormer-B / -L with the LightHead decoder (docs/algorithm.md §7, §10.7, §11.1).

F is the LightHead's depthwise ``linear_fuse`` output at 1/8 (160 channels for B, 192 for L);
the classifier applies Dropout2d(0.1) before its 1x1 ``conv_seg``. No auxiliary head. Entry points
``seaformer_b`` and ``seaformer_l``: architecture arguments :class:`SeaFormerArgs`, values
:data:`SEAFORMER_B`, :data:`SEAFORMER_L` (the backbone's are ``SEAFORMER_CONFIGS``, the head's
the SSA configs').
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backbones.seaformer import SEAFORMER_CONFIGS, SeaFormer
from ..decoders.light_head import LightHead
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import with_overrides

#: Published ImageNet weights (tag "imagenet"), kept apart from the architecture. The original
#: module names plus a ``linear.*`` classifier; converter "seaformer" prefers ``state_dict_ema``,
#: as the original loader. Published on Google Drive / Baidu only: no direct download URL.
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    f"seaformer_{v}.imagenet": PretrainedCfg(
        file_name=f"SeaFormer_{v.upper()}_cls_{acc}.pth",
        converter="seaformer",
        license="not stated by the publisher (check the source before redistributing)",
        source=f"fudan-zvg/SeaFormer, seaformer-cls README (SeaFormer-{v.upper()} ImageNet-1k, top-1 {acc}; "
        "Google Drive / Baidu links); Wan et al., SeaFormer, ICLR 2023",
    )
    for v, acc in (("b", "76.4"), ("l", "79.9"))
})

@dataclass(frozen=True, kw_only=True)
class SeaFormerArgs:
    """Architecture arguments of SeaFormer + LightHead.

    Attributes:
        cfgs: MobileNetV2-style blocks ``[kernel, expansion, out_channels, stride]`` of each
            convolutional stage.
        channels: channels after the stem and after each convolutional stage.
        emb_dims: width of each SeaFormer attention stage.
        key_dims: key width per head of each attention stage.
        depths: attention blocks per attention stage.
        num_heads: attention heads.
        attn_ratio: value / key width ratio of the attention.
        mlp_ratios: MLP expansion of each attention stage.
        drop_path_rate: stochastic depth over the attention blocks.
        head_channels: C, the LightHead width (``F``).
        head_embed_dims: widths of the LightHead's fusion blocks, finest last (the last is
            ``head_channels``).
        norm: LightHead norm, ``"bn"`` or ``"gn"``.
        dropout: Dropout2d before the classifier's 1x1 convolution.
    """

    cfgs: Sequence[Sequence[Sequence[int]]]
    channels: Sequence[int]
    emb_dims: Sequence[int]
    key_dims: Sequence[int]
    depths: Sequence[int]
    num_heads: int = 8
    attn_ratio: float = 2.0
    mlp_ratios: Sequence[float] = (2, 4)
    drop_path_rate: float = 0.1
    head_channels: int
    head_embed_dims: tuple[int, ...]
    norm: str = "bn"
    dropout: float = 0.1


SEAFORMER_B = SeaFormerArgs(**SEAFORMER_CONFIGS["seaformer_b"], head_channels=160, head_embed_dims=(128, 160))
SEAFORMER_L = SeaFormerArgs(**SEAFORMER_CONFIGS["seaformer_l"], head_channels=192, head_embed_dims=(128, 160, 192))

_BACKBONE_ARGS = (
    "cfgs", "channels", "emb_dims", "key_dims", "depths", "num_heads", "attn_ratio", "mlp_ratios", "drop_path_rate"
)


def build_seaformer(
    args: SeaFormerArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """SeaFormer + LightHead from its architecture arguments; F is ``(B, head_channels, H/8, W/8)``."""
    backbone = SeaFormer(**{name: getattr(args, name) for name in _BACKBONE_ARGS})
    decoder = LightHead(
        list(backbone.out_channels), args.head_channels, list(args.head_embed_dims), is_dw=True, norm=args.norm
    )
    return build_segmentor(backbone, decoder, num_classes, classifier, classifier_kwargs, dropout=args.dropout)


@register_model
def seaformer_b(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SeaFormer-B + LightHead (C 160 at 1/8; levels 64 @1/8, 192 @1/32, 256 @1/64):
    :data:`SEAFORMER_B` with ``overrides`` (:class:`SeaFormerArgs`)."""
    args = with_overrides("seaformer_b", SEAFORMER_B, overrides)
    return build_seaformer(args, num_classes, classifier, classifier_kwargs)


@register_model
def seaformer_l(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SeaFormer-L + LightHead (C 192 at 1/8; levels 128 @1/8, 192 @1/16, 256 @1/32, 320 @1/64):
    :data:`SEAFORMER_L` with ``overrides`` (:class:`SeaFormerArgs`)."""
    args = with_overrides("seaformer_l", SEAFORMER_L, overrides)
    return build_seaformer(args, num_classes, classifier, classifier_kwargs)
