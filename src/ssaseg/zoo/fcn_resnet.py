"""FCN-D8 + ResNet-101-V1c (the poster's comparison row; mmseg ``fcn_r101-d8``).

Entry point ``fcn_r101_d8`` (architecture arguments :class:`FCNResNetArgs`, values
:data:`FCN_R101_D8`): ResNetV1c-101 with strides (1,2,1,1), dilations (1,1,2,4) and
contract_dilation (output stride 8); FCNHead on stage 3 (2048 -> 512, two 3x3 convs, input
concatenated and fused by a third), dropout 0.1; FCN auxiliary head on stage 2 (1024 -> 256,
CE x0.4).

The ImageNet weights of mmseg's config (``open-mmlab://resnet101_v1c``, mmseg/mmcls ``stem.*``
layout; the timm layout loads too) are listed in :data:`PRETRAINED_BACKBONES`. mmseg full-model
checkpoints name the stem ``backbone.stem.*``; the key rule ``"fcn_resnet"`` maps it for
:func:`ssaseg.checkpoints.load_checkpoint`.

Parameter counts at K = 150 (auxiliary head included): linear 68,590,732; with the inference-only
SSA modules 69,722,252; with the training-only teacher 70,771,852.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones.resnet import ResNetV1c, convert_resnet_mmseg
from ..checkpoints import StateDict, register_key_converter
from ..decoders.fcn import FCNDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor, fcn_aux_head
from ._common import FCNAuxArgs, with_overrides

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

@dataclass(frozen=True, kw_only=True)
class FCNResNetArgs(FCNAuxArgs):
    """Architecture arguments of FCN + dilated ResNetV1c (the auxiliary head's in
    :class:`~ssaseg.zoo._common.FCNAuxArgs`).

    Attributes:
        depth: ResNet depth, 50, 101 or 152.
        output_stride: 8 (dilated stages 3-4, mmseg ``-d8``), 16 or 32.
        drop_path_rate: stochastic depth over the residual blocks.
        channels: C, width of the FCNHead convolutions and of ``F``.
        num_convs: 3x3 ConvModules of the FCNHead.
        concat_input: concatenate the head's input to its output and fuse with one more ConvModule.
        head_norm: FCNHead norm, ``"bn"`` or ``"gn"``.
        dropout: Dropout2d before the classifier's 1x1 convolution.
        align_corners: flag of every bilinear resize (decoder and logits).
    """

    depth: int = 101
    output_stride: int = 8
    drop_path_rate: float = 0.0
    channels: int = 512
    num_convs: int = 2
    concat_input: bool = True
    head_norm: str = "bn"
    dropout: float = 0.1
    align_corners: bool = False


FCN_R101_D8 = FCNResNetArgs()


def build_fcn_resnet(
    args: FCNResNetArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """FCN + dilated ResNetV1c from its architecture arguments; F is the FCNHead's ``conv_cat``
    output at the backbone's output stride."""
    backbone = ResNetV1c(args.depth, args.output_stride, args.drop_path_rate)
    decoder = FCNDecoder(
        backbone.out_channels[3], args.channels, in_index=3, num_convs=args.num_convs, kernel_size=3,
        concat_input=args.concat_input, norm=args.head_norm, align_corners=args.align_corners,
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        aux_heads=[fcn_aux_head(backbone.out_channels[2], num_classes, 2, args.aux_channels, args.aux_loss_weight)]
        if args.aux
        else [],
        dropout=args.dropout, align_corners=args.align_corners,
    )


@register_model
def fcn_r101_d8(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """FCN-D8 + ResNet-101-V1c (mmseg ``fcn_r101-d8``): :data:`FCN_R101_D8` with ``overrides``
    (:class:`FCNResNetArgs`)."""
    args = with_overrides("fcn_r101_d8", FCN_R101_D8, overrides)
    return build_fcn_resnet(args, num_classes, classifier, classifier_kwargs)


@register_key_converter("fcn_resnet")
def _mmseg_stem_names(state: StateDict) -> StateDict:
    """``backbone.stem.*`` (mmseg ResNetV1c) -> ``backbone.conv1.*`` / ``backbone.bn1.*`` (timm)."""
    backbone = convert_resnet_mmseg({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    return {**{k: v for k, v in state.items() if not k.startswith("backbone.")}, **{f"backbone.{k}": v for k, v in backbone.items()}}
