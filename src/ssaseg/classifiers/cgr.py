"""The official CGRSeg two-stage classifier (Ni et al., ECCV 2024; head ``CGRSeg`` in
nizhenliang/CGRSeg; docs/algorithm.md §7, §10.9): the ``classifier="linear"`` head of ``cgrseg_*``.

The official baseline head refines its feature map with the class logits before classifying
(see :mod:`ssaseg.decoders.cgr`): that needs the classes, so it is a classifier, built on the
pre-fuse map of :class:`~ssaseg.decoders.cgr.CGRDecoder` (``linear_fuse=False``). It keeps the
official parameter names (``linear_fuse``, ``lgc``, ``conv_seg``) under ``classifier.``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers import ConvModule
from .linear import LinearClassifier

__all__ = ["DPGHead", "CGRClassifier"]


class DPGHead(nn.Module):
    """Dynamic prototype guidance (official ``DPGHead(pool='att', fusions=['channel_mul'])``):
    attention-pool the class context vectors into one vector, turn it into a channel gate.

    ``forward(x (B, C, H, W), context (B, C, K, 1)) -> x * sigmoid(mlp(att_pool(context)))``.
    """

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.channel_mul_conv = nn.Sequential(
            nn.Conv2d(channels, mid_channels, 1),
            nn.LayerNorm([mid_channels, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, channels, 1),
        )
        # mmcv init of the official code: kaiming (fan_in) mask conv, zero last gate conv.
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_mul_conv[-1].weight)
        nn.init.zeros_(self.channel_mul_conv[-1].bias)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c = context.shape[:2]
        weights = self.conv_mask(context).view(b, 1, -1).softmax(dim=2)  # (B, 1, K)
        pooled = (context.view(b, c, -1) @ weights.transpose(1, 2)).view(b, c, 1, 1)
        return x * torch.sigmoid(self.channel_mul_conv(pooled))


class CGRClassifier(LinearClassifier):
    """The official CGRSeg two-stage classifier (the ``classifier="linear"`` head of cgrseg_*).

    ``feat`` is the decoder's pre-fuse map ``x`` (:class:`~ssaseg.decoders.cgr.CGRDecoder` with
    ``linear_fuse=False``):

    1. coarse logits ``M = conv_seg(dropout(linear_fuse(x)))``;
    2. class contexts ``c_k = sum_n softmax_n(M_k) x_n`` -> ``(B, C, K, 1)``;
    3. ``x' = lgc(x, c) + x``; logits ``conv_seg(dropout(x'))`` (the same ``conv_seg`` and
       dropout module, as officially).

    Loss (as the official head, docs/algorithm.md §6.1): only the final logits get the mmseg cross entropy
    (weight 1, ignored pixels kept in the denominator); ``M`` gets no loss of its own and is
    trained only through the gather weights. Two consequences of the official design: the
    bias of ``lgc.conv_mask`` never gets a gradient (its output is softmaxed over the classes,
    which ignores a constant shift), and at initialisation the zeroed last conv of the ``lgc``
    gate blocks the gradient of ``linear_fuse`` and of the gate's first layers until it moves.

    Eval: ``forward(x) -> logits (B, K, h, w)``; train: ``forward(x, target) -> (logits,
    {"ce": loss})``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.1,
        is_dw: bool = True,
        ignore_index: int = 255,
        loss_weight: float = 1.0,
        align_corners: bool = False,
    ) -> None:
        super().__init__(in_channels, num_classes, dropout, ignore_index, loss_weight, align_corners)
        groups = in_channels if is_dw else 1
        self.linear_fuse = ConvModule(in_channels, in_channels, 1, groups=groups, norm="bn", act="relu")
        self.lgc = DPGHead(in_channels, in_channels)

    def refine(self, x: Tensor) -> Tensor:
        """The first stage and the prototype-guided refinement: ``x (B,C,h,w) -> x' (B,C,h,w)``."""
        coarse = self.conv_seg(self.dropout(self.linear_fuse(x)))
        weights = coarse.flatten(2).softmax(dim=2)  # (B, K, N)
        context = (weights @ x.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(3)  # (B, C, K, 1)
        return self.lgc(x, context) + x

    def forward(self, feat: Tensor, target: Tensor | None = None):
        return super().forward(self.refine(feat), target)
