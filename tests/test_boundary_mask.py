"""boundary_mask (docs/algorithm.md §6.4.1) against the official OpenCV pipeline, bit for bit.

The oracle is ``cv2.Canny(label_uint8, 0.1, 0.2)`` -> zero a 6-px frame -> ``cv2.dilate`` with a
3x3 ones kernel -> ``> 50``, per image (tests/ssa_reference.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ssa_reference import opencv_boundary_mask, reference_boundary_mask

from ssaseg.classifiers.boundary import boundary_mask

pytestmark = pytest.mark.usefixtures("single_thread")

IGNORE = 255


def rectangle_labels(rng: np.random.Generator, h: int, w: int, num_classes: int) -> np.ndarray:
    """A random background class with random rectangles of random classes and of 255 on top."""
    label = np.full((h, w), rng.integers(num_classes), dtype=np.int64)
    for _ in range(rng.integers(2, 9)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
        label[y0:y1, x0:x1] = IGNORE if rng.random() < 0.25 else rng.integers(num_classes)
    return label


def blob_labels(rng: np.random.Generator, h: int, w: int, num_classes: int) -> np.ndarray:
    """Voronoi cells (irregular, diagonal boundaries and junctions); one cell in four is 255."""
    n = int(rng.integers(3, 12))
    seeds = rng.random((n, 2)) * (h, w)
    values = rng.integers(0, num_classes, n)
    values[rng.random(n) < 0.25] = IGNORE
    yy, xx = np.mgrid[0:h, 0:w]
    dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    return values[dist.argmin(0)]


def noise_labels(rng: np.random.Generator, h: int, w: int, num_classes: int) -> np.ndarray:
    """Per-pixel random labels incl. 255: every pixel is a junction; stresses the NMS ties."""
    values = np.append(np.arange(num_classes), IGNORE)
    return rng.choice(values, size=(h, w))


GENERATORS = [rectangle_labels, blob_labels, noise_labels]


def _check_batch(labels: np.ndarray) -> None:
    fast = boundary_mask(torch.from_numpy(labels), border=6, dilation=3)
    assert fast.dtype == torch.bool and fast.shape == labels.shape
    expected = reference_boundary_mask(torch.from_numpy(labels))
    mismatch = (fast != expected).nonzero().tolist()
    assert not mismatch, f"{len(mismatch)} pixels differ from OpenCV, first (b, y, x): {mismatch[:5]}"


CASES = [((h, w), k) for (h, w) in [(16, 20), (20, 16), (32, 32), (33, 57), (64, 48), (17, 13)] for k in (3, 150, 171)]


@pytest.mark.parametrize("size, num_classes", CASES + [((128, 128), 150)])
def test_matches_opencv_on_random_label_maps(size: tuple[int, int], num_classes: int) -> None:
    rng = np.random.default_rng(hash((size, num_classes)) % 2**32)
    h, w = size
    for generator in GENERATORS:
        labels = np.stack([generator(rng, h, w, num_classes) for _ in range(4)])
        _check_batch(labels)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (8, 8), (11, 30), (30, 11), (12, 12), (12, 40)])
def test_small_maps_are_all_frame(size: tuple[int, int]) -> None:
    """The 6-px frame covers every pixel when h <= 12 or w <= 12 ([0,6) and [h-6,h) overlap), so
    the mask is empty. The official crop-and-pad breaks for h or w < 12 (Q14); the fix must not."""
    rng = np.random.default_rng(size[0] * 100 + size[1])
    labels = np.stack([g(rng, *size, 20) for g in GENERATORS])
    fast = boundary_mask(torch.from_numpy(labels), border=6, dilation=3)
    assert fast.shape == labels.shape
    assert not fast.any()
    _check_batch(labels)


@pytest.mark.parametrize("size", [(13, 13), (13, 40), (14, 15)])
def test_just_above_frame_size(size: tuple[int, int]) -> None:
    """Only rows/cols [6, h-6) keep edges; dilation then widens the band by one pixel."""
    rng = np.random.default_rng(size[0] * 100 + size[1])
    for generator in GENERATORS:
        _check_batch(np.stack([generator(rng, *size, 20) for _ in range(3)]))


def _step_expected(h: int, w: int, j: int) -> np.ndarray:
    """Hand-derived mask of a vertical step between columns j and j+1 (docs/algorithm.md §6.4.1).

    Both columns j and j+1 have the same Sobel magnitude; the horizontal NMS keeps a pixel when
    m > m[left] and m >= m[right], so column j wins. The frame removes rows [0,6) and [h-6,h);
    the 3x3 dilation then covers columns j-1..j+1 and rows 5..h-6.
    """
    expected = np.zeros((h, w), dtype=bool)
    expected[5 : h - 5, j - 1 : j + 2] = True
    return expected


@pytest.mark.parametrize("left, right", [(1, 3), (3, 1), (0, 255), (7, 8)])
def test_straight_step(left: int, right: int) -> None:
    h, w, j = 24, 24, 11
    label = np.full((h, w), right, dtype=np.int64)
    label[:, : j + 1] = left
    expected = _step_expected(h, w, j)
    # the oracle agrees with the hand derivation ...
    np.testing.assert_array_equal(opencv_boundary_mask(label), expected)
    # ... and so does ssaseg, for the vertical step and for the horizontal one (transposed)
    fast = boundary_mask(torch.from_numpy(np.stack([label, label.T.copy()])))
    np.testing.assert_array_equal(fast[0].numpy(), expected)
    np.testing.assert_array_equal(fast[1].numpy(), expected.T)


def test_uniform_label_has_no_boundary() -> None:
    labels = torch.full((2, 32, 40), 4, dtype=torch.long)
    labels[1] = IGNORE
    assert not boundary_mask(labels).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_matches_opencv_on_cuda() -> None:
    """The GPU path must be bit-exact too (large label values stress float arithmetic in the NMS)."""
    rng = np.random.default_rng(11)
    labels = np.stack([g(rng, 64, 48, 171) for g in GENERATORS for _ in range(2)])
    fast = boundary_mask(torch.from_numpy(labels).cuda())
    assert fast.device.type == "cuda"
    np.testing.assert_array_equal(fast.cpu().numpy(), reference_boundary_mask(torch.from_numpy(labels)).numpy())
