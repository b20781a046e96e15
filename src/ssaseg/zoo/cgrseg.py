"""CGRSeg-B / CGRSeg-L: EfficientFormerV2-S2 / -L + the CGRSeg decoder (docs/algorithm.md §7, §10.9, §11.1).

Entry points ``cgrseg_b`` and ``cgrseg_l`` (architecture arguments :class:`CGRSegArgs`, values
:data:`CGRSEG_B`, :data:`CGRSEG_L`). The two classifiers are not interchangeable heads on
the same decoder output, because the official CGRSeg baseline classifies in two stages:

* ``classifier="ssa"`` (the paper's ``CGRSeg_ssa``): the decoder ends with ``linear_fuse`` and the
  SSA classifier classifies ``F``; the baseline's second stage is dropped (docs/algorithm.md Q20).
* ``classifier="linear"`` (the official ``CGRSeg`` baseline): the decoder stops before
  ``linear_fuse`` and :class:`~ssaseg.classifiers.cgr.CGRClassifier` runs the official two-stage
  classifier (coarse logits -> class contexts -> dynamic-prototype gate ``lgc`` -> the same
  ``conv_seg``). Its loss, as the official head's, is the cross entropy of the final logits
  only. ``classifier_kwargs`` go to CGRClassifier (``dropout`` excepted, an entry-point kwarg).

Parameters at K = 150 (:func:`ssaseg.count_parameters`, asserted in ``tests/test_zoo_cgrseg.py``)
and GMACs at 512x512 (:func:`ssaseg.complexity.mmcv_gmacs`, mmcv 1.x convention):

==========================  ==========================  ==========================
model                        CGRSeg-B                    CGRSeg-L
==========================  ==========================  ==========================
baseline (two-stage)         19,114,871  /  7.79 G       35,677,703  / 15.09 G
+SSA, inference (deploy)     19,286,134  /  7.68 G       35,848,966  / 14.99 G
+SSA, training               19,548,790                  36,111,622
paper, +SSA (SSA README)     19.3 M      /  7.6 G        35.8 M      / 14.8 G
paper, baseline (CGRSeg)     18.1 M      /  7.6 G        35.7 M      / 14.9 G
==========================  ==========================  ==========================

* The +SSA parameter counts match the SSA README exactly. SSA changes the head by ``-lgc
  (132,353) + 4C^2 + 12C + KC (303,616) = +171,263`` at C = 256, K = 150, as docs/algorithm.md §15.4 item 4
  predicts; but the premise there (a ~18 M baseline) does not hold for the released config:
  with ``next_repeat=6`` (the CGRSeg release's own config and SSA's) the CGRSeg-B baseline has
  19.11 M parameters. The CGRSeg README's 18.1 M is what ``next_repeat=5`` gives (18,109,975
  counted): its table and its released config differ by one 496-channel RCM (~1.0 M).
  CGRSeg-L is consistent.
* GMACs: the official models run their backbone, SIM blocks and ``linear_fuse`` with
  ``SyncBatchNorm``, which mmcv's exact-type table does not count; ssaseg builds plain
  BatchNorm (converted to SyncBN by the trainer under DDP only), counted at 2 MACs per element.
  Excluding those BN layers gives 7.57 G (B) and 14.80 G (L), the paper's +SSA figures.
* The backbone counts include the ``attention_biases_seg`` tables sized for 512-px inputs (S2:
  24,576, L: 32,768 parameters).

Official CGRSeg and SSA-CGRSeg segmentor checkpoints map with the generic rules of
:mod:`ssaseg.checkpoints` plus the ``cgrseg`` key converter below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones.efficientformer_v2 import EFFICIENTFORMER_V2_ARCHS, EfficientFormerV2
from ..checkpoints import StateDict, register_key_converter
from ..classifiers import CGRClassifier, check_classifier
from ..decoders.cgr import CGRDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import with_overrides

#: Published ImageNet-1k EfficientFormerV2 weights used by the CGRSeg configs (tag "imagenet"; snap
#: layout ``{"model": ...}``, converter "efficientformer_v2", which also reads timm's
#: ``efficientformerv2_*`` layout). Published on Google Drive only: no direct download URL.
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    f"cgrseg_{v}.imagenet": PretrainedCfg(
        file_name=f"eformer_{size.lower()}_450.pth",
        converter="efficientformer_v2",
        license="Apache-2.0",
        source=f"snap-research/EfficientFormer README (EfficientFormerV2-{size} ImageNet-1k, 450 epochs; Li et "
        f"al., ICCV 2023); used by the CGRSeg-{v.upper()} configs",
    )
    for v, size in (("b", "S2"), ("l", "L"))
})


@dataclass(frozen=True, kw_only=True)
class CGRSegArgs:
    """Architecture arguments of CGRSeg (EfficientFormerV2 backbone + CGRSeg decoder).

    Attributes:
        widths: channels of the four backbone stages.
        depths: backbone blocks per stage.
        expansion_ratios: MLP expansion of every backbone block, one tuple per stage.
        vit_num: attention blocks at the end of stages 3 and 4.
        drop_path_rate: backbone stochastic depth.
        layer_scale_init: initial backbone layer scale.
        resolution: input side the backbone's attention-bias tables are sized for.
        channels: C, the decoder width (``F``).
        in_index: backbone levels read by the decoder.
        is_dw: depthwise ``linear_fuse``.
        next_repeat: RCMs in the decoder's ``trans`` stack.
        mr: MLP ratio of every RCM.
        dw_size: band kernel of the per-level RCMs.
        neck_size: band kernel of the ``trans`` RCMs.
        square_kernel_size: local depthwise kernel of the RCA.
        ratio: RCA group ratio of the per-level RCMs.
        dropout: Dropout2d before the classifier's 1x1 convolution.
        align_corners: flag of every bilinear resize (classifier and logits).
    """

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    expansion_ratios: tuple[tuple[int, ...], ...]
    vit_num: int
    drop_path_rate: float
    layer_scale_init: float = 1e-5
    resolution: int = 512
    channels: int = 256
    in_index: tuple[int, ...] = (1, 2, 3)
    is_dw: bool = True
    next_repeat: int = 6
    mr: float = 2.0
    dw_size: int = 11
    neck_size: int = 11
    square_kernel_size: int = 3
    ratio: int = 1
    dropout: float = 0.1
    align_corners: bool = False


# Backbones EfficientFormerV2-S2 / -L and the decoder values of docs/algorithm.md §10.9.
CGRSEG_B = CGRSegArgs(**EFFICIENTFORMER_V2_ARCHS["S2"], dw_size=11, neck_size=11, next_repeat=6)
CGRSEG_L = CGRSegArgs(**EFFICIENTFORMER_V2_ARCHS["L"], dw_size=9, neck_size=9, next_repeat=5)

_BACKBONE_BUFFERS = (".attention_biases", ".attention_bias_idxs", ".attention_bias_idxs_seg")


@register_key_converter("cgrseg")
def convert_cgrseg_official(state_dict: StateDict) -> StateDict:
    """Official CGRSeg / CGRSeg_ssa segmentor checkpoints -> ssaseg keys (after the generic
    :func:`ssaseg.checkpoints.convert_official_state_dict` mapping).

    * backbone: the legacy ``attention_biases`` / ``attention_bias_idxs`` buffers and the
      ``attention_bias_idxs_seg`` index tables are dropped (never used / recomputed);
    * baseline checkpoints (they have ``lgc``): ``linear_fuse`` and ``lgc`` belong to
      :class:`~ssaseg.classifiers.cgr.CGRClassifier`, so ``decoder.{linear_fuse,lgc}.*`` move to
      ``classifier.*``. SSA checkpoints keep ``decoder.linear_fuse.*``.
    """
    baseline = any(k.startswith("decoder.lgc.") for k in state_dict)
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith("backbone.") and key.endswith(_BACKBONE_BUFFERS):
            continue
        if baseline and key.startswith(("decoder.linear_fuse.", "decoder.lgc.")):
            key = "classifier." + key[len("decoder."):]
        out[key] = value
    return out


def build_cgrseg(
    args: CGRSegArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """CGRSeg from its architecture arguments; F is ``(B, C, H/8, W/8)``. ``classifier="linear"``
    builds the official two-stage baseline (:class:`~ssaseg.classifiers.cgr.CGRClassifier`, which
    gets ``classifier_kwargs``), every other kind classifies the decoder's ``linear_fuse`` output."""
    check_classifier(classifier)
    backbone = EfficientFormerV2(
        args.widths,
        args.depths,
        args.expansion_ratios,
        args.vit_num,
        drop_path_rate=args.drop_path_rate,
        layer_scale_init=args.layer_scale_init,
        resolution=args.resolution,
    )
    in_index = list(args.in_index)
    two_stage = classifier == "linear"
    decoder = CGRDecoder(
        in_channels=[backbone.out_channels[i] for i in in_index],
        channels=args.channels,
        in_index=in_index,
        is_dw=args.is_dw,
        next_repeat=args.next_repeat,
        mr=args.mr,
        dw_size=args.dw_size,
        neck_size=args.neck_size,
        square_kernel_size=args.square_kernel_size,
        ratio=args.ratio,
        linear_fuse=not two_stage,
    )
    if two_stage:
        head = CGRClassifier(
            args.channels, num_classes, dropout=args.dropout, is_dw=args.is_dw,
            align_corners=args.align_corners, **(classifier_kwargs or {}),
        )
        return Segmentor(backbone, decoder, head, align_corners=args.align_corners)
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=args.dropout, align_corners=args.align_corners,
    )


@register_model
def cgrseg_b(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """CGRSeg-B (EfficientFormerV2-S2 + CGRSeg head):
    :data:`CGRSEG_B` with ``overrides`` (:class:`CGRSegArgs`)."""
    args = with_overrides("cgrseg_b", CGRSEG_B, overrides)
    return build_cgrseg(args, num_classes, classifier, classifier_kwargs)


@register_model
def cgrseg_l(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """CGRSeg-L (EfficientFormerV2-L + CGRSeg head):
    :data:`CGRSEG_L` with ``overrides`` (:class:`CGRSegArgs`)."""
    args = with_overrides("cgrseg_l", CGRSEG_L, overrides)
    return build_cgrseg(args, num_classes, classifier, classifier_kwargs)
