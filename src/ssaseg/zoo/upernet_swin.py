"""UperNet + Swin-T/B/L with the FCN auxiliary head (spec §6.8, §7, §10.2).

Entry points ``upernet_swin_t``, ``upernet_swin_b``, ``upernet_swin_l``; the defaults are mmseg's
``upernet_swin`` configs: window 7, drop path 0.3, UPerHead C 512 with pool scales (1,2,3,6) on
all four stages, FCN auxiliary head on stage 2 (256 channels, CE x0.4).

Published ImageNet backbone weights are listed in :data:`PRETRAINED_BACKBONES`; nothing is
downloaded: pass the local file as ``backbone_weights`` (mmseg layout as used by the configs, or
the Microsoft / timm layout, converted on load by :func:`~ssaseg.backbones.swin.convert_swin_official`).

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

from typing import Any

from ..backbones.swin import SwinTransformer
from ..checkpoints import StateDict, register_key_converter
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor
from ._common import UPERNET_DEFAULTS, arch_config, upernet_segmentor

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

_ARCHS: dict[str, dict[str, Any]] = {
    "upernet_swin_t": dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "upernet_swin_b": dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "upernet_swin_l": dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}

_DEFAULTS: dict[str, Any] = dict(
    window_size=7,
    mlp_ratio=4.0,
    qkv_bias=True,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.3,
    with_cp=False,
    **UPERNET_DEFAULTS,
    backbone_weights=None,
)


def _build(variant: str, num_classes: int, classifier: str, classifier_kwargs: dict | None, overrides: dict) -> Segmentor:
    cfg = arch_config(variant, _DEFAULTS, overrides, _ARCHS[variant])
    backbone = SwinTransformer(
        embed_dims=cfg["embed_dims"], depths=cfg["depths"], num_heads=cfg["num_heads"],
        window_size=cfg["window_size"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=cfg["qkv_bias"],
        drop_rate=cfg["drop_rate"], attn_drop_rate=cfg["attn_drop_rate"], drop_path_rate=cfg["drop_path_rate"],
        with_cp=cfg["with_cp"],
    )
    if cfg["backbone_weights"] is not None:
        backbone.load_pretrained(cfg["backbone_weights"])
    return upernet_segmentor(backbone, num_classes, classifier, classifier_kwargs, cfg)


@register_key_converter("upernet_swin")
def _drop_mmseg_buffers(state: StateDict) -> StateDict:
    """mmseg's Swin persists ``relative_position_index``; here it is a non-persistent buffer."""
    return {k: v for k, v in state.items() if not k.endswith("relative_position_index")}


_DOC = """UperNet + Swin-{size} (embed {embed}, depths {depths}, heads {heads}; window 7).

    Args:
        num_classes: K.
        classifier: "ssa" (default) or "linear".
        classifier_kwargs: passed to the classifier (SSA constants, loss weights).
        **kwargs: architecture overrides (defaults: mmseg's config): embed_dims, depths,
            num_heads, window_size (7), mlp_ratio (4), qkv_bias, drop_rate, attn_drop_rate,
            drop_path_rate (0.3), with_cp (activation checkpointing), channels (decoder C, 512),
            pool_scales ((1,2,3,6)), head_norm ("bn"), dropout (before the classifier, 0.1),
            aux (FCN auxiliary head on stage 2, True), aux_channels (256), aux_loss_weight (0.4),
            align_corners, backbone_weights (path; see PRETRAINED_BACKBONES).

    Returns a :class:`~ssaseg.segmentor.Segmentor`; F is the UPerHead ``fpn_bottleneck`` output
    (C 512) at stride 4.
    """


@register_model
def upernet_swin_t(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("upernet_swin_t", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def upernet_swin_b(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("upernet_swin_b", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def upernet_swin_l(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("upernet_swin_l", num_classes, classifier, classifier_kwargs, kwargs)


for _fn in (upernet_swin_t, upernet_swin_b, upernet_swin_l):
    _arch = _ARCHS[_fn.__name__]
    _fn.__doc__ = _DOC.format(
        size=_fn.__name__[-1].upper(), embed=_arch["embed_dims"], depths=",".join(map(str, _arch["depths"])),
        heads=",".join(map(str, _arch["num_heads"])),
    )
del _fn, _arch
