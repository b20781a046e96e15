"""Boundary mask of a label map, bit-exact with the reference's OpenCV pipeline (docs/algorithm.md §6.4.1).

The reference runs ``cv2.Canny(label_uint8, 0.1, 0.2)`` on the CPU for every image, zeroes a
6-pixel frame, dilates with a 3x3 ones kernel and thresholds at 50. OpenCV floors both Canny
thresholds to 0, so every non-maximum-suppressed pixel with a non-zero gradient is a strong edge
and hysteresis does nothing. What is left is integer Sobel + OpenCV's integer non-maximum
suppression, which this module reproduces with tensor ops on the label's own device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: round(tan(22.5 deg) * 2**15), OpenCV's fixed-point NMS constant.
_TG22 = 13573
_SHIFT = 15


def _replicate_pad(x: Tensor) -> Tensor:
    """Pad the last two dims of an integer tensor by one pixel, replicating the border."""
    h, w = x.shape[-2:]
    rows = torch.arange(-1, h + 1, device=x.device).clamp(0, h - 1)
    cols = torch.arange(-1, w + 1, device=x.device).clamp(0, w - 1)
    return x[..., rows, :][..., :, cols]


def _sobel(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Integer 3x3 Sobel (correlation) with replicate border. labels (B,h,w) -> dx, dy (B,h,w) int64."""
    p = _replicate_pad(labels.long())
    h, w = labels.shape[-2:]

    def at(dr: int, dc: int) -> Tensor:  # neighbour at row offset dr, column offset dc
        return p[..., 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    dx = (at(-1, 1) - at(-1, -1)) + 2 * (at(0, 1) - at(0, -1)) + (at(1, 1) - at(1, -1))
    dy = (at(1, -1) - at(-1, -1)) + 2 * (at(1, 0) - at(-1, 0)) + (at(1, 1) - at(-1, 1))
    return dx, dy


def canny_edges(labels: Tensor) -> Tensor:
    """OpenCV ``Canny(labels, 0.1, 0.2)`` (aperture 3, L1) on integer maps. (B,h,w) -> (B,h,w) bool."""
    dx, dy = _sobel(labels)
    ax, ay = dx.abs(), dy.abs()
    mag = ax + ay
    h, w = mag.shape[-2:]
    padded = F.pad(mag, (1, 1, 1, 1))  # magnitudes outside the image are 0 for the comparisons

    def nb(dr: int, dc: int) -> Tensor:
        return padded[..., 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    ay_fixed = ay << _SHIFT
    tg22 = ax * _TG22
    tg67 = tg22 + (ax << (_SHIFT + 1))
    horizontal = ay_fixed < tg22
    vertical = ~horizontal & (ay_fixed > tg67)
    keep_h = (mag > nb(0, -1)) & (mag >= nb(0, 1))
    keep_v = (mag > nb(-1, 0)) & (mag >= nb(1, 0))
    # Diagonal: s = -1 when dx and dy have opposite signs; compare (row-1, col-s) and (row+1, col+s).
    opposite = (dx < 0) != (dy < 0)
    keep_same = (mag > nb(-1, -1)) & (mag > nb(1, 1))
    keep_opposite = (mag > nb(-1, 1)) & (mag > nb(1, -1))
    keep_d = torch.where(opposite, keep_opposite, keep_same)
    kept = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    return kept & (mag > 0)


def boundary_mask(labels: Tensor, border: int = 6, dilation: int = 3) -> Tensor:
    """Boundary band used by the response distillation.

    Args:
        labels: (B, h, w) integer label map at feature resolution, ignore value included (ignore
            regions make edges too, as in the reference).
        border: width of the frame that is zeroed before dilation.
        dilation: side of the square max filter (out-of-image pixels count as 0).
    Returns:
        (B, h, w) bool.
    """
    if labels.dim() != 3:
        raise ValueError(f"boundary_mask expects labels of shape (B, h, w), got {tuple(labels.shape)}")
    edges = canny_edges(labels)
    h, w = labels.shape[-2:]
    rows = torch.arange(h, device=labels.device)
    cols = torch.arange(w, device=labels.device)
    inner_rows = (rows >= border) & (rows < h - border)
    inner_cols = (cols >= border) & (cols < w - border)
    edges = edges & inner_rows[:, None] & inner_cols[None, :]
    dilated = F.max_pool2d(edges[:, None].float(), dilation, stride=1, padding=dilation // 2)
    return dilated[:, 0] > 0
