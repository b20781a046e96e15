"""OCRNet with an HRNetV2 backbone: a two-stage cascade (docs/algorithm.md §6.8, §8, §10.5).

Stage 0 is an FCN head (one 1x1 ConvModule on the resize-concat of the four HRNet branches,
no dropout, CE x0.4) held in ``aux_heads[0]``; its logits feed the OCR decoder (stage 1), whose
feature map goes to the SSA or linear classifier (no dropout: mmseg ``dropout_ratio=-1``).
Stage 0 stays in the model after ``deploy()`` because inference needs it. Entry points
``ocrnet_hrnet_w48`` and ``ocrnet_hrnet_w18``: architecture arguments :class:`OCRNetArgs`, values
:data:`OCRNET_HRNET_W48`, :data:`OCRNET_HRNET_W18` (mmseg ``ocrnet_hr48`` / ``ocrnet_hr18``).

Official checkpoints name the stages ``decode_head.0`` / ``decode_head.1``;
:func:`ssaseg.checkpoints.convert_official_state_dict` maps them onto ``aux_heads.0`` /
``decoder`` + ``classifier`` by prefix (backbone and decoder keep mmseg's names).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones.hrnet import HRNet
from ..classifiers import LinearClassifier
from ..decoders.fcn import FCNDecoder
from ..decoders.ocr import OCRDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import AuxHead, Segmentor, build_segmentor
from ._common import with_overrides

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


@dataclass(frozen=True, kw_only=True)
class OCRNetArgs:
    """Architecture arguments of OCRNet + HRNetV2.

    Attributes:
        hrnet: the HRNet configuration, a key of ``timm.models.hrnet.cfg_cls`` (e.g.
            ``"hrnet_w48"``; ``"hrnet_w18_small"`` for a small test model).
        channels: C, the OCR decoder's width (``F``).
        ocr_channels: width of the object-context attention (keys / queries).
        stage0_loss_weight: weight of the stage-0 (FCN) cross entropy.
        norm: norm of both stages' ConvModules, ``"bn"`` or ``"gn"``.
    """

    hrnet: str
    channels: int = 512
    ocr_channels: int = 256
    stage0_loss_weight: float = 0.4
    norm: str = "bn"


OCRNET_HRNET_W48 = OCRNetArgs(hrnet="hrnet_w48")
OCRNET_HRNET_W18 = OCRNetArgs(hrnet="hrnet_w18")


def build_ocrnet(
    args: OCRNetArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """OCRNet from its architecture arguments; F is the OCR decoder's output at 1/4. Stage 0 (one
    1x1 ConvModule of ``sum(in_channels)`` channels, 720 for W48; linear classifier, no dropout)
    is ``aux_heads[0]``; the classifier has no dropout (mmseg ``dropout_ratio=-1``)."""
    backbone = HRNet(args.hrnet)
    in_channels = list(backbone.out_channels)
    in_index = list(range(len(in_channels)))
    stage0 = AuxHead(
        FCNDecoder(in_channels, sum(in_channels), in_index=in_index, num_convs=1, kernel_size=1, norm=args.norm),
        LinearClassifier(sum(in_channels), num_classes, dropout=0.0, loss_weight=args.stage0_loss_weight),
    )
    decoder = OCRDecoder(in_channels, args.channels, args.ocr_channels, in_index=in_index, norm=args.norm)
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs, aux_heads=(stage0,), dropout=0.0
    )


@register_model
def ocrnet_hrnet_w48(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """OCRNet + HRNetV2-W48 (mmseg ``ocrnet_hr48``):
    :data:`OCRNET_HRNET_W48` with ``overrides`` (:class:`OCRNetArgs`)."""
    args = with_overrides("ocrnet_hrnet_w48", OCRNET_HRNET_W48, overrides)
    return build_ocrnet(args, num_classes, classifier, classifier_kwargs)


@register_model
def ocrnet_hrnet_w18(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """OCRNet + HRNetV2-W18 (mmseg ``ocrnet_hr18``):
    :data:`OCRNET_HRNET_W18` with ``overrides`` (:class:`OCRNetArgs`)."""
    args = with_overrides("ocrnet_hrnet_w18", OCRNET_HRNET_W18, overrides)
    return build_ocrnet(args, num_classes, classifier, classifier_kwargs)
