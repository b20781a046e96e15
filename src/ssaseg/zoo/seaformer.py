"""SeaFormer-B / -L with the LightHead decoder (spec §7, §10.7, §11.1).

F is the LightHead's depthwise ``linear_fuse`` output at 1/8 (160 channels for B, 192 for L);
the classifier applies Dropout2d(0.1) before its 1x1 ``conv_seg``. No auxiliary head.
"""
from __future__ import annotations

import os

from ..backbones.seaformer import SEAFORMER_CONFIGS, SeaFormer
from ..decoders.light_head import LightHead
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor

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

#: LightHead settings of the SSA configs: (channels, embed_dims).
_HEADS: dict[str, tuple[int, list[int]]] = {
    "seaformer_b": (160, [128, 160]),
    "seaformer_l": (192, [128, 160, 192]),
}


def _seaformer(
    variant: str,
    num_classes: int,
    classifier: str,
    classifier_kwargs: dict | None,
    drop_path_rate: float = 0.1,
    dropout: float = 0.1,
    norm: str = "bn",
    backbone_weights: str | os.PathLike | None = None,
) -> Segmentor:
    backbone = SeaFormer(**SEAFORMER_CONFIGS[variant], drop_path_rate=drop_path_rate)
    if backbone_weights is not None:
        backbone.load_pretrained(backbone_weights)
    channels, embed_dims = _HEADS[variant]
    decoder = LightHead(list(backbone.out_channels), channels, embed_dims, is_dw=True, norm=norm)
    return build_segmentor(backbone, decoder, num_classes, classifier, classifier_kwargs, dropout=dropout)


@register_model
def seaformer_b(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs
) -> Segmentor:
    """SeaFormer-B + LightHead (C = 160 at 1/8; levels 64 @1/8, 192 @1/32, 256 @1/64).

    kwargs: ``drop_path_rate`` (0.1), ``dropout`` (0.1), ``norm``, ``backbone_weights`` (path to
    ``SeaFormer_B_cls_76.4.pth``, see :data:`PRETRAINED_BACKBONES`).
    """
    return _seaformer("seaformer_b", num_classes, classifier, classifier_kwargs, **kwargs)


@register_model
def seaformer_l(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs
) -> Segmentor:
    """SeaFormer-L + LightHead (C = 192 at 1/8; levels 128 @1/8, 192 @1/16, 256 @1/32, 320 @1/64).

    kwargs as :func:`seaformer_b` (weights ``SeaFormer_L_cls_79.9.pth``).
    """
    return _seaformer("seaformer_l", num_classes, classifier, classifier_kwargs, **kwargs)
