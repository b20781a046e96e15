"""UperNet + Swin-T/B/L with the FCN auxiliary head (docs/algorithm.md §6.8, §7, §10.2).

Entry points ``upernet_swin_t``, ``upernet_swin_b``, ``upernet_swin_l``: architecture arguments
:class:`UPerNetSwinArgs`, one instance per variant (:data:`UPERNET_SWIN_T` ...) with mmseg's
``upernet_swin`` configs: window 7, drop path 0.3, UPerHead C 512 with pool scales (1,2,3,6) on
all four stages, FCN auxiliary head on stage 2 (256 channels, CE x0.4).

Published ImageNet backbone weights are listed in :data:`PRETRAINED_BACKBONES` (mmseg layout as
used by the configs, or the Microsoft / timm layout, converted on load by
:func:`~ssaseg.backbones.swin.convert_swin_official`); nothing is downloaded.

Official full-model SSA-Seg checkpoints have the mmseg Swin names, which are this backbone's;
only mmseg's persistent ``relative_position_index`` buffers are dropped (key rule ``"upernet_swin"``
for :func:`ssaseg.checkpoints.load_checkpoint`).

Parameter counts at K = 150 (all parameters, auxiliary head included, as mmseg's get_flops):
linear T 59,941,862 / B 121,279,716 / L 233,759,936 (mmseg: 59.94 M, ~121 M, ~234 M). The README's
"+SSA" figures (T 61.1 M, L 234.9 M) are these plus the inference-only SSA modules
(4C^2 + 12C + KC = 1,131,520 for C 512): 61,073,382 and 234,891,456. Training adds the teacher
(4C^2 + 2C = 1,049,600): T 62,122,982, B 123,460,836, L 235,941,056.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backbones.swin import SwinTransformer
from ..checkpoints import StateDict, register_key_converter
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor
from ._common import UPerNetArgs, upernet_segmentor, with_overrides

_MMSEG_PRETRAIN = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/"

#: ImageNet Swin weights named by the SSA configs (tag "imagenet"; mmseg layout, converter "swin",
#: which also reads the Microsoft and timm layouts from a local path).
PRETRAINED_BACKBONES: dict[str, PretrainedCfg] = register_pretrained({
    f"upernet_swin_{v}.imagenet": PretrainedCfg(
        file_name=f"{name}-{h}.pth",
        url=f"{_MMSEG_PRETRAIN}{name}-{h}.pth",
        sha256=h,
        converter="swin",
        license="MIT",
        source=f"mmsegmentation (Microsoft Swin-{v.upper()} ImageNet-{data}, converted to mmseg layout); "
        "Liu et al., Swin Transformer, ICCV 2021",
    )
    for v, name, h, data in (
        ("t", "swin_tiny_patch4_window7_224_20220317", "1cdeb081", "1k"),
        ("b", "swin_base_patch4_window7_224_20220317", "e9b98025", "1k"),
        ("l", "swin_large_patch4_window7_224_22k_20220412", "aeecf2aa", "22k"),
    )
})

@dataclass(frozen=True, kw_only=True)
class UPerNetSwinArgs(UPerNetArgs):
    """Architecture arguments of UperNet + Swin: the Swin backbone's below, the head's and the
    auxiliary head's in :class:`~ssaseg.zoo._common.UPerNetArgs`.

    Attributes:
        embed_dims: channels of the first stage (doubled at every stage).
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window side.
        mlp_ratio: MLP expansion.
        qkv_bias: bias of the qkv projection.
        drop_rate: dropout after the patch embedding and projections.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        with_cp: activation checkpointing (saves memory, same results).
    """

    embed_dims: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.3
    with_cp: bool = False


UPERNET_SWIN_T = UPerNetSwinArgs(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
UPERNET_SWIN_B = UPerNetSwinArgs(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
UPERNET_SWIN_L = UPerNetSwinArgs(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))


def build_upernet_swin(
    args: UPerNetSwinArgs, num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None
) -> Segmentor:
    """UperNet + Swin from its architecture arguments; F is the UPerHead ``fpn_bottleneck``
    output at stride 4."""
    backbone = SwinTransformer(
        embed_dims=args.embed_dims, depths=args.depths, num_heads=args.num_heads,
        window_size=args.window_size, mlp_ratio=args.mlp_ratio, qkv_bias=args.qkv_bias,
        drop_rate=args.drop_rate, attn_drop_rate=args.attn_drop_rate, drop_path_rate=args.drop_path_rate,
        with_cp=args.with_cp,
    )
    return upernet_segmentor(backbone, num_classes, classifier, classifier_kwargs, args)


@register_key_converter("upernet_swin")
def _drop_mmseg_buffers(state: StateDict) -> StateDict:
    """mmseg's Swin persists ``relative_position_index``; here it is a non-persistent buffer."""
    return {k: v for k, v in state.items() if not k.endswith("relative_position_index")}


@register_model
def upernet_swin_t(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """UperNet + Swin-T with the FCN auxiliary head:
    :data:`UPERNET_SWIN_T` with ``overrides`` (:class:`UPerNetSwinArgs`)."""
    args = with_overrides("upernet_swin_t", UPERNET_SWIN_T, overrides)
    return build_upernet_swin(args, num_classes, classifier, classifier_kwargs)


@register_model
def upernet_swin_b(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """UperNet + Swin-B with the FCN auxiliary head:
    :data:`UPERNET_SWIN_B` with ``overrides`` (:class:`UPerNetSwinArgs`)."""
    args = with_overrides("upernet_swin_b", UPERNET_SWIN_B, overrides)
    return build_upernet_swin(args, num_classes, classifier, classifier_kwargs)


@register_model
def upernet_swin_l(
    num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **overrides: Any
) -> Segmentor:
    """UperNet + Swin-L with the FCN auxiliary head:
    :data:`UPERNET_SWIN_L` with ``overrides`` (:class:`UPerNetSwinArgs`)."""
    args = with_overrides("upernet_swin_l", UPERNET_SWIN_L, overrides)
    return build_upernet_swin(args, num_classes, classifier, classifier_kwargs)
