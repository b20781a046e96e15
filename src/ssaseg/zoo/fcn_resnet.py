"""FCN-D8 + ResNet-101-V1c (the poster's comparison row; mmseg ``fcn_r101-d8``).

Entry point ``fcn_r101_d8``: ResNetV1c-101 with strides (1,2,1,1), dilations (1,1,2,4) and
contract_dilation (output stride 8); FCNHead on stage 3 (2048 -> 512, two 3x3 convs, input
concatenated and fused by a third), dropout 0.1; FCN auxiliary head on stage 2 (1024 -> 256,
CE x0.4).

The ImageNet weights of mmseg's config (``open-mmlab://resnet101_v1c``) are listed in
:data:`PRETRAINED_BACKBONES`; pass the local file as ``backbone_weights`` (mmseg/mmcls ``stem.*``
layout or timm layout). mmseg full-model checkpoints name the stem ``backbone.stem.*``; the key
rule ``"fcn_resnet"`` maps it for :func:`ssaseg.checkpoints.load_checkpoint`.

Parameter counts at K = 150 (auxiliary head included): linear 68,590,732; with the inference-only
SSA modules 69,722,252; with the training-only teacher 70,771,852.
"""
from __future__ import annotations

from typing import Any

from ..backbones.resnet import ResNetV1c, convert_resnet_mmseg
from ..checkpoints import StateDict, register_key_converter
from ..decoders.fcn import FCNDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import FCN_AUX_DEFAULTS, arch_config, fcn_aux_heads

#: Published ImageNet backbone weights (tag "imagenet"; mmcls ``stem.*`` layout, converter
#: "resnet_v1c", which also reads timm's ``resnet101c`` layout from a local path).
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    "fcn_r101_d8.imagenet": PretrainedCfg(
        file_name="resnet101_v1c-e67eebb6.pth",
        url="https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
        sha256="e67eebb6",
        converter="resnet_v1c",
        license="Apache-2.0",
        source="OpenMMLab open-mmlab://resnet101_v1c (ImageNet-1k ResNetV1c-101, mmcls layout); He et al., "
        "Bag of Tricks, CVPR 2019 (ResNet-C stem)",
    ),
})

_DEFAULTS: dict[str, Any] = dict(
    depth=101,
    output_stride=8,
    drop_path_rate=0.0,
    channels=512,
    num_convs=2,
    concat_input=True,
    head_norm="bn",
    dropout=0.1,
    **FCN_AUX_DEFAULTS,
    align_corners=False,
    backbone_weights=None,
)


@register_model
def fcn_r101_d8(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    """FCN + dilated ResNet-101-V1c, output stride 8 (mmseg ``fcn_r101-d8``).

    Args:
        num_classes: K.
        classifier: "ssa" (default) or "linear".
        classifier_kwargs: passed to the classifier (SSA constants, loss weights).
        **kwargs: architecture overrides: depth (50 | 101 | 152), output_stride (8),
            drop_path_rate (0), channels (decoder C, 512), num_convs (2), concat_input (True),
            head_norm ("bn"), dropout (0.1), aux (FCN auxiliary head on stage 2, True),
            aux_channels (256), aux_loss_weight (0.4), align_corners, backbone_weights.

    Returns a :class:`~ssaseg.segmentor.Segmentor`; F is the FCNHead's ``conv_cat`` output
    (C 512) at stride 8.
    """
    cfg = arch_config("fcn_r101_d8", _DEFAULTS, kwargs)
    backbone = ResNetV1c(cfg["depth"], cfg["output_stride"], cfg["drop_path_rate"])
    if cfg["backbone_weights"] is not None:
        backbone.load_pretrained(cfg["backbone_weights"])
    decoder = FCNDecoder(
        backbone.out_channels[3], cfg["channels"], in_index=3, num_convs=cfg["num_convs"], kernel_size=3,
        concat_input=cfg["concat_input"], norm=cfg["head_norm"], align_corners=cfg["align_corners"],
    )
    aux = fcn_aux_heads(backbone, num_classes, cfg)
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs, aux_heads=aux,
        dropout=cfg["dropout"], align_corners=cfg["align_corners"],
    )


@register_key_converter("fcn_resnet")
def _mmseg_stem_names(state: StateDict) -> StateDict:
    """``backbone.stem.*`` (mmseg ResNetV1c) -> ``backbone.conv1.*`` / ``backbone.bn1.*`` (timm)."""
    backbone = convert_resnet_mmseg({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    return {**{k: v for k, v in state.items() if not k.startswith("backbone.")}, **{f"backbone.{k}": v for k, v in backbone.items()}}
