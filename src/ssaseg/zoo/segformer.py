"""SegFormer: MiT backbone + All-MLP decoder (spec §7, §10.4; notes/ecosystem.md §D, §E).

Entry points ``segformer_b0`` ... ``segformer_b5`` with mmseg's configs: decoder channels 256 for
every size (NVlabs used 768 for B2-B5; the paper's 82.0 M / 52.5 GMAC for B5 are mmseg's 256),
drop path 0.1. Published backbone weights are listed in :data:`PRETRAINED_BACKBONES`; nothing is
downloaded: pass the local file as ``backbone_weights`` (mmseg ``mit_b*_20220624-*.pth`` or the
original NVlabs ``mit_b*.pth``, converted on load).

Official full-model SSA-SegFormer checkpoints are in mmseg layout (``backbone.layers.*``,
``decode_head.{convs,fusion_conv}.*``), which is this module's, so they need no
architecture-specific key rule beyond :func:`ssaseg.checkpoints.convert_official_state_dict`.
"""
from __future__ import annotations

from typing import Any

from ..backbones.mit import MixVisionTransformer
from ..decoders.segformer import SegformerDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import arch_config

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

#: Architecture per variant (mmseg's segformer_mit-b*.py): base width and blocks per stage.
_ARCHS: dict[str, dict[str, Any]] = {
    "segformer_b0": dict(embed_dims=32, depths=(2, 2, 2, 2)),
    "segformer_b1": dict(embed_dims=64, depths=(2, 2, 2, 2)),
    "segformer_b2": dict(embed_dims=64, depths=(3, 4, 6, 3)),
    "segformer_b3": dict(embed_dims=64, depths=(3, 4, 18, 3)),
    "segformer_b4": dict(embed_dims=64, depths=(3, 8, 27, 3)),
    "segformer_b5": dict(embed_dims=64, depths=(3, 6, 40, 3)),
}

_DEFAULTS: dict[str, Any] = dict(
    num_heads=(1, 2, 5, 8),
    sr_ratios=(8, 4, 2, 1),
    patch_sizes=(7, 3, 3, 3),
    mlp_ratio=4,
    qkv_bias=True,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.1,
    channels=256,
    head_norm="bn",
    dropout=0.1,
    align_corners=False,
    backbone_weights=None,
)


def _build(variant: str, num_classes: int, classifier: str, classifier_kwargs: dict | None, overrides: dict) -> Segmentor:
    cfg = arch_config(variant, _DEFAULTS, overrides, _ARCHS[variant])
    backbone = MixVisionTransformer(
        embed_dims=cfg["embed_dims"],
        num_layers=cfg["depths"],
        num_heads=cfg["num_heads"],
        patch_sizes=cfg["patch_sizes"],
        sr_ratios=cfg["sr_ratios"],
        mlp_ratio=cfg["mlp_ratio"],
        qkv_bias=cfg["qkv_bias"],
        drop_rate=cfg["drop_rate"],
        attn_drop_rate=cfg["attn_drop_rate"],
        drop_path_rate=cfg["drop_path_rate"],
    )
    if cfg["backbone_weights"] is not None:
        backbone.load_pretrained(cfg["backbone_weights"])
    decoder = SegformerDecoder(
        backbone.out_channels, cfg["channels"], in_index=(0, 1, 2, 3), norm=cfg["head_norm"],
        align_corners=cfg["align_corners"],
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=cfg["dropout"], align_corners=cfg["align_corners"],
    )


_DOC = """SegFormer-{size} (MiT-{size}: base width {width}, depths {depths}; All-MLP decoder, C 256).

    Args:
        num_classes: K.
        classifier: "ssa" (default) or "linear".
        classifier_kwargs: passed to the classifier (SSA constants, loss weights).
        **kwargs: architecture overrides (defaults: mmseg's config):
            embed_dims (base width; stage i has embed_dims * num_heads[i] channels),
            depths (blocks per stage, mmseg's num_layers), num_heads (1,2,5,8), sr_ratios
            (8,4,2,1), patch_sizes (7,3,3,3), mlp_ratio (4), qkv_bias, drop_rate,
            attn_drop_rate, drop_path_rate (0.1), channels (decoder width C, 256),
            head_norm ("bn" | "gn"), dropout (before the classifier, 0.1), align_corners,
            backbone_weights (path to MiT weights in mmseg or NVlabs layout, loaded strictly;
            see PRETRAINED_BACKBONES).

    Returns a :class:`~ssaseg.segmentor.Segmentor`; F is the decoder's ``fusion_conv`` output at
    stride 4.
    """


@register_model
def segformer_b0(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segformer_b0", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segformer_b1(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segformer_b1", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segformer_b2(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segformer_b2", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segformer_b3(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segformer_b3", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segformer_b4(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segformer_b4", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segformer_b5(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segformer_b5", num_classes, classifier, classifier_kwargs, kwargs)


for _fn in (segformer_b0, segformer_b1, segformer_b2, segformer_b3, segformer_b4, segformer_b5):
    _arch = _ARCHS[_fn.__name__]
    _fn.__doc__ = _DOC.format(
        size=_fn.__name__[-2:].upper(), width=_arch["embed_dims"], depths=",".join(map(str, _arch["depths"]))
    )
del _fn, _arch
