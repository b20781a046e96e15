"""HRNetV2 backbone (mmseg ``HRNet`` semantics) built on timm's HRNet.

timm's ``HighResolutionNetFeatures`` with ``feature_location=''`` (the raw branches, not the
"incre" classification-head features) has exactly the official HRNet-ImageNet module names:
``conv1, bn1, conv2, bn2, layer1, transition1..3, stage2..4`` (with ``branches`` and
``fuse_layers``). Three things differ from mmseg and are fixed here:

* mmseg upsamples the lower-resolution branches in the fuse layers with *bilinear*
  (align_corners False) interpolation; the classification code (and timm) uses nearest.
* mmseg then resizes each upsampled branch to the size of the branch it is added to (bilinear,
  align_corners False), so any input size works: with a side that is not a multiple of 32 the
  stride-2 convolutions round up and ``2**k`` times a lower branch overshoots the higher one.
  timm requires the sizes to agree; :class:`_FuseResizeModule` adds mmseg's resize.
* The stem output (stride 2) is not returned; the four branches are, at strides 4, 8, 16, 32.

Published checkpoints (``hrnetv2_w48-d2186c55.pth`` and ``hrnetv2_w18-00eb2006.pth`` from
download.openmmlab.com/pretrain/third_party, and timm's ``hrnet_w*.ms_in1k``) carry an ImageNet
head (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``) that
:func:`checkpoint_filter_fn` (converter ``"hrnet"``) drops, as mmseg does by loading them
non-strictly.
"""
from __future__ import annotations


import torch.nn.functional as F
from timm.models.hrnet import HighResolutionModule, HighResolutionNetFeatures, cfg_cls
from torch import Tensor, nn

from ..weights import StateDict, register_converter, strip_prefixes

#: Keys of the ImageNet classification head in official / timm HRNet checkpoints.
CLASSIFICATION_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


class _FuseResizeModule(HighResolutionModule):
    """timm's HRNet module with mmseg's fuse: a lower-resolution branch, upsampled by ``2**(j-i)``,
    is resized to branch ``i``'s size before the sum (mmseg ``HRModule.forward``). The resize is
    skipped when the sizes already agree (every input side a multiple of 32), where it would be
    the identity, so the output there is bit-identical to timm's."""

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        fused = []
        for i, fuse_outer in enumerate(self.fuse_layers):
            y = None
            for j, fuse in enumerate(fuse_outer):
                z = fuse(x[j])
                if j > i and z.shape[-2:] != x[i].shape[-2:]:
                    z = F.interpolate(z, size=x[i].shape[-2:], mode="bilinear", align_corners=False)
                y = z if y is None else y + z
            fused.append(self.fuse_act(y))
        return fused


class HRNet(HighResolutionNetFeatures):
    """HRNetV2-W{18,32,48,...} returning its four high-resolution branches.

    Args:
        arch: timm HRNet config name, ``"hrnet_w48"`` or ``"hrnet_w18"`` (any key of
            ``timm.models.hrnet.cfg_cls`` works).

    ``forward(images (B, 3, H, W)) -> [(B, w, H/4, W/4), (B, 2w, H/8, W/8), (B, 4w, H/16, W/16),
    (B, 8w, H/32, W/32)]`` with ``w`` = 48 for W48 and each side rounded up at every stride-2
    step (any input size works, as in mmseg).
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
            if type(module) is HighResolutionModule:
                module.__class__ = _FuseResizeModule
        self.out_channels: list[int] = [info["num_chs"] for info in self.feature_info.get_dicts()]
        self.strides: list[int] = [info["reduction"] for info in self.feature_info.get_dicts()]


# Old checkpoints (saved before PyTorch 0.4.1) lack the BatchNorm ``num_batches_tracked`` counters.
@register_converter("hrnet", keep_initial=r".*num_batches_tracked")
def checkpoint_filter_fn(state_dict: StateDict) -> StateDict:
    """Official HRNet-ImageNet / timm / mmseg layout -> :class:`HRNet` keys.

    Drops the classification head and strips ``module.`` and ``backbone.`` prefixes.
    """
    return {k: v for k, v in strip_prefixes(state_dict).items() if not k.startswith(CLASSIFICATION_HEAD_PREFIXES)}
