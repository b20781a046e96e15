"""Statistical and parity tests of the mmseg 0.30 transforms in ssaseg.data.transforms."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from ssaseg.data.transforms import (
    TestPipeline,
    TrainPipeline,
    imrescale,
    photometric_distortion,
    random_crop,
    random_flip,
    random_resize,
    rescale_size,
    resize_to_multiple,
)


def _blocks(h: int, w: int, values: list[int], seed: int = 0, block: int = 8) -> np.ndarray:
    """A label of random ``block``-sized tiles drawn from ``values``."""
    rs = np.random.RandomState(seed)
    tiles = rs.choice(values, size=(-(-h // block), -(-w // block))).astype(np.uint8)
    return np.kron(tiles, np.ones((block, block), np.uint8))[:h, :w]


def test_rescale_size_matches_mmcv_rule():
    # mmcv.rescale_size: factor = min(long/max(h,w), short/min(h,w)); int(x*f + 0.5)
    assert rescale_size(512, 683, (2048, 512)) == (512, 683)
    assert rescale_size(375, 500, (520, 520)) == (390, 520)
    assert rescale_size(256, 2000, (2048, 512)) == (262, 2048)  # long side binds
    assert rescale_size(100, 150, (1024, 256)) == (256, 384)


def test_random_resize_honours_ratio_range():
    image = np.zeros((48, 64, 3), np.uint8)
    label = np.zeros((48, 64), np.uint8)
    rng = np.random.RandomState(0)
    shorts, aspect = [], []
    for _ in range(400):
        img, lab = random_resize(image, label, (256, 64), (0.5, 2.0), rng)
        assert img.shape[:2] == lab.shape
        shorts.append(img.shape[0])
        aspect.append(img.shape[1] / img.shape[0])
    shorts = np.array(shorts)
    # short target is int(64 r) with r in [0.5, 2]: 32..128 rows (+-1 for rounding)
    assert shorts.min() >= 31 and shorts.max() <= 129
    assert shorts.min() <= 36 and shorts.max() >= 124  # both ends are reached
    assert np.allclose(aspect, 64 / 48, atol=0.05)  # keep ratio


def test_cat_max_ratio_honoured_when_achievable():
    # class 1 everywhere, class 2 in a band: about half of the random 32x32 windows hold
    # >= 25 % of class 2, so 11 draws almost always find an acceptable crop.
    label = np.ones((64, 96), np.uint8)
    label[:, 40:60] = 2
    image = np.zeros((64, 96, 3), np.uint8)

    def ok(lab: np.ndarray) -> bool:
        counts = np.bincount(lab.ravel(), minlength=256)[:255]
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < 0.75

    rng = np.random.RandomState(0)
    with_cmr = np.mean([ok(random_crop(image, label, (32, 32), 0.75, rng)[1]) for _ in range(300)])
    without = np.mean([ok(random_crop(image, label, (32, 32), 1.0, rng)[1]) for _ in range(300)])
    assert with_cmr >= 0.98
    assert without < 0.7


def test_cat_max_ratio_ignores_255():
    label = np.full((40, 40), 255, np.uint8)
    label[:, :2] = 0
    label[:, 2:4] = 1  # two classes, 50/50 among non-ignored pixels: always acceptable
    image = np.zeros((40, 40, 3), np.uint8)
    rng = np.random.RandomState(1)
    for _ in range(20):
        _, lab = random_crop(image, label, (40, 40), 0.75, rng)
        assert lab.shape == (40, 40)


def test_crop_matches_mmseg_loop_draw_for_draw():
    """Same RandomState stream as mmseg's ``RandomCrop.__call__`` (10 retries, then the 11th box)."""
    label = _blocks(70, 90, [0, 1, 2, 255], seed=3, block=30)
    image = np.dstack([label] * 3)
    for seed in range(20):
        ref = np.random.RandomState(seed)

        def bbox():
            y = ref.randint(0, 70 - 32 + 1)
            x = ref.randint(0, 90 - 32 + 1)
            return y, x

        y, x = bbox()
        for _ in range(10):
            labels, cnt = np.unique(label[y : y + 32, x : x + 32], return_counts=True)
            cnt = cnt[labels != 255]
            if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < 0.75:
                break
            y, x = bbox()
        img, lab = random_crop(image, label, (32, 32), 0.75, np.random.RandomState(seed))
        np.testing.assert_array_equal(lab, label[y : y + 32, x : x + 32])
        np.testing.assert_array_equal(img[..., 0], lab)


