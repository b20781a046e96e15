"""mmseg 0.30 training / test transforms on NumPy arrays.

Images are ``(H, W, 3) uint8`` RGB until :func:`to_tensor`, labels ``(H, W) uint8`` with 255 =
ignore. Every random draw goes through a ``numpy.random.RandomState`` passed in as ``rng`` (the
legacy API on purpose: mmseg draws from the global ``numpy.random`` with exactly these calls in
exactly this order, so a seeded ``RandomState`` reproduces mmseg's augmentation parameters
draw for draw). Without an explicit ``rng`` the global NumPy state is used; PyTorch seeds it per
DataLoader worker and ssaseg's trainer seeds it per sample (engine/loader.py).

Library choices: resizing uses OpenCV ``cv2.resize`` with ``INTER_LINEAR`` for images and
``INTER_NEAREST`` for labels, which is exactly what mmcv's ``imresize``/``imrescale`` call, so the
resampled pixels match mmseg bit for bit; the HSV round trip of PhotoMetricDistortion uses
``cv2.cvtColor`` (``RGB2HSV``/``HSV2RGB`` on uint8: hue in OpenCV's 0..179 units), the same
conversion mmcv's ``bgr2hsv``/``hsv2bgr`` wrap. Applying the RGB variants to RGB data gives the
same H, S, V as mmcv's BGR variants on BGR data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from .meta import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IGNORE_INDEX",
    "TrainPipeline",
    "TestPipeline",
    "rescale_size",
    "imrescale",
    "random_resize",
    "random_crop",
    "random_flip",
    "photometric_distortion",
    "resize_to_multiple",
    "to_tensor",
]

IGNORE_INDEX = 255


def _global_rng() -> np.random.RandomState:
    return np.random.mtrand._rand  # the RandomState behind np.random.* (seeded per worker/sample)


def rescale_size(height: int, width: int, scale: Sequence[float]) -> tuple[int, int]:
    """Output ``(h, w)`` of mmcv ``imrescale(img, scale)`` for a tuple scale (keep ratio).

    The image is scaled by ``min(max(scale) / long_side, min(scale) / short_side)`` so that it
    fits inside the (long, short) box; sizes are rounded half up (``int(x * f + 0.5)``).
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _resize(arr: np.ndarray, size_hw: tuple[int, int], nearest: bool) -> np.ndarray:
    if arr.shape[:2] == tuple(size_hw):
        return arr  # cv2.resize to the same size is an exact copy; skip it
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (size_hw[1], size_hw[0]), interpolation=interp)


