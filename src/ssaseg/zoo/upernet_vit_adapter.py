"""UperNet + ViT-Adapter-L (docs/algorithm.md §10.3): ViT-L/16 + adapter, UPerHead C 512, FCN aux head.

Entry point ``upernet_vit_adapter_l``; architecture arguments :class:`UPerNetViTAdapterArgs`, values
:data:`UPERNET_VIT_ADAPTER_L`: the ViT-Adapter configs' backbone arguments
(``pretrain_size`` 384, ViT-L/16, drop path 0.4, SPM width 64, 4 points, 16 deformable heads,
deform ratio 0.5, ConvFFN ratio 0.25, interactions [[0,5],[6,11],[12,17],[18,23]]); the head is
mmseg's ``upernet_r50`` UPerHead on [1024]*4 with the FCN auxiliary head on level 2 (1024 -> 256,
CE x0.4). The configs train with ``with_cp=True`` (activation checkpointing); it is an
architecture argument here (default False) because it changes memory, not results.

Pretrained ViT weights (timm layout) are listed in :data:`PRETRAINED_BACKBONES`
(``backbone_weights="imagenet"``). Official full-model checkpoints use this backbone's names except
the ViT blocks' layer scale (``gamma1`` / ``gamma2``), which
:func:`~ssaseg.backbones.vit_adapter.convert_reference_keys` renames (registered as this
architecture's key converter).

Parameter counts at K = 150 (auxiliary head included): linear 363,802,092; the README's 364.9 M is
that plus the inference-only SSA modules (1,131,520): 364,933,612; with the training-only teacher
365,983,212. (49,152 of them are the 24 blocks' layer-scale gammas, 2 x 1024 each.)
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..backbones.vit_adapter import ViTAdapter, convert_reference_keys
from ..checkpoints import register_key_converter
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor
from ._common import UPerNetArgs, upernet_segmentor, with_overrides

#: The AugReg ViT-L/16 (ImageNet-21k, fine-tuned on ImageNet-1k at 384) named by the configs,
#: in timm layout as released by the ViT-Adapter project (tag "imagenet", converter "vit").
_AUGREG_L16 = "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.pth"
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    "upernet_vit_adapter_l.imagenet": PretrainedCfg(
        file_name=_AUGREG_L16,
        url=f"https://github.com/czczup/ViT-Adapter/releases/download/v0.3.1/{_AUGREG_L16}",
        converter="vit",
        license="Apache-2.0",
        source="AugReg (Steiner et al., How to train your ViT, TMLR 2022) ViT-L/16 384, converted to timm "
        "layout by the ViT-Adapter project (czczup/ViT-Adapter release v0.3.1)",
    ),
})

@dataclasses.dataclass(frozen=True, kw_only=True)
class UPerNetViTAdapterArgs(UPerNetArgs):
    """Architecture arguments of UperNet + ViT-Adapter: every
    :class:`~ssaseg.backbones.vit_adapter.ViTAdapter` argument below (same names, same meaning),
    the head's and the auxiliary head's in :class:`~ssaseg.zoo._common.UPerNetArgs`.

    Attributes:
        pretrain_size: image side of the ViT pre-training (sizes the stored position grid).
        embed_dim: ViT width.
        depth: ViT blocks.
        num_heads: ViT attention heads.
        mlp_ratio: ViT MLP expansion.
        qkv_bias: bias of the ViT qkv projection.
        drop_rate: dropout in the ViT.
        attn_drop_rate: dropout on the ViT attention weights.
        drop_path_rate: stochastic depth over the ViT blocks.
        conv_inplane: width of the spatial prior module's stem.
        n_points: sampling points per head and level of the deformable attention.
        deform_num_heads: heads of the deformable attention.
        deform_ratio: value-projection ratio of the deformable attention.
        init_values: initial layer scale of the injectors (0: the reference's).
        layer_scale_init_values: initial layer scale of the ViT blocks (timm's ``init_values``;
            the reference's 1.0); None: no layer scale.
        interaction_indexes: first and last ViT block of each of the 4 interactions.
        with_cffn: ConvFFN in the extractors.
        cffn_ratio: ConvFFN expansion.
        add_vit_feature: add the ViT tokens to the adapter's output levels.
        use_extra_extractor: two more extractors after the last interaction.
        with_cp: activation checkpointing (the configs' True; saves memory, same results).
    """

    pretrain_size: int = 384
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.4
    conv_inplane: int = 64
    n_points: int = 4
    deform_num_heads: int = 16
    deform_ratio: float = 0.5
    init_values: float = 0.0
    layer_scale_init_values: float | None = 1.0
    interaction_indexes: tuple[tuple[int, int], ...] = ((0, 5), (6, 11), (12, 17), (18, 23))
    with_cffn: bool = True
    cffn_ratio: float = 0.25
    add_vit_feature: bool = True
    use_extra_extractor: bool = True
    with_cp: bool = False


UPERNET_VIT_ADAPTER_L = UPerNetViTAdapterArgs()

_HEAD_ARGS = frozenset(f.name for f in dataclasses.fields(UPerNetArgs))


def build_upernet_vit_adapter(
    args: UPerNetViTAdapterArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """UperNet + ViT-Adapter from its architecture arguments; F is the UPerHead ``fpn_bottleneck``
    output at stride 4. Inputs must be multiples of 32."""
    backbone_args = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in _HEAD_ARGS}
    backbone = ViTAdapter(**backbone_args)
    return upernet_segmentor(backbone, num_classes, classifier, classifier_kwargs, args)


@register_model
def upernet_vit_adapter_l(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """UperNet + ViT-Adapter-L (ViT-L/16) with the FCN auxiliary head:
    :data:`UPERNET_VIT_ADAPTER_L` with ``overrides`` (:class:`UPerNetViTAdapterArgs`)."""
    args = with_overrides("upernet_vit_adapter_l", UPERNET_VIT_ADAPTER_L, overrides)
    return build_upernet_vit_adapter(args, num_classes, classifier, classifier_kwargs)


register_key_converter("upernet_vit_adapter")(convert_reference_keys)
