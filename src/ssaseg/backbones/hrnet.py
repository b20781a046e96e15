"""HRNetV2 backbone (mmseg ``HRNet`` semantics) built on timm's HRNet.

timm's ``HighResolutionNetFeatures`` with ``feature_location=''`` (the raw branches, not the
"incre" classification-head features) has exactly the official HRNet-ImageNet module names:
``conv1, bn1, conv2, bn2, layer1, transition1..3, stage2..4`` (with ``branches`` and
``fuse_layers``). Two things differ from mmseg and are fixed here:

* mmseg upsamples the lower-resolution branches in the fuse layers with *bilinear*
  (align_corners False) interpolation; the classification code (and timm) uses nearest.
* The stem output (stride 2) is not returned; the four branches are, at strides 4, 8, 16, 32.

Published checkpoints (``hrnetv2_w48-d2186c55.pth`` and ``hrnetv2_w18-00eb2006.pth`` from
download.openmmlab.com/pretrain/third_party, and timm's ``hrnet_w*.ms_in1k``) carry an ImageNet
head (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``) that
:func:`checkpoint_filter_fn` (converter ``"hrnet"``) drops, as mmseg does by loading them
non-strictly.
"""
from __future__ import annotations

import os

from timm.models.hrnet import HighResolutionNetFeatures, cfg_cls
from torch import Tensor, nn

from ..weights import StateDict, load_weights, register_converter, strip_prefixes

#: Keys of the ImageNet classification head in official / timm HRNet checkpoints.
CLASSIFICATION_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


class HRNet(HighResolutionNetFeatures):
    """HRNetV2-W{18,32,48,...} returning its four high-resolution branches.

    Args:
        arch: timm HRNet config name, ``"hrnet_w48"`` or ``"hrnet_w18"`` (any key of
            ``timm.models.hrnet.cfg_cls`` works).

    ``forward(images (B, 3, H, W)) -> [(B, w, H/4, W/4), (B, 2w, H/8, W/8), (B, 4w, H/16, W/16),
    (B, 8w, H/32, W/32)]`` with ``w`` = 48 for W48; H and W must be multiples of 32.
    """

    def __init__(self, arch: str = "hrnet_w48") -> None:
        if arch not in cfg_cls:
            raise ValueError(f"unknown HRNet arch {arch!r}; expected one of {sorted(cfg_cls)}")
        super().__init__(cfg_cls[arch], feature_location="", out_indices=(1, 2, 3, 4))
        self.arch = arch
        # mmseg HRModule: Upsample(scale_factor=2**(j-i), mode="bilinear", align_corners=False).
        for module in self.modules():
            if isinstance(module, nn.Upsample):
                module.mode = "bilinear"
                module.align_corners = False
        self.out_channels: list[int] = [info["num_chs"] for info in self.feature_info.get_dicts()]
        self.strides: list[int] = [info["reduction"] for info in self.feature_info.get_dicts()]

    def forward(self, images: Tensor) -> list[Tensor]:
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            # The fuse layers add branches upsampled by exact powers of two.
            raise ValueError(f"HRNet needs an input whose height and width are multiples of 32, got {height}x{width}")
        return super().forward(images)

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """Transitional alias of ``ssaseg.weights.load_weights(self, path, "hrnet")`` for the zoo
        entry points' ``backbone_weights`` argument (``ssaseg.pretrained`` loads weights now)."""
        load_weights(self, path, "hrnet")


# Old checkpoints (saved before PyTorch 0.4.1) lack the BatchNorm ``num_batches_tracked`` counters.
@register_converter("hrnet", keep_initial=r".*num_batches_tracked")
def checkpoint_filter_fn(state_dict: StateDict) -> StateDict:
    """Official HRNet-ImageNet / timm / mmseg layout -> :class:`HRNet` keys.

    Drops the classification head and strips ``module.`` and ``backbone.`` prefixes.
    """
    return {k: v for k, v in strip_prefixes(state_dict).items() if not k.startswith(CLASSIFICATION_HEAD_PREFIXES)}
