"""Cross-entropy variants with the normalisations the reference mixes (spec §6.1-6.3, Q6, Q7)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy_all_pixels(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """mmseg 0.30 CE: ignored pixels give 0 loss but stay in the denominator (divide by B*H*W).

    logits: (B, K, H, W); target: (B, H, W) long. Returns a scalar.
    """
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / target.numel()


def cross_entropy_valid_pixels(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """CE averaged over non-ignored pixels; 0 (not NaN) when there are none (spec Q6 fix).

    logits: (B, K, H, W); target: (B, H, W) long. Returns a scalar.
    """
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = (target != ignore_index).sum().clamp_min(1)
    return per_pixel.sum() / valid
