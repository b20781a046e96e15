"""SegFormer: MiT backbone + All-MLP decoder (docs/algorithm.md §7, §10.4).

Entry points ``segformer_b0`` ... ``segformer_b5``: architecture arguments :class:`SegFormerArgs`,
one instance per variant (:data:`SEGFORMER_B0` ...) with mmseg's configs: decoder channels 256 for
every size (NVlabs used 768 for B2-B5; the paper's 82.0 M / 52.5 GMAC for B5 are mmseg's 256),
drop path 0.1. Published backbone weights are listed in :data:`PRETRAINED_BACKBONES` (mmseg
``mit_b*_20220624-*.pth`` or the original NVlabs ``mit_b*.pth``, converted on load); nothing is
downloaded.

Official full-model SSA-SegFormer checkpoints are in mmseg layout (``backbone.layers.*``,
``decode_head.{convs,fusion_conv}.*``), which is this module's, so they need no
architecture-specific key rule beyond :func:`ssaseg.checkpoints.convert_official_state_dict`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones.mit import MixVisionTransformer
from ..decoders.segformer import SegformerDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import with_overrides

_MMSEG_PRETRAIN = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/"
_HASHES = {"b0": "7e0fe6dd", "b1": "02e5a6a1", "b2": "66e8bf70", "b3": "13b1141c", "b4": "d588d980", "b5": "658746d9"}

#: Published ImageNet-1k MiT weights per variant (tag "imagenet"), registered with the models.
#: The files are mmseg's conversion of NVlabs' ``mit_b*.pth``; converter "mit" also reads the
#: NVlabs / smp and HF transformers (``nvidia/mit-b*``) layouts from a local path.
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    f"segformer_{b}.imagenet": PretrainedCfg(
        file_name=f"mit_{b}_20220624-{h}.pth",
        url=f"{_MMSEG_PRETRAIN}mit_{b}_20220624-{h}.pth",
        sha256=h,
        converter="mit",
        license="NVIDIA Source Code License for SegFormer (non-commercial)",
        source=f"mmsegmentation (NVlabs MiT-{b.upper()} ImageNet-1k, converted to mmseg layout); Xie et al., "
        "SegFormer, NeurIPS 2021" + ("; used by the SSA configs" if b == "b5" else ""),
    )
    for b, h in _HASHES.items()
})

@dataclass(frozen=True, kw_only=True)
class SegFormerArgs:
    """Architecture arguments of SegFormer (MiT backbone + All-MLP decoder).

    Attributes:
        embed_dims: MiT base width; stage i has ``embed_dims * num_heads[i]`` channels.
        depths: blocks per stage (mmseg's ``num_layers``).
        num_heads: attention heads per stage.
        sr_ratios: spatial-reduction ratio of the attention keys/values per stage.
        patch_sizes: overlapping patch-embedding kernel per stage.
        mlp_ratio: Mix-FFN expansion.
        qkv_bias: bias of the attention projections.
        drop_rate: dropout after the attention / MLP projections.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        channels: C, the decoder width (``F``).
        head_norm: decoder norm, ``"bn"`` or ``"gn"``.
        dropout: Dropout2d before the classifier's 1x1 convolution.
        align_corners: flag of every bilinear resize (decoder and logits).
    """

    embed_dims: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    mlp_ratio: float = 4
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    channels: int = 256
    head_norm: str = "bn"
    dropout: float = 0.1
    align_corners: bool = False


# mmseg's segformer_mit-b*.py: base width and blocks per stage.
SEGFORMER_B0 = SegFormerArgs(embed_dims=32, depths=(2, 2, 2, 2))
SEGFORMER_B1 = SegFormerArgs(embed_dims=64, depths=(2, 2, 2, 2))
SEGFORMER_B2 = SegFormerArgs(embed_dims=64, depths=(3, 4, 6, 3))
SEGFORMER_B3 = SegFormerArgs(embed_dims=64, depths=(3, 4, 18, 3))
SEGFORMER_B4 = SegFormerArgs(embed_dims=64, depths=(3, 8, 27, 3))
SEGFORMER_B5 = SegFormerArgs(embed_dims=64, depths=(3, 6, 40, 3))


def build_segformer(
    args: SegFormerArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """SegFormer from its architecture arguments; F is the decoder's ``fusion_conv`` output at stride 4."""
    backbone = MixVisionTransformer(
        embed_dims=args.embed_dims,
        num_layers=args.depths,
        num_heads=args.num_heads,
        patch_sizes=args.patch_sizes,
        sr_ratios=args.sr_ratios,
        mlp_ratio=args.mlp_ratio,
        qkv_bias=args.qkv_bias,
        drop_rate=args.drop_rate,
        attn_drop_rate=args.attn_drop_rate,
        drop_path_rate=args.drop_path_rate,
    )
    decoder = SegformerDecoder(
        backbone.out_channels, args.channels, in_index=(0, 1, 2, 3), norm=args.head_norm,
        align_corners=args.align_corners,
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=args.dropout, align_corners=args.align_corners,
    )


@register_model
def segformer_b0(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegFormer-B0 (MiT-B0 + All-MLP decoder):
    :data:`SEGFORMER_B0` with ``overrides`` (:class:`SegFormerArgs`)."""
    args = with_overrides("segformer_b0", SEGFORMER_B0, overrides)
    return build_segformer(args, num_classes, classifier, classifier_kwargs)


@register_model
def segformer_b1(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegFormer-B1 (MiT-B1 + All-MLP decoder):
    :data:`SEGFORMER_B1` with ``overrides`` (:class:`SegFormerArgs`)."""
    args = with_overrides("segformer_b1", SEGFORMER_B1, overrides)
    return build_segformer(args, num_classes, classifier, classifier_kwargs)


@register_model
def segformer_b2(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegFormer-B2 (MiT-B2 + All-MLP decoder):
    :data:`SEGFORMER_B2` with ``overrides`` (:class:`SegFormerArgs`)."""
    args = with_overrides("segformer_b2", SEGFORMER_B2, overrides)
    return build_segformer(args, num_classes, classifier, classifier_kwargs)


@register_model
def segformer_b3(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegFormer-B3 (MiT-B3 + All-MLP decoder):
    :data:`SEGFORMER_B3` with ``overrides`` (:class:`SegFormerArgs`)."""
    args = with_overrides("segformer_b3", SEGFORMER_B3, overrides)
    return build_segformer(args, num_classes, classifier, classifier_kwargs)


@register_model
def segformer_b4(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegFormer-B4 (MiT-B4 + All-MLP decoder):
    :data:`SEGFORMER_B4` with ``overrides`` (:class:`SegFormerArgs`)."""
    args = with_overrides("segformer_b4", SEGFORMER_B4, overrides)
    return build_segformer(args, num_classes, classifier, classifier_kwargs)


@register_model
def segformer_b5(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegFormer-B5 (MiT-B5 + All-MLP decoder):
    :data:`SEGFORMER_B5` with ``overrides`` (:class:`SegFormerArgs`)."""
    args = with_overrides("segformer_b5", SEGFORMER_B5, overrides)
    return build_segformer(args, num_classes, classifier, classifier_kwargs)
