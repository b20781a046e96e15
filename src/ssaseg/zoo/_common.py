"""Helpers shared by the zoo entry points (this module registers no models).

* :func:`arch_config`: the entry points' keyword handling (defaults, per-variant values, user
  overrides, and the ``TypeError`` for unknown keywords);
* :func:`fcn_aux_heads`: mmseg's FCN auxiliary head on backbone level 2, switched by ``aux``;
* :func:`upernet_segmentor`: UPerHead + that auxiliary head + classifier on any 4-level backbone.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from torch import nn

from ..decoders.uper import UPerDecoder
from ..segmentor import AuxHead, Segmentor, build_segmentor, fcn_aux_head

#: mmseg's FCN auxiliary head (``FCNHead`` on level 2, 256 channels, CE x0.4): the settings
#: :func:`fcn_aux_heads` reads.
FCN_AUX_DEFAULTS: dict[str, Any] = dict(aux=True, aux_channels=256, aux_loss_weight=0.4)

#: mmseg's UperNet head (``UPerHead`` C 512, pool scales 1,2,3,6, BN; dropout 0.1 before the
#: classifier) with the FCN auxiliary head: the settings :func:`upernet_segmentor` reads.
UPERNET_DEFAULTS: dict[str, Any] = dict(
    channels=512, pool_scales=(1, 2, 3, 6), head_norm="bn", dropout=0.1, **FCN_AUX_DEFAULTS, align_corners=False
)


def arch_config(
    variant: str,
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any],
    arch: Mapping[str, Any] | None = None,
    fixed: Collection[str] = (),
) -> dict[str, Any]:
    """Return ``{**defaults, **arch, **overrides}`` after checking the override names.

    Args:
        variant: the entry point's name, used in the error message.
        defaults: values shared by every variant of the architecture.
        overrides: the user's ``**kwargs``.
        arch: the variant's own values (they win over ``defaults``); None for single-variant
            architectures.
        fixed: keys of ``arch`` that select the variant and cannot be overridden (e.g. the name
            of a backbone table entry).

    Raises:
        TypeError: ``"{variant}() got unexpected arguments [...]; accepted: [...]"`` when
            ``overrides`` names a key that is not accepted.
    """
    cfg = {**defaults, **(arch or {})}
    accepted = set(cfg) - set(fixed)
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise TypeError(f"{variant}() got unexpected arguments {unknown}; accepted: {sorted(accepted)}")
    cfg.update(overrides)
    return cfg


def fcn_aux_heads(backbone: nn.Module, num_classes: int, cfg: Mapping[str, Any]) -> list[AuxHead]:
    """mmseg's FCN auxiliary head on backbone level 2 (``cfg["aux_channels"]`` wide, loss weight
    ``cfg["aux_loss_weight"]``) when ``cfg["aux"]``; otherwise no auxiliary head."""
    if not cfg["aux"]:
        return []
    return [
        fcn_aux_head(backbone.out_channels[2], num_classes, in_index=2, channels=cfg["aux_channels"],
                     loss_weight=cfg["aux_loss_weight"])
    ]


def upernet_segmentor(
    backbone: nn.Module, num_classes: int, classifier: str, classifier_kwargs: dict | None, cfg: Mapping[str, Any]
) -> Segmentor:
    """UperNet on ``backbone``: UPerHead on all its levels (``channels``, ``pool_scales``,
    ``head_norm``), the optional FCN auxiliary head (:func:`fcn_aux_heads`) and the classifier
    (``dropout``); ``align_corners`` for every resize. All settings are read from ``cfg``."""
    decoder = UPerDecoder(
        backbone.out_channels, cfg["channels"], pool_scales=cfg["pool_scales"], norm=cfg["head_norm"],
        align_corners=cfg["align_corners"],
    )
    aux = fcn_aux_heads(backbone, num_classes, cfg)
    return build_segmentor(
        backbone, decoder, num_classes, classifier, classifier_kwargs, aux_heads=aux,
        dropout=cfg["dropout"], align_corners=cfg["align_corners"],
    )
