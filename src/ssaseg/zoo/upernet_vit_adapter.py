"""UperNet + ViT-Adapter-L (spec §10.3): ViT-L/16 + adapter, UPerHead C 512, FCN aux head.

Entry point ``upernet_vit_adapter_l`` with the ViT-Adapter configs' backbone arguments
(``pretrain_size`` 384, ViT-L/16, drop path 0.4, SPM width 64, 4 points, 16 deformable heads,
deform ratio 0.5, ConvFFN ratio 0.25, interactions [[0,5],[6,11],[12,17],[18,23]]); the head is
mmseg's ``upernet_r50`` UPerHead on [1024]*4 with the FCN auxiliary head on level 2 (1024 -> 256,
CE x0.4). The configs train with ``with_cp=True`` (activation checkpointing); it is an
architecture argument here (default False) because it changes memory, not results.

Pretrained ViT weights are listed in :data:`PRETRAINED_BACKBONES`; nothing is downloaded: pass
the local timm-layout file as ``backbone_weights``. Official full-model checkpoints use this
backbone's names except the ViT blocks' layer scale (``gamma1`` / ``gamma2``), which
:func:`~ssaseg.backbones.vit_adapter.convert_reference_keys` renames (registered as this
architecture's key converter).

Parameter counts at K = 150 (auxiliary head included): linear 363,802,092; the README's 364.9 M is
that plus the inference-only SSA modules (1,131,520): 364,933,612; with the training-only teacher
365,983,212. (49,152 of them are the 24 blocks' layer-scale gammas, 2 x 1024 each.)
"""
from __future__ import annotations

from typing import Any

from ..backbones.vit_adapter import ViTAdapter, convert_reference_keys
from ..checkpoints import register_key_converter
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor
from ._common import UPERNET_DEFAULTS, arch_config, upernet_segmentor

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

_DEFAULTS: dict[str, Any] = dict(
    pretrain_size=384,
    embed_dim=1024,
    depth=24,
    num_heads=16,
    mlp_ratio=4.0,
    qkv_bias=True,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.4,
    conv_inplane=64,
    n_points=4,
    deform_num_heads=16,
    deform_ratio=0.5,
    init_values=0.0,
    layer_scale_init_values=1.0,
    interaction_indexes=((0, 5), (6, 11), (12, 17), (18, 23)),
    with_cffn=True,
    cffn_ratio=0.25,
    add_vit_feature=True,
    use_extra_extractor=True,
    with_cp=False,
    **UPERNET_DEFAULTS,
    backbone_weights=None,
)
_BACKBONE_ARGS = (
    "pretrain_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "drop_rate", "attn_drop_rate",
    "drop_path_rate", "conv_inplane", "n_points", "deform_num_heads", "deform_ratio", "init_values",
    "layer_scale_init_values", "interaction_indexes", "with_cffn", "cffn_ratio", "add_vit_feature",
    "use_extra_extractor", "with_cp",
)


@register_model
def upernet_vit_adapter_l(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs
) -> Segmentor:
    """UperNet + ViT-Adapter-L (ViT-L/16, 24 blocks, 1024 wide; UPerHead C 512; FCN aux).

    Args:
        num_classes: K.
        classifier: "ssa" (default) or "linear".
        classifier_kwargs: passed to the classifier (SSA constants, loss weights).
        **kwargs: architecture overrides: every :class:`~ssaseg.backbones.vit_adapter.ViTAdapter`
            argument (pretrain_size, embed_dim, depth, num_heads, ..., interaction_indexes,
            with_cp), channels (decoder C, 512), pool_scales, head_norm, dropout (0.1), aux,
            aux_channels (256), aux_loss_weight (0.4), align_corners, backbone_weights.

    Returns a :class:`~ssaseg.segmentor.Segmentor`; F is the UPerHead ``fpn_bottleneck`` output
    (C 512) at stride 4. Inputs must be multiples of 32.
    """
    cfg = arch_config("upernet_vit_adapter_l", _DEFAULTS, kwargs)
    backbone = ViTAdapter(**{k: cfg[k] for k in _BACKBONE_ARGS})
    if cfg["backbone_weights"] is not None:
        backbone.load_pretrained(cfg["backbone_weights"])
    return upernet_segmentor(backbone, num_classes, classifier, classifier_kwargs, cfg)


register_key_converter("upernet_vit_adapter")(convert_reference_keys)
