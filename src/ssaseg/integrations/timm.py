"""timm encoders for ssaseg: ``create_model("tu-<timm name>", num_classes, decoder=..., classifier=...)``.

Any timm model that supports ``features_only=True`` becomes an ssaseg backbone
(:class:`TimmBackbone`: ``out_channels: list[int]``, ``forward(x) -> list[Tensor]``, NCHW), and
one of ssaseg's general decoders (:data:`DECODERS`) turns its levels into the feature map the
classifier reads. No weights are downloaded unless ``pretrained=True``; ``pretrained`` may also
be the path of a local timm checkpoint.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import timm
from torch import Tensor, nn

from ..decoders.segformer import SegformerDecoder
from ..decoders.uper import UPerDecoder
from ..segmentor import Segmentor, build_segmentor

#: decoder name -> (class, default width C).
DECODERS: dict[str, tuple[type[nn.Module], int]] = {"uper": (UPerDecoder, 512), "segformer": (SegformerDecoder, 256)}


def _pretrained_args(pretrained: bool | str | os.PathLike) -> dict:
    if isinstance(pretrained, (str, os.PathLike)):
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(f"timm weights not found: {os.fspath(pretrained)}")
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": os.fspath(pretrained)}}
    return {"pretrained": bool(pretrained)}


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model with ssaseg's backbone contract.

    Args:
        name: timm model name (``timm.list_models()``).
        pretrained: False (random init, the default), True (timm's download) or a local file.
        out_indices: timm feature levels to return; default: every level with stride >= 4
            (the 1/4 .. 1/32 pyramid that segmentation decoders expect).
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    ``forward(x (B,3,H,W)) -> [(B, out_channels[i], H/s_i, W/s_i)]``, always NCHW (timm's NHWC
    models, e.g. Swin, are permuted).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool | str | os.PathLike = False,
        out_indices: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        self.name = name
        if not timm.is_model(name):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown timm model {name!r}{hint} (see timm.list_models())")
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        self.timm_kwargs = kwargs
        self.body = timm.create_model(name, features_only=True, **_pretrained_args(pretrained), **kwargs)
        info = self.body.feature_info
        channels, reductions = info.channels(), info.reduction()
        if out_indices is None:
            keep = [i for i, r in enumerate(reductions) if r >= 4]
            self.levels = keep if len(keep) >= 2 else list(range(len(channels)))
        else:
            self.levels = list(range(len(channels)))
        self.out_channels = [channels[i] for i in self.levels]
        self.reductions = [reductions[i] for i in self.levels]
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.body(x)
        features = [features[i] for i in self.levels]
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2) for f in features]
        return features


def create_timm_model(
    name: str,
    num_classes: int,
    classifier: str = "ssa",
    decoder: str = "uper",
    channels: int | None = None,
    pretrained: bool | str | os.PathLike = False,
    out_indices: Sequence[int] | None = None,
    classifier_kwargs: dict | None = None,
    dropout: float = 0.1,
    **timm_kwargs,
) -> Segmentor:
    """``Segmentor(TimmBackbone(name), DECODERS[decoder], classifier)``.

    Args:
        name: timm model name, without the ``tu-`` prefix that :func:`ssaseg.create_model` strips.
        num_classes: K.
        classifier: ``"ssa"``, ``"cac"`` or ``"linear"``.
        decoder: ``"uper"`` (PPM + FPN, C = 512) or ``"segformer"`` (all-MLP, C = 256).
        channels: decoder width C (default per decoder).
        pretrained, out_indices, **timm_kwargs: see :class:`TimmBackbone`.
        classifier_kwargs: passed to the classifier; ``dropout`` is its Dropout2d rate.
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r} for a tu- model; expected one of {sorted(DECODERS)}")
    backbone = TimmBackbone(name, pretrained=pretrained, out_indices=out_indices, **timm_kwargs)
    decoder_cls, default_channels = DECODERS[decoder]
    in_channels = backbone.out_channels
    head = decoder_cls(in_channels, channels or default_channels, in_index=list(range(len(in_channels))))
    return build_segmentor(backbone, head, num_classes, classifier, classifier_kwargs, dropout=dropout)
