"""OCRNet with an HRNetV2 backbone: a two-stage cascade (spec §6.8, §8, §10.5).

Stage 0 is an FCN head (one 1x1 ConvModule on the resize-concat of the four HRNet branches,
no dropout, CE x0.4) held in ``aux_heads[0]``; its logits feed the OCR decoder (stage 1), whose
feature map goes to the SSA or linear classifier (no dropout: mmseg ``dropout_ratio=-1``).
Stage 0 stays in the model after ``deploy()`` because inference needs it.

Official checkpoints name the stages ``decode_head.0`` / ``decode_head.1``;
:func:`ssaseg.checkpoints.convert_official_state_dict` maps them onto ``aux_heads.0`` /
``decoder`` + ``classifier`` by prefix (backbone and decoder keep mmseg's names).
"""
from __future__ import annotations

import os

from ..backbones.hrnet import HRNet
from ..classifiers import LinearClassifier
from ..decoders.fcn import FCNDecoder
from ..decoders.ocr import OCRDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import AuxHead, Segmentor, build_segmentor

#: Published ImageNet weights of the backbones (tag "imagenet"), registered with the models and kept
#: apart from the architecture arguments. Official HRNet-Image-Classification layout, converter
#: "hrnet" (which drops the ImageNet head; timm's ``hrnet_w*`` files load too).
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    f"ocrnet_hrnet_{w}.imagenet": PretrainedCfg(
        file_name=f"hrnetv2_{w}-{h}.pth",
        url=f"https://download.openmmlab.com/pretrain/third_party/hrnetv2_{w}-{h}.pth",
        sha256=h,
        converter="hrnet",
        license="MIT",
        source=f"HRNet-Image-Classification HRNetV2-{w.upper()} ImageNet-1k (Wang et al., TPAMI 2020), "
        f"mirrored by OpenMMLab as open-mmlab://msra/hrnetv2_{w}",
    )
    for w, h in (("w48", "d2186c55"), ("w18", "00eb2006"))
})


def _ocrnet(
    arch: str,
    num_classes: int,
    classifier: str,
    classifier_kwargs: dict | None,
    channels: int = 512,
    ocr_channels: int = 256,
    stage0_loss_weight: float = 0.4,
    norm: str = "bn",
    backbone_weights: str | os.PathLike | None = None,
) -> Segmentor:
    backbone = HRNet(arch)
    if backbone_weights is not None:
        backbone.load_pretrained(backbone_weights)
    in_channels = list(backbone.out_channels)
    in_index = list(range(len(in_channels)))
    # Stage 0 (mmseg FCNHead): channels = sum(in_channels) (720 for W48), kernel 1, no dropout.
    stage0 = AuxHead(
        FCNDecoder(in_channels, sum(in_channels), in_index=in_index, num_convs=1, kernel_size=1, norm=norm),
        LinearClassifier(sum(in_channels), num_classes, dropout=0.0, loss_weight=stage0_loss_weight),
    )
    decoder = OCRDecoder(in_channels, channels, ocr_channels, in_index=in_index, norm=norm)
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs, aux_heads=(stage0,), dropout=0.0
    )


@register_model
def ocrnet_hrnet_w48(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs
) -> Segmentor:
    """OCRNet + HRNetV2-W48 (mmseg ``ocrnet_hr48``): stage 0 720 ch, OCR 512 / 256 ch, F at 1/4.

    kwargs: ``channels``, ``ocr_channels``, ``stage0_loss_weight``, ``norm``, and
    ``backbone_weights`` (path to ``hrnetv2_w48-d2186c55.pth``, see :data:`PRETRAINED_BACKBONES`).
    """
    return _ocrnet("hrnet_w48", num_classes, classifier, classifier_kwargs, **kwargs)


@register_model
def ocrnet_hrnet_w18(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs
) -> Segmentor:
    """OCRNet + HRNetV2-W18 (mmseg ``ocrnet_hr18``): stage 0 270 ch, OCR 512 / 256 ch, F at 1/4.

    kwargs as :func:`ocrnet_hrnet_w48` (weights ``hrnetv2_w18-00eb2006.pth``).
    """
    return _ocrnet("hrnet_w18", num_classes, classifier, classifier_kwargs, **kwargs)