def _mmseg_photometric_bgr(img: np.ndarray, random: np.random.RandomState) -> np.ndarray:
    """mmseg 0.30 PhotoMetricDistortion on a BGR image (mmcv.bgr2hsv = cv2 BGR2HSV)."""

    def convert(x, alpha=1, beta=0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast(x):
        return convert(x, alpha=random.uniform(0.5, 1.5)) if random.randint(2) else x

    if random.randint(2):
        img = convert(img, beta=random.uniform(-32, 32))
    mode = random.randint(2)
    if mode == 1:
        img = contrast(img)
    if random.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=random.uniform(0.5, 1.5))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if random.randint(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + random.randint(-18, 18)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        img = contrast(img)
    return img


def test_photometric_distortion_matches_mmseg_on_bgr():
    rgb = np.random.RandomState(7).randint(0, 256, (24, 20, 3)).astype(np.uint8)
    changed = 0
    for seed in range(40):
        ours = photometric_distortion(rgb, np.random.RandomState(seed))
        ref = _mmseg_photometric_bgr(rgb[:, :, ::-1].copy(), np.random.RandomState(seed))[:, :, ::-1]
        np.testing.assert_array_equal(ours, ref)
        changed += int(not np.array_equal(ours, rgb))
        assert ours.dtype == np.uint8 and ours.shape == rgb.shape
    assert changed > 30  # P(no op applied) = 1/16


def test_flip_probability_and_consistency():
    image = np.tile(np.arange(16, dtype=np.uint8)[None, :, None], (4, 1, 3))
    label = np.tile(np.arange(16, dtype=np.uint8)[None, :], (4, 1))
    rng = np.random.RandomState(0)
    flips = 0
    for _ in range(400):
        img, lab = random_flip(image, label, 0.5, rng)
        np.testing.assert_array_equal(img[..., 0], lab)
        flips += int(lab[0, 0] == 15)
    assert 160 < flips < 240


@pytest.mark.parametrize("seed", range(6))
def test_train_pipeline_never_interpolates_labels_and_pads_with_ignore(seed):
    values = [3, 7, 11]
    label = _blocks(40, 56, values, seed=seed, block=5)
    image = np.random.RandomState(seed).randint(0, 256, (40, 56, 3)).astype(np.uint8)
    # scale (64, 24): the resized image is ~12..48 rows, often smaller than the 48x48 crop
    pipe = TrainPipeline(scale=(64, 24), ratio_range=(0.5, 2.0), crop_size=(48, 48))
    rng = np.random.RandomState(seed)
    padded = 0
    for _ in range(10):
        img, lab = pipe(image, label, rng)
        assert img.shape == (3, 48, 48) and lab.shape == (48, 48)
        assert set(lab.unique().tolist()) <= set(values) | {255}
        valid = lab != 255  # content has no 255, so the ignore pixels are exactly the padding
        h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
        assert valid[:h, :w].all() and not valid[h:].any() and not valid[:, w:].any()
        assert (img[:, h:] == 0).all() and (img[:, :, w:] == 0).all()
        padded += int(h < 48)
    assert padded > 0


def test_resize_uses_cv2_linear_for_images_and_nearest_for_labels():
    image = np.random.RandomState(0).randint(0, 256, (30, 40, 3)).astype(np.uint8)
    label = _blocks(30, 40, [1, 5, 9], block=3)
    img, lab = imrescale(image, label, (80, 60))
    np.testing.assert_array_equal(img, cv2.resize(image, (80, 60), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(lab, cv2.resize(label, (80, 60), interpolation=cv2.INTER_NEAREST))
    img, lab = resize_to_multiple(image, label, 32)
    assert img.shape[:2] == (32, 64) and lab.shape == (32, 64)
    assert set(np.unique(lab)) <= {1, 5, 9}


def test_test_pipeline_resizes_image_and_keeps_original_label():
    image = np.random.RandomState(0).randint(0, 256, (50, 70, 3)).astype(np.uint8)
    label = _blocks(50, 70, [0, 4, 255])
    img, lab = TestPipeline(scale=(200, 100), resize_to_multiple=32)(image, label)
    assert img.shape == (3, 128, 160)  # 100x140 keep ratio, then up to multiples of 32
    assert lab.shape == (50, 70)
    np.testing.assert_array_equal(lab.numpy(), label)
    img, _ = TestPipeline(scale=(520, 520), resize_to_multiple=None)(image, None)
    assert img.shape == (3, 371, 520)  # long side -> 520
    mean = np.array([123.675, 116.28, 103.53])
    std = np.array([58.395, 57.12, 57.375])
    same, _ = TestPipeline(scale=(70, 50), resize_to_multiple=None)(image, None)
    np.testing.assert_allclose(same.numpy(), ((image - mean) / std).transpose(2, 0, 1), atol=1e-5)
