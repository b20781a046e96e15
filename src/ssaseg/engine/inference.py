"""Test-time inference with mmseg 0.30 semantics (spec §8).

* whole: ``model(image)`` gives logits at the input size; they are resized (bilinear,
  align_corners False) to the original image size, then softmaxed.
* slide: windows of ``crop`` with ``stride``; ``n = max(L - c + s - 1, 0) // s + 1`` per axis;
  each window is clipped to the image and shifted back so it keeps the full crop size when the
  image is large enough; the windows' logits are summed into a zero canvas, divided by the
  per-pixel window count, then resized to the original size.
* TTA: for each scale ratio (and the horizontal flip, when enabled) the softmax probabilities at
  the original size are averaged; the prediction is their argmax.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import resize

__all__ = ["slide_windows", "slide_logits", "whole_logits", "predict_probs", "predict_labels"]


def slide_windows(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """mmseg's sliding windows ``(y1, y2, x1, x2)`` over a ``height x width`` image."""
    ch, cw = crop
    sh, sw = stride
    if min(ch, cw, sh, sw) <= 0:
        raise ValueError(f"slide crop {tuple(crop)} and stride {tuple(stride)} must be positive")
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
            windows.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return windows


def whole_logits(model: nn.Module, images: Tensor) -> Tensor:
    """``images (B,3,H,W)`` -> logits ``(B,K,H,W)`` (the segmentor resizes to its input size)."""
    return model(images)


def slide_logits(
    model: nn.Module, images: Tensor, crop: Sequence[int], stride: Sequence[int], max_batch: int = 8
) -> Tensor:
    """Sliding-window logits ``(B,K,H,W)`` for ``images (B,3,H,W)``.

    All windows share one size (``min(crop, image)`` per axis, because clipped windows are shifted
    back), so they are stacked and run ``max_batch`` windows at a time.
    """
    b, _, h, w = images.shape
    windows = slide_windows(h, w, crop, stride)
    crops = torch.cat([images[:, :, y1:y2, x1:x2] for (y1, y2, x1, x2) in windows])  # (n*B,3,ch,cw)
    outs = torch.cat([model(chunk) for chunk in crops.split(max_batch * b)])  # (n*B,K,ch,cw)
    canvas = outs.new_zeros(b, outs.shape[1], h, w)
    count = outs.new_zeros(1, 1, h, w)
    for i, (y1, y2, x1, x2) in enumerate(windows):
        canvas[:, :, y1:y2, x1:x2] += outs[i * b : (i + 1) * b]
        count[:, :, y1:y2, x1:x2] += 1
    return canvas / count


def _scaled_size(size: tuple[int, int], ratio: float, multiple: int | None) -> tuple[int, int]:
    h, w = (int(round(s * ratio)) for s in size)
    if multiple:
        h, w = (math.ceil(s / multiple) * multiple for s in (h, w))
    return max(h, 1), max(w, 1)


def predict_probs(
    model: nn.Module,
    images: Tensor,
    ori_size: Sequence[int],
    mode: str = "whole",
    crop: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    resize_to_multiple: int | None = None,
) -> Tensor:
    """Softmax probabilities ``(B,K,H0,W0)`` at the original size ``ori_size = (H0, W0)``.

    ``images (B,3,H,W)`` is the test-pipeline image (scale 1.0). Other scale ratios resize it
    bilinearly by the ratio (rounded up to ``resize_to_multiple`` when set); mmseg resizes the
    original image instead, which differs only by the interpolation of an interpolation.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"evaluation mode must be 'whole' or 'slide', got {mode!r}")
    size = tuple(int(s) for s in ori_size)
    total = None
    for ratio in scales:
        if ratio == 1.0:
            scaled = images
        else:
            scaled = resize(images, _scaled_size(images.shape[-2:], ratio, resize_to_multiple))
        for flipped in (False, True) if flip else (False,):
            x = scaled.flip(-1) if flipped else scaled
            if mode == "slide":
                logits = slide_logits(model, x, crop, stride)
            else:
                logits = whole_logits(model, x)
            if flipped:
                logits = logits.flip(-1)
            probs = F.softmax(resize(logits.float(), size), dim=1)
            total = probs if total is None else total + probs
    n = len(scales) * (2 if flip else 1)
    return total / n


def predict_labels(model: nn.Module, images: Tensor, ori_size: Sequence[int], **kwargs) -> Tensor:
    """Predicted class ids ``(B,H0,W0)`` (argmax of :func:`predict_probs`)."""
    return predict_probs(model, images, ori_size, **kwargs).argmax(1)
