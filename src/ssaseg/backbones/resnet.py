"""Dilated ResNet-V1c backbone (mmseg ``ResNetV1c`` with ``-d8`` strides/dilations) on timm's ResNet.

mmseg's ResNetV1c is a ResNet-B ("pytorch" style: stride in the 3x3 conv) with a deep stem of
three 3x3 convs (32, 32, 64) and no average-pooled shortcut: timm's ``resnet{50,101}c``
(``stem_type="deep", stem_width=32``). The ``-d8`` configs use strides (1, 2, 1, 1), dilations
(1, 1, 2, 4) and ``contract_dilation``: the first block of a dilated stage uses half the
dilation. timm's ``output_stride=8`` builds exactly that (each stage's first block takes the
previous stage's dilation).

Parameter names are timm's (``conv1.{0,1,3,4,6}``, ``bn1``, ``layer{1-4}.*``); the mmseg stem
names (``stem.{0,1,3,4,6,7}``) are mapped by :func:`convert_resnet_mmseg`.
"""
from __future__ import annotations

import re

from timm.models.resnet import Bottleneck, ResNet
from torch import Tensor, nn

from ..weights import StateDict, register_converter, strip_prefixes

_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# mmseg Sequential stem index -> timm module name.
_STEM_MAP = {"0": "conv1.0", "1": "conv1.1", "3": "conv1.3", "4": "conv1.4", "6": "conv1.6", "7": "bn1"}


class ResNetV1c(nn.Module):
    """ResNetV1c-{50,101,152} returning the four stage outputs.

    Args:
        depth: 50, 101 or 152.
        output_stride: 8 (``-d8``: strides 1,2,1,1, dilations 1,1,2,4), 16 or 32.
        drop_path_rate: stochastic depth (0 in the mmseg configs).

    ``forward(images (B, 3, H, W)) -> [(B, 256, H/4, W/4), (B, 512, H/8, W/8),
    (B, 1024, H/os', ...), (B, 2048, H/os, W/os)]`` with ``os`` the output stride.
    """

    def __init__(self, depth: int = 101, output_stride: int = 8, drop_path_rate: float = 0.0, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNetV1c depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        net = ResNet(
            Bottleneck, _DEPTHS[depth], num_classes=0, in_chans=in_channels, output_stride=output_stride,
            stem_width=32, stem_type="deep", drop_path_rate=drop_path_rate, zero_init_last=False,
        )
        # Keep timm's module names at the top level (no wrapper prefix); the pooling/fc are dropped.
        for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(net, name))
        self.in_channels = in_channels
        self.out_channels = [256, 512, 1024, 2048]
        self.strides = [4, 8, min(16, output_stride), output_stride]

    def forward(self, images: Tensor) -> list[Tensor]:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"ResNetV1c expects images (B, {self.in_channels}, H, W), got {tuple(images.shape)}")
        x = self.maxpool(self.act1(self.bn1(self.conv1(images))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs


# Old (pre-0.4.1) checkpoints lack the BN ``num_batches_tracked`` counters.
@register_converter("resnet_v1c", keep_initial=r".*num_batches_tracked")
def convert_resnet_mmseg(state: StateDict) -> StateDict:
    """mmseg/mmcls ResNetV1c names (``stem.{0,1,3,4,6,7}``) -> timm names; drops ``fc.*`` and
    ``backbone.`` / ``module.`` prefixes.

    Keys already in timm layout pass through unchanged.
    """
    out: StateDict = {}
    for key, value in strip_prefixes(state).items():
        if key.startswith(("fc.", "head.")):
            continue
        m = re.match(r"^stem\.(\d+)\.(.*)$", key)
        if m:
            if m.group(1) not in _STEM_MAP:
                raise ValueError(f"unexpected mmseg stem key {key!r} (a ResNetV1c stem has indices {sorted(_STEM_MAP)})")
            key = f"{_STEM_MAP[m.group(1)]}.{m.group(2)}"
        out[key] = value
    return out
