"""Test-time inference with mmseg 0.30 semantics (docs/algorithm.md §8).

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
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import resize

__all__ = [
    "slide_windows",
    "slide_logits",
    "whole_logits",
    "predict_probs",
    "predict_labels",
    "predict_labels_tiled",
    "resize_window",
]


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


def _tta_logits(
    model: nn.Module,
    images: Tensor,
    mode: str = "whole",
    crop: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    resize_to_multiple: int | None = None,
) -> Iterator[Tensor]:
    """Logits ``(B,K,h,w)`` at the network's resolution, one per scale ratio (and flip), unflipped.

    ``images (B,3,H,W)`` is the test-pipeline image (scale 1.0). Other scale ratios resize it
    bilinearly by the ratio (rounded up to ``resize_to_multiple`` when set); mmseg resizes the
    original image instead, which differs only by the interpolation of an interpolation.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"evaluation mode must be 'whole' or 'slide', got {mode!r}")
    for ratio in scales:
        if ratio == 1.0:
            scaled = images
        else:
            scaled = resize(images, _scaled_size(images.shape[-2:], ratio, resize_to_multiple))
        for flipped in (False, True) if flip else (False,):
            x = scaled.flip(-1) if flipped else scaled
            logits = slide_logits(model, x, crop, stride) if mode == "slide" else whole_logits(model, x)
            yield logits.flip(-1) if flipped else logits


def predict_probs(model: nn.Module, images: Tensor, ori_size: Sequence[int], **kwargs) -> Tensor:
    """Softmax probabilities ``(B,K,H0,W0)`` at the original size ``ori_size = (H0, W0)``: the mean
    over the scale ratios (and flips) of ``softmax(resize(logits))``. ``kwargs``: ``mode``,
    ``crop``, ``stride``, ``scales``, ``flip``, ``resize_to_multiple`` (see :func:`_tta_logits`).
    """
    size = tuple(int(s) for s in ori_size)
    total, n = None, 0
    for logits in _tta_logits(model, images, **kwargs):
        probs = F.softmax(resize(logits.float(), size), dim=1)
        total = probs if total is None else total + probs
        n += 1
    return total / n


def predict_labels(model: nn.Module, images: Tensor, ori_size: Sequence[int], **kwargs) -> Tensor:
    """Predicted class ids ``(B,H0,W0)`` (argmax of :func:`predict_probs`)."""
    return predict_probs(model, images, ori_size, **kwargs).argmax(1)


def _source_index(
    in_len: int, out_len: int, start: int, stop: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear (align_corners False) source rows ``i0, i1`` and weight of ``i1`` for output
    positions ``start:stop`` of a resize from ``in_len`` to ``out_len`` (PyTorch's formula)."""
    scale = in_len / out_len
    src = ((torch.arange(start, stop, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(in_len - 1)
    i1 = (i0 + 1).clamp_max(in_len - 1)
    return i0, i1, src - i0


def resize_window(x: Tensor, size: Sequence[int], rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
    """``resize(x, size)[..., rows[0]:rows[1], cols[0]:cols[1]]`` without the full-size tensor.

    ``x (B,C,h,w)`` -> ``(B,C,rows,cols)``; bilinear, align_corners False, the same arithmetic as
    ``F.interpolate`` up to float rounding.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x[..., rows[0] : rows[1], cols[0] : cols[1]]
    y0, y1, wy = _source_index(x.shape[-2], int(size[0]), *rows, x.device)
    x0, x1, wx = _source_index(x.shape[-1], int(size[1]), *cols, x.device)
    wy, wx = wy.to(x.dtype)[:, None], wx.to(x.dtype)
    band = torch.lerp(x[..., y0, :], x[..., y1, :], wy)  # (B,C,rows,w)
    return torch.lerp(band[..., x0], band[..., x1], wx)


#: Elements (K x tile²) of one float tile of :func:`predict_labels_tiled` by default: 16 MB.
TILE_ELEMENTS = 2**22


def predict_labels_tiled(
    model: nn.Module, images: Tensor, ori_size: Sequence[int], tile: int | None = None, **kwargs
) -> Tensor:
    """:func:`predict_labels` for images of any original size, in ``O(K x (network size + tile²))``
    memory instead of ``O(K x H0 x W0)``.

    The logits of every scale / flip are computed once at the network's resolution (bounded by
    the test pipeline's scale; large test images use ``mode="slide"`` there). Each ``tile x tile``
    block of the original size is then resized, softmaxed, averaged and argmaxed on its own;
    ``tile`` defaults to ``sqrt(TILE_ELEMENTS / K)``. Returns ``(B,H0,W0)`` class ids, ``uint8``
    when ``K <= 256`` (else ``int32``).
    """
    height, width = (int(s) for s in ori_size)
    maps = [logits.float() for logits in _tta_logits(model, images, **kwargs)]
    b, k = maps[0].shape[:2]
    tile = tile or max(32, math.isqrt(TILE_ELEMENTS // k))
    out = torch.empty(b, height, width, dtype=torch.uint8 if k <= 256 else torch.int32, device=images.device)
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            rows, cols = (y, min(y + tile, height)), (x, min(x + tile, width))
            total = sum(F.softmax(resize_window(m, (height, width), rows, cols), dim=1) for m in maps)
            out[:, rows[0] : rows[1], cols[0] : cols[1]] = total.argmax(1).to(out.dtype)
    return out