def imrescale(
    image: np.ndarray, label: np.ndarray | None, scale: Sequence[float]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep-ratio resize of image (bilinear) and label (nearest) into the (long, short) ``scale`` box."""
    size = rescale_size(image.shape[0], image.shape[1], scale)
    return _resize(image, size, False), None if label is None else _resize(label, size, True)


def random_resize(
    image: np.ndarray,
    label: np.ndarray,
    scale: Sequence[int],
    ratio_range: Sequence[float],
    rng: np.random.RandomState | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``Resize(img_scale=scale, ratio_range=ratio_range, keep_ratio=True)``.

    Draws ``r ~ U(ratio_range)``, target box ``(int(scale[0] r), int(scale[1] r))``, then
    :func:`imrescale`.
    """
    rng = _global_rng() if rng is None else rng
    lo, hi = ratio_range
    ratio = rng.random_sample() * (hi - lo) + lo
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    return imrescale(image, label, target)  # type: ignore[return-value]


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    crop_size: Sequence[int],
    cat_max_ratio: float = 1.0,
    rng: np.random.RandomState | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``RandomCrop(crop_size=(h, w), cat_max_ratio)``.

    A window of at most ``crop_size`` is drawn uniformly. With ``cat_max_ratio < 1`` it is
    redrawn up to 10 times until the crop holds more than one non-ignored class and the most
    frequent one covers less than ``cat_max_ratio`` of the non-ignored pixels; after 10 misses
    the 11th window is used (mmseg's loop).
    """
    rng = _global_rng() if rng is None else rng
    ch, cw = crop_size
    margin_h, margin_w = max(image.shape[0] - ch, 0), max(image.shape[1] - cw, 0)

    def draw() -> tuple[int, int]:
        return rng.randint(0, margin_h + 1), rng.randint(0, margin_w + 1)

    y, x = draw()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            counts = np.bincount(label[y : y + ch, x : x + cw].ravel(), minlength=256)
            counts[ignore_index] = 0
            present = counts[counts > 0]
            if len(present) > 1 and present.max() / present.sum() < cat_max_ratio:
                break
            y, x = draw()
    return image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]


def random_flip(
    image: np.ndarray, label: np.ndarray, prob: float = 0.5, rng: np.random.RandomState | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg ``RandomFlip(prob)``: horizontal flip of both with probability ``prob`` (views)."""
    rng = _global_rng() if rng is None else rng
    if rng.rand() < prob:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg: float32 affine, clip to [0, 255], truncate to uint8.
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(
    image: np.ndarray,
    rng: np.random.RandomState | None = None,
    brightness_delta: int = 32,
    contrast_range: Sequence[float] = (0.5, 1.5),
    saturation_range: Sequence[float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion`` with its defaults, parameters and order.

    brightness (+U(-32, 32)) -> [contrast (xU(0.5, 1.5)) if mode == 1] -> saturation
    (S x U(0.5, 1.5)) -> hue (H + randint(-18, 18) mod 180, i.e. a shift in [-18, 17] as
    NumPy's exclusive upper bound gives in mmseg) -> [contrast if mode == 0]; each op applied with
    probability 0.5 (``randint(2)``), ``mode = randint(2)``. Every op clips to [0, 255] and
    truncates to uint8 like mmseg. ``image``: (H, W, 3) uint8 RGB.
    """
    rng = _global_rng() if rng is None else rng
    img = np.ascontiguousarray(image)
    if rng.randint(2):
        img = _convert(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    mode = rng.randint(2)
    if mode == 1 and rng.randint(2):
        img = _convert(img, alpha=rng.uniform(*contrast_range))
    if rng.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(*saturation_range))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + rng.randint(-hue_delta, hue_delta)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0 and rng.randint(2):
        img = _convert(img, alpha=rng.uniform(*contrast_range))
    return img


def resize_to_multiple(
    image: np.ndarray, label: np.ndarray | None, divisor: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """mmseg ``ResizeToMultiple(divisor)``: stretch H and W up to the next multiples of ``divisor``."""
    h, w = image.shape[:2]
    size = (-(-h // divisor) * divisor, -(-w // divisor) * divisor)
    return _resize(image, size, False), None if label is None else _resize(label, size, True)


def to_tensor(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float], pad_to: Sequence[int] | None = None
) -> torch.Tensor:
    """Normalize ``(H, W, 3) uint8`` RGB as ``(x - mean) / std`` -> ``(3, H, W) float32``.

    ``pad_to=(h, w)`` then pads bottom/right with 0 (mmseg pads after Normalize, so the pad
    value 0 is the mean colour). Done in NumPy: single-threaded, so DataLoader workers and a
    busy main process do not contend for torch's intra-op thread pool on these small arrays.
    """
    h, w = image.shape[:2]
    out_h, out_w = (h, w) if pad_to is None else (max(pad_to[0], h), max(pad_to[1], w))
    out = np.zeros((3, out_h, out_w), dtype=np.float32)
    mean_ = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    inv_std = (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32).reshape(3, 1, 1)
    chw = out[:, :h, :w]
    np.subtract(image.transpose(2, 0, 1), mean_, out=chw, dtype=np.float32)
    np.multiply(chw, inv_std, out=chw)
    return torch.from_numpy(out)


def _pad_label(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    h, w = label.shape
    if (h, w) == tuple(size):
        return np.ascontiguousarray(label)
    out = np.full((max(size[0], h), max(size[1], w)), IGNORE_INDEX, dtype=label.dtype)
    out[:h, :w] = label
    return out


@dataclass
class TrainPipeline:
    """Resize -> RandomCrop -> RandomFlip -> PhotoMetricDistortion -> Normalize -> Pad (mmseg order).

    ``scale`` is mmseg's ``img_scale`` (long, short); ``crop_size`` is (h, w).
    ``__call__(image (H,W,3) uint8, label (H,W) uint8, rng) -> (image (3,h,w) float32,
    label (h,w) int64)`` with ``(h, w) = crop_size``; padding is 0 (image) / 255 (label).
    """

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] | None = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.RandomState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rng = _global_rng() if rng is None else rng
        if self.ratio_range is None:
            image, label = imrescale(image, label, self.scale)  # type: ignore[assignment]
        else:
            image, label = random_resize(image, label, self.scale, self.ratio_range, rng)
        image, label = random_crop(image, label, self.crop_size, self.cat_max_ratio, rng)
        image, label = random_flip(image, label, self.flip_prob, rng)
        if self.photometric:
            image = photometric_distortion(image, rng)
        tensor = to_tensor(image, self.mean, self.std, pad_to=self.crop_size)
        return tensor, torch.from_numpy(_pad_label(label, self.crop_size)).long()


@dataclass
class TestPipeline:
    """Resize keeping ratio into ``scale`` -> optional ResizeToMultiple -> Normalize.

    ``__call__(image (H0,W0,3) uint8, label (H0,W0) uint8 | None) -> (image (3,h,w) float32,
    label (H0,W0) int64 | None)``: the label stays at the original size (mmseg evaluates
    there). Deterministic.
    """

    __test__ = False  # not a pytest test class despite the name

    scale: tuple[int, int] = (2048, 512)
    resize_to_multiple: int | None = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None = None, rng: np.random.RandomState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        image, _ = imrescale(image, None, self.scale)
        if self.resize_to_multiple:
            image, _ = resize_to_multiple(image, None, self.resize_to_multiple)
        tensor = to_tensor(image, self.mean, self.std)
        return tensor, None if label is None else torch.from_numpy(np.ascontiguousarray(label)).long()
