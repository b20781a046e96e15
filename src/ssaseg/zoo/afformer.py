"""AFFormer-B: AFFormer backbone + the "head-free" CLS decoder (spec §7, §10.8, §11.1).

Entry point ``afformer_b``. The decoder is one 1x1 ConvModule (GN, ReLU) on the 216-channel
stride-8 level; F has 256 channels at 1/8 and goes to the SSA (default) or linear classifier.

Parameters at K = 150, counted with :func:`ssaseg.count_parameters` (``tests/test_zoo_afformer.py``):

=====================================  ===========  ==================
model                                   ssaseg       paper (README)
=====================================  ===========  ==================
baseline (``classifier="linear"``)      2,937,906    3.0 M
+SSA, inference (``deploy()``)          3,241,522    3.3 M
+SSA, training (teacher included)       3,504,178    --
=====================================  ===========  ==================

The paper figures include the official head's never-called ``align`` ConvModule (256 -> 256 +
GN, 66,048 parameters; spec §14 Q19): 2,937,906 + 66,048 = 3,003,954 (3.0 M) and
3,241,522 + 66,048 = 3,307,570 (3.3 M). ssaseg does not build that module; the ``afformer``
key converter below drops its ``decode_head.align.*`` keys from official checkpoints.

GMACs at 512x512 (:func:`ssaseg.complexity.mmcv_gmacs`, mmcv 1.x convention): 4.32 baseline,
4.37 +SSA (paper: 4.4). All AFFormer norms are plain BatchNorm / GroupNorm officially, so
mmcv counts them there too.

Published backbone weights are listed apart from the architecture in
:data:`PRETRAINED_BACKBONES`; nothing is downloaded: pass the local file as ``backbone_weights``.
"""
from __future__ import annotations

from typing import Any

from ..backbones.afformer import AFFormer
from ..checkpoints import StateDict, register_key_converter
from ..decoders.afformer_head import AFFormerDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import arch_config

#: ImageNet-1k AFFormer weights used by the SSA-Seg configs (tag "imagenet"; this backbone's
#: layout, converter "afformer"). Published through a README link only: no direct download URL.
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    "afformer_b.imagenet": PretrainedCfg(
        file_name="AFFormer_base_ImageNet1k_new.pth",
        converter="afformer",
        license="not stated by the publisher (check the source before redistributing)",
        source="dongbo811/AFFormer README (ImageNet-1k pretrained AFFormer-base); Dong et al., AFFormer, AAAI 2023",
    ),
})

_DEFAULTS: dict[str, Any] = dict(
    embed_dims=(32, 96, 176, 216),
    num_layers=(1, 2, 6, 2),
    mlp_ratios=(2, 2, 2, 2),
    num_heads=(8, 8, 8, 8),
    drop_path_rate=0.0,
    crpe_window={3: 2, 5: 3, 7: 3},
    channels=256,
    in_index=3,
    head_norm="gn",
    dropout=0.1,
    align_corners=False,
    backbone_weights=None,
)


@register_key_converter("afformer")
def convert_afformer_official(state_dict: StateDict) -> StateDict:
    """Drop the unused ``align`` module of the official CLS / CLS_ssa head (spec §14 Q19).

    Runs after :func:`ssaseg.checkpoints.convert_official_state_dict`, which has already mapped
    ``decode_head.align.*`` to ``decoder.align.*``; every other key keeps its name.
    """
    return {k: v for k, v in state_dict.items() if not k.startswith("decoder.align.")}


@register_model
def afformer_b(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    """AFFormer-B (official ``afformer_base`` + ``CLS`` head; 3.0 M baseline, 3.3 M +SSA in the paper).

    Args:
        num_classes: K.
        classifier: "ssa" (default) or "linear".
        classifier_kwargs: passed to the classifier (SSA constants, loss weights).
        **kwargs: architecture overrides (defaults: the official config): embed_dims (4 ints),
            num_layers (4 ints), mlp_ratios (4 ints), num_heads (4 ints), drop_path_rate,
            crpe_window ({kernel: heads}), channels (decoder width C, a multiple of 32 for GN),
            in_index (backbone level read by the decoder), head_norm ("gn" | "bn"), dropout
            (before the classifier, 0.1), align_corners, backbone_weights (path to published
            AFFormer weights, loaded strictly; see PRETRAINED_BACKBONES).

    Returns a :class:`~ssaseg.segmentor.Segmentor`; F is ``(B, channels, H/8, W/8)``.
    """
    cfg = arch_config("afformer_b", _DEFAULTS, kwargs)
    backbone = AFFormer(
        embed_dims=tuple(cfg["embed_dims"]),
        num_layers=tuple(cfg["num_layers"]),
        mlp_ratios=tuple(cfg["mlp_ratios"]),
        num_heads=tuple(cfg["num_heads"]),
        drop_path_rate=cfg["drop_path_rate"],
        crpe_window=cfg["crpe_window"],
    )
    if cfg["backbone_weights"] is not None:
        backbone.load_pretrained(cfg["backbone_weights"])
    decoder = AFFormerDecoder(
        in_channels=backbone.out_channels[cfg["in_index"]],
        channels=cfg["channels"],
        in_index=cfg["in_index"],
        norm=cfg["head_norm"],
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=cfg["dropout"], align_corners=cfg["align_corners"],
    )
