"""SegNeXt: MSCAN backbone + LightHamHead decoder (docs/algorithm.md §7, §10.6, §11.1).

Entry points ``segnext_t``, ``segnext_s``, ``segnext_b``, ``segnext_l``: the architecture arguments
are :class:`SegNeXtArgs`, one instance per variant (:data:`SEGNEXT_T` ...) with mmseg's / the SSA
reference's config values. Published backbone weights are listed apart from the architecture in
:data:`PRETRAINED_BACKBONES` (timm's ``default_cfgs`` idea): ``backbone_weights="imagenet"``
downloads them (:mod:`ssaseg.pretrained`).

Official full-model SSA-SegNeXt checkpoints need no architecture-specific key rule: their
``backbone.*`` and ``decode_head.{squeeze,hamburger,align}.*`` names are this module's, and
:func:`ssaseg.checkpoints.convert_official_state_dict` moves ``conv_seg`` and the SSA modules to
``classifier.*``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones.mscan import MSCAN
from ..decoders.ham import LightHamDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import with_overrides

_MMSEG_PRETRAIN = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/"

#: Published ImageNet-1k MSCAN weights per variant (tag "imagenet"; this backbone's layout,
#: converter "mscan"), registered with the models.
_MSCAN_FILES = {"t": "119e8c9f", "s": "f33ccdf2", "b": "3ab7d230", "l": "cef260d4"}
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    f"segnext_{v}.imagenet": PretrainedCfg(
        file_name=f"mscan_{v}_20230227-{h}.pth",
        url=f"{_MMSEG_PRETRAIN}mscan_{v}_20230227-{h}.pth",
        sha256=h,
        converter="mscan",
        license="Apache-2.0",
        source=f"mmsegmentation (SegNeXt MSCAN-{v.upper()}, ImageNet-1k); Guo et al., SegNeXt, NeurIPS 2022"
        + {"t": "; used by the SSA configs",
           "l": "; the SSA configs name the SegNeXt release's mscan_l.pth, same layout"}.get(v, ""),
    )
    for v, h in _MSCAN_FILES.items()
})

@dataclass(frozen=True, kw_only=True)
class SegNeXtArgs:
    """Architecture arguments of SegNeXt (MSCAN backbone + LightHamHead).

    Attributes:
        embed_dims: channels of the four MSCAN stages.
        depths: MSCAN blocks per stage.
        mlp_ratios: MLP expansion per stage.
        drop_rate: dropout inside the MLPs.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        norm: backbone norm, ``"bn"`` (SyncBN under DDP) or ``"gn"``.
        channels: C, the decoder width (``F``); a multiple of 32 with GroupNorm.
        ham_channels: width inside the Hamburger; None: ``channels``.
        md_s: NMF groups (``S``).
        md_r: NMF rank (``R``).
        train_steps: NMF iterations in training.
        eval_steps: NMF iterations in evaluation.
        rand_init: fresh random NMF bases on every training forward (False: fixed bases).
        nmf_random_eval: fresh random NMF bases in evaluation too, as the reference (default
            False: fixed seeded evaluation bases, so inference is deterministic).
        head_norm: decoder norm, ``"gn"`` or ``"bn"``.
        dropout: Dropout2d before the classifier's 1x1 convolution.
        align_corners: flag of every bilinear resize (decoder and logits).
    """

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    norm: str = "bn"
    channels: int = 256
    ham_channels: int | None = None
    md_s: int = 1
    md_r: int = 16
    train_steps: int = 6
    eval_steps: int = 7
    rand_init: bool = True
    nmf_random_eval: bool = False
    head_norm: str = "gn"
    dropout: float = 0.1
    align_corners: bool = False


SEGNEXT_T = SegNeXtArgs(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2))
SEGNEXT_S = SegNeXtArgs(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2))
SEGNEXT_B = SegNeXtArgs(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), channels=512)
SEGNEXT_L = SegNeXtArgs(
    embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), drop_path_rate=0.3, channels=1024, md_r=64
)


def build_segnext(
    args: SegNeXtArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """SegNeXt from its architecture arguments. F is the decoder's ``align`` output at stride 8;
    set ``model.decoder.nmf.generator`` to seed the random NMF bases (training, or ``nmf_random_eval``)."""
    embed_dims = list(args.embed_dims)
    backbone = MSCAN(
        embed_dims=embed_dims,
        depths=args.depths,
        mlp_ratios=args.mlp_ratios,
        drop_rate=args.drop_rate,
        drop_path_rate=args.drop_path_rate,
        norm=args.norm,
    )
    decoder = LightHamDecoder(
        in_channels=embed_dims[1:],
        channels=args.channels,
        ham_channels=args.ham_channels or args.channels,
        in_index=(1, 2, 3),
        md_s=args.md_s,
        md_r=args.md_r,
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
        rand_init=args.rand_init,
        norm=args.head_norm,
        align_corners=args.align_corners,
        random_eval=args.nmf_random_eval,
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=args.dropout, align_corners=args.align_corners,
    )


@register_model
def segnext_t(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegNeXt-T (MSCAN-T + LightHamHead):
    :data:`SEGNEXT_T` with ``overrides`` (:class:`SegNeXtArgs`)."""
    args = with_overrides("segnext_t", SEGNEXT_T, overrides)
    return build_segnext(args, num_classes, classifier, classifier_kwargs)


@register_model
def segnext_s(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegNeXt-S (MSCAN-S + LightHamHead):
    :data:`SEGNEXT_S` with ``overrides`` (:class:`SegNeXtArgs`)."""
    args = with_overrides("segnext_s", SEGNEXT_S, overrides)
    return build_segnext(args, num_classes, classifier, classifier_kwargs)


@register_model
def segnext_b(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegNeXt-B (MSCAN-B + LightHamHead):
    :data:`SEGNEXT_B` with ``overrides`` (:class:`SegNeXtArgs`)."""
    args = with_overrides("segnext_b", SEGNEXT_B, overrides)
    return build_segnext(args, num_classes, classifier, classifier_kwargs)


@register_model
def segnext_l(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """SegNeXt-L (MSCAN-L + LightHamHead):
    :data:`SEGNEXT_L` with ``overrides`` (:class:`SegNeXtArgs`)."""
    args = with_overrides("segnext_l", SEGNEXT_L, overrides)
    return build_segnext(args, num_classes, classifier, classifier_kwargs)
