"""SegNeXt: MSCAN backbone + LightHamHead decoder (spec §7, §10.6, §11.1).

Entry points ``segnext_t``, ``segnext_s``, ``segnext_b``, ``segnext_l``; the architecture values are
mmseg's / the SSA reference's configs. Published backbone weights are listed apart from the
architecture in :data:`PRETRAINED_BACKBONES` (timm's ``default_cfgs`` idea); nothing is
downloaded: pass the local file as ``backbone_weights``.

Official full-model SSA-SegNeXt checkpoints need no architecture-specific key rule: their
``backbone.*`` and ``decode_head.{squeeze,hamburger,align}.*`` names are this module's, and
:func:`ssaseg.checkpoints.convert_official_state_dict` moves ``conv_seg`` and the SSA modules to
``classifier.*``.
"""
from __future__ import annotations

from typing import Any

from ..backbones.mscan import MSCAN
from ..decoders.ham import LightHamDecoder
from ..models import register_model
from ..pretrained import PretrainedCfg, register_pretrained
from ..segmentor import Segmentor, build_segmentor
from ._common import arch_config

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

#: Architecture per variant: backbone (embed_dims, depths, drop_path_rate) and head
#: (channels = ham_channels, NMF rank md_r). mlp_ratios are 8,8,4,4 everywhere.
_ARCHS: dict[str, dict[str, Any]] = {
    "segnext_t": dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), drop_path_rate=0.1, channels=256, md_r=16),
    "segnext_s": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), drop_path_rate=0.1, channels=256, md_r=16),
    "segnext_b": dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), drop_path_rate=0.1, channels=512, md_r=16),
    "segnext_l": dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), drop_path_rate=0.3, channels=1024, md_r=64),
}

_DEFAULTS: dict[str, Any] = dict(
    mlp_ratios=(8, 8, 4, 4),
    drop_rate=0.0,
    norm="bn",
    ham_channels=None,  # None: = channels
    md_s=1,
    train_steps=6,
    eval_steps=7,
    rand_init=True,
    nmf_random_eval=False,
    head_norm="gn",
    dropout=0.1,
    align_corners=False,
    backbone_weights=None,
)


def _build(variant: str, num_classes: int, classifier: str, classifier_kwargs: dict | None, overrides: dict) -> Segmentor:
    cfg = arch_config(variant, _DEFAULTS, overrides, _ARCHS[variant])
    embed_dims = list(cfg["embed_dims"])
    backbone = MSCAN(
        embed_dims=embed_dims,
        depths=cfg["depths"],
        mlp_ratios=cfg["mlp_ratios"],
        drop_rate=cfg["drop_rate"],
        drop_path_rate=cfg["drop_path_rate"],
        norm=cfg["norm"],
    )
    if cfg["backbone_weights"] is not None:
        backbone.load_pretrained(cfg["backbone_weights"])
    decoder = LightHamDecoder(
        in_channels=embed_dims[1:],
        channels=cfg["channels"],
        ham_channels=cfg["ham_channels"] or cfg["channels"],
        in_index=(1, 2, 3),
        md_s=cfg["md_s"],
        md_r=cfg["md_r"],
        train_steps=cfg["train_steps"],
        eval_steps=cfg["eval_steps"],
        rand_init=cfg["rand_init"],
        norm=cfg["head_norm"],
        align_corners=cfg["align_corners"],
        random_eval=cfg["nmf_random_eval"],
    )
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs,
        dropout=cfg["dropout"], align_corners=cfg["align_corners"],
    )


_DOC = """SegNeXt-{size} (MSCAN-{size} + LightHamHead{extra}).

    Args:
        num_classes: K.
        classifier: "ssa" (default) or "linear".
        classifier_kwargs: passed to the classifier (SSA constants, loss weights).
        **kwargs: architecture overrides (defaults: the paper/mmseg config):
            embed_dims (4 ints), depths (4 ints), mlp_ratios (4 numbers), drop_rate,
            drop_path_rate, norm ("bn" | "gn", backbone), channels (decoder width C; a multiple
            of 32 for GroupNorm), ham_channels (default = channels), md_s, md_r, train_steps,
            eval_steps, rand_init (False = fixed NMF bases, deterministic), nmf_random_eval
            (True = fresh random NMF bases in eval too, as the reference; default False: fixed
            seeded evaluation bases, deterministic inference), head_norm
            ("gn" | "bn"), dropout (before the classifier, 0.1), align_corners,
            backbone_weights (path to published MSCAN weights, loaded strictly; see
            PRETRAINED_BACKBONES).

    Returns a :class:`~ssaseg.segmentor.Segmentor`; F is the decoder's ``align`` output at stride 8.
    Set ``model.decoder.nmf.generator`` to seed the per-forward NMF bases.
    """


@register_model
def segnext_t(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segnext_t", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segnext_s(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segnext_s", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segnext_b(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segnext_b", num_classes, classifier, classifier_kwargs, kwargs)


@register_model
def segnext_l(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, **kwargs) -> Segmentor:
    return _build("segnext_l", num_classes, classifier, classifier_kwargs, kwargs)


segnext_t.__doc__ = _DOC.format(size="T", extra=": embed 32,64,160,256, depths 3,3,5,2, C 256, MD_R 16")
segnext_s.__doc__ = _DOC.format(size="S", extra=": embed 64,128,320,512, depths 2,2,4,2, C 256, MD_R 16")
segnext_b.__doc__ = _DOC.format(size="B", extra=": embed 64,128,320,512, depths 3,3,12,3, C 512, MD_R 16")
segnext_l.__doc__ = _DOC.format(size="L", extra=": embed 64,128,320,512, depths 3,5,27,3, C 1024, MD_R 64, drop path 0.3")
