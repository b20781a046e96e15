"""AFFormer-B: AFFormer backbone + the "head-free" CLS decoder (docs/algorithm.md §7, §10.8, §11.1).

Entry point ``afformer_b`` (architecture arguments :class:`AFFormerArgs`, values
:data:`AFFORMER_B`). The decoder is one 1x1 ConvModule (GN, ReLU) on the 216-channel
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
GN, 66,048 parameters; docs/algorithm.md Q19): 2,937,906 + 66,048 = 3,003,954 (3.0 M) and
3,241,522 + 66,048 = 3,307,570 (3.3 M). ssaseg does not build that module; the ``afformer``
key converter below drops its ``decode_head.align.*`` keys from official checkpoints.

GMACs at 512x512 (:func:`ssaseg.complexity.mmcv_gmacs`, mmcv 1.x convention): 4.32 baseline,
4.37 +SSA (paper: 4.4). All AFFormer norms are plain BatchNorm / GroupNorm officially, so
mmcv counts them there too.

Published backbone weights are listed apart from the architecture in
:data:`PRETRAINED_BACKBONES`; nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones.afformer import AFFormer
from ..checkpoints import StateDict, register_key_converter
from ..decoders.afformer_head import AFFormerDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import with_overrides

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

@dataclass(frozen=True, kw_only=True)
class AFFormerArgs:
    """Architecture arguments of AFFormer (backbone + the official "head-free" CLS decoder).

    Attributes:
        embed_dims: channels of the four stages.
        num_layers: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        num_heads: attention heads per stage.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        crpe_window: convolutional relative position encoding, ``(kernel, heads)`` pairs (a
            ``{kernel: heads}`` mapping is accepted too).
        channels: C, the decoder width (``F``); a multiple of 32 with GroupNorm.
        in_index: backbone level read by the decoder.
        head_norm: decoder norm, ``"gn"`` or ``"bn"``.
        dropout: Dropout2d before the classifier's 1x1 convolution.
        align_corners: flag of the bilinear resize of the logits.
    """

    embed_dims: tuple[int, ...] = (32, 96, 176, 216)
    num_layers: tuple[int, ...] = (1, 2, 6, 2)
    mlp_ratios: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (8, 8, 8, 8)
    drop_path_rate: float = 0.0
    crpe_window: tuple[tuple[int, int], ...] = ((3, 2), (5, 3), (7, 3))
    channels: int = 256
    in_index: int = 3
    head_norm: str = "gn"
    dropout: float = 0.1
    align_corners: bool = False


AFFORMER_B = AFFormerArgs()


@register_key_converter("afformer")
def convert_afformer_official(state_dict: StateDict) -> StateDict:
    """Drop the unused ``align`` module of the official CLS / CLS_ssa head (docs/algorithm.md Q19).

    Runs after :func:`ssaseg.checkpoints.convert_official_state_dict`, which has already mapped
    ``decode_head.align.*`` to ``decoder.align.*``; every other key keeps its name.
    """
    return {k: v for k, v in state_dict.items() if not k.startswith("decoder.align.")}


def build_afformer(
    args: AFFormerArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """AFFormer from its architecture arguments; F is ``(B, channels, H/8, W/8)``."""
    # int(): a mapping read back from JSON has string keys.
    crpe_window = {int(kernel): int(heads) for kernel, heads in dict(args.crpe_window).items()}
    backbone = AFFormer(
        embed_dims=tuple(args.embed_dims),
        num_layers=tuple(args.num_layers),
        mlp_ratios=tuple(args.mlp_ratios),
        num_heads=tuple(args.num_heads),
        drop_path_rate=args.drop_path_rate,
        crpe_window=crpe_window,
    )
    decoder = AFFormerDecoder(
        in_channels=backbone.out_channels[args.in_index],
        channels=args.channels,
        in_index=args.in_index,
        norm=args.head_norm,
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=args.dropout, align_corners=args.align_corners,
    )


@register_model
def afformer_b(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """AFFormer-B (official ``afformer_base`` + ``CLS`` head): :data:`AFFORMER_B` with
    ``overrides`` (:class:`AFFormerArgs`)."""
    args = with_overrides("afformer_b", AFFORMER_B, overrides)
    return build_afformer(args, num_classes, classifier, classifier_kwargs)
