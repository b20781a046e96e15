"""CGRSeg-B / CGRSeg-L: EfficientFormerV2-S2 / -L + the CGRSeg decoder (spec §7, §10.9, §11.1).

Entry points ``cgrseg_b`` and ``cgrseg_l``. The two classifiers are not interchangeable heads on
the same decoder output, because the official CGRSeg baseline classifies in two stages:

* ``classifier="ssa"`` (the paper's ``CGRSeg_ssa``): the decoder ends with ``linear_fuse`` and the
  SSA classifier classifies ``F``; the baseline's second stage is dropped (spec §14 Q20).
* ``classifier="linear"`` (the official ``CGRSeg`` baseline): the decoder stops before
  ``linear_fuse`` and :class:`~ssaseg.decoders.cgr.CGRClassifier` runs the official two-stage
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
  (132,353) + 4C^2 + 12C + KC (303,616) = +171,263`` at C = 256, K = 150, as spec §15.4 item 4
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

from typing import Any

from ..backbones.efficientformer_v2 import EFFICIENTFORMER_V2_ARCHS, EfficientFormerV2
from ..checkpoints import StateDict, register_key_converter
from ..decoders.cgr import CGRClassifier, CGRDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import arch_config

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

#: Backbone arch and decoder values per variant (spec §10.9 table).
_ARCHS: dict[str, dict[str, Any]] = {
    "cgrseg_b": dict(backbone="S2", dw_size=11, neck_size=11, next_repeat=6),
    "cgrseg_l": dict(backbone="L", dw_size=9, neck_size=9, next_repeat=5),
}

_DEFAULTS: dict[str, Any] = dict(
    drop_path_rate=None,  # None: the backbone's own (S2 0.02, L 0.1)
    layer_scale_init=1e-5,
    resolution=512,
    channels=256,
    in_index=(1, 2, 3),
    is_dw=True,
    mr=2.0,
    square_kernel_size=3,
    ratio=1,
    dropout=0.1,
    align_corners=False,
    backbone_weights=None,
)

_BACKBONE_BUFFERS = (".attention_biases", ".attention_bias_idxs", ".attention_bias_idxs_seg")


@register_key_converter("cgrseg")
def convert_cgrseg_official(state_dict: StateDict) -> StateDict:
    """Official CGRSeg / CGRSeg_ssa segmentor checkpoints -> ssaseg keys (after the generic
    :func:`ssaseg.checkpoints.convert_official_state_dict` mapping).

    * backbone: the legacy ``attention_biases`` / ``attention_bias_idxs`` buffers and the
      ``attention_bias_idxs_seg`` index tables are dropped (never used / recomputed);
    * baseline checkpoints (they have ``lgc``): ``linear_fuse`` and ``lgc`` belong to
      :class:`~ssaseg.decoders.cgr.CGRClassifier`, so ``decoder.{linear_fuse,lgc}.*`` move to
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


def _build(variant: str, num_classes: int, classifier: str, classifier_kwargs: dict | None, overrides: dict) -> Segmentor:
    # "backbone" names the EfficientFormerV2 table entry of the variant; it is not a kwarg.
    cfg = arch_config(variant, _DEFAULTS, overrides, _ARCHS[variant], fixed=("backbone",))
    arch = EFFICIENTFORMER_V2_ARCHS[cfg["backbone"]]
    backbone = EfficientFormerV2(
        arch["widths"],
        arch["depths"],
        arch["expansion_ratios"],
        arch["vit_num"],
        drop_path_rate=arch["drop_path_rate"] if cfg["drop_path_rate"] is None else cfg["drop_path_rate"],
        layer_scale_init=cfg["layer_scale_init"],
        resolution=cfg["resolution"],
    )
    if cfg["backbone_weights"] is not None:
        backbone.load_pretrained(cfg["backbone_weights"])
    in_index = list(cfg["in_index"])
    two_stage = classifier == "linear"
    decoder = CGRDecoder(
        in_channels=[backbone.out_channels[i] for i in in_index],
        channels=cfg["channels"],
        in_index=in_index,
        is_dw=cfg["is_dw"],
        next_repeat=cfg["next_repeat"],
        mr=cfg["mr"],
        dw_size=cfg["dw_size"],
        neck_size=cfg["neck_size"],
        square_kernel_size=cfg["square_kernel_size"],
        ratio=cfg["ratio"],
        linear_fuse=not two_stage,
    )
    if two_stage:
        head = CGRClassifier(
            cfg["channels"], num_classes, dropout=cfg["dropout"], is_dw=cfg["is_dw"],
            align_corners=cfg["align_corners"], **(classifier_kwargs or {}),
        )
        return Segmentor(backbone, decoder, head, align_corners=cfg["align_corners"])
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=cfg["dropout"], align_corners=cfg["align_corners"],
    )


_DOC = """CGRSeg-{size} (EfficientFormerV2-{bb} + CGRSeg head: dw_size {dw}, neck_size {dw}, next_repeat {rep}).

    Args:
        num_classes: K.
        classifier: "ssa" (default; decoder + SSA) or "linear" (the official two-stage
            CGRSeg classifier, :class:`~ssaseg.decoders.cgr.CGRClassifier`).
        classifier_kwargs: passed to the classifier.
        **kwargs: architecture overrides (defaults: the official config): drop_path_rate
            (backbone; default S2 0.02 / L 0.1), layer_scale_init (1e-5), resolution (input side
            the attention-bias tables are sized for, 512), channels (C, 256), in_index
            ((1, 2, 3)), is_dw, mr (RCM MLP ratio, 2), dw_size, neck_size, next_repeat,
            square_kernel_size (3), ratio (1), dropout (0.1), align_corners, backbone_weights
            (snap-research ``eformer_*_450.pth`` path, loaded strictly after conversion; see
            PRETRAINED_BACKBONES).

    Returns a :class:`~ssaseg.segmentor.Segmentor`; F is ``(B, C, H/8, W/8)``.
    """


@register_model
def cgrseg_b(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("cgrseg_b", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def cgrseg_l(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("cgrseg_l", num_classes, classifier, classifier_kwargs, kwargs)


cgrseg_b.__doc__ = _DOC.format(size="B", bb="S2", dw=11, rep=6)
cgrseg_l.__doc__ = _DOC.format(size="L", bb="L", dw=9, rep=5)
