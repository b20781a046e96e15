"""A small, real-pixel demo dataset built offline from data bundled in PyPI packages.

Each 128x128 image is a crop of a photo shipped with scikit-image (``astronaut``, ``coffee``,
``rocket``, ``chelsea``) or scikit-learn (``china.jpg``, ``flower.jpg``) as background, one or
two regions of scikit-image's grey textures (``brick``, ``grass``, ``gravel``) tinted in a
class colour, and one to three handwritten digits from scikit-learn's ``load_digits`` (8x8,
upscaled bicubically to 40-80 px and thresholded into masks) filled with tinted photo patches.
14 classes: background, brick, grass, gravel, digit 0..9; labels are the class ids directly
(no reduce_zero_label).

Train and validation differ in source: validation uses other photos (chelsea, flower vs
astronaut, coffee, rocket, china), other digit samples (every 4th of the 1,797) and the bottom
band of each texture (train: the top 352 rows).

The dataset is written in ADE20K's layout (``images/{training,validation}/*.jpg``,
``annotations/{training,validation}/*.png``) under ``<cache>/demo-v1``. It is built in a
temporary directory and renamed into place with a version stamp written last, so a partial
or old cache is never used: a missing or different stamp triggers a rebuild. Building is
deterministic (fixed seeds, same bytes every time) and takes about a second.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "DEMO_CLASSES",
    "DEMO_PALETTE",
    "DEMO_VERSION",
    "build_demo_dataset",
    "default_cache_dir",
    "ensure_demo_dataset",
]

DEMO_VERSION = 1
DEMO_CLASSES: tuple[str, ...] = ("background", "brick", "grass", "gravel") + tuple(f"digit {d}" for d in range(10))
DEMO_PALETTE: np.ndarray = np.array(
    [
        [0, 0, 0],
        [178, 34, 34],
        [34, 139, 34],
        [128, 128, 128],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    dtype=np.uint8,
)

SIZE = 128
NUM_IMAGES = {"training": 180, "validation": 45}
_SEEDS = {"training": 1, "validation": 2}
_STAMP = ".ssaseg-demo-version"
_TEXTURE_TINT = {1: (190, 95, 70), 2: (90, 170, 60), 3: (160, 150, 130)}
_TEXTURE_TRAIN_ROWS = 352  # textures are 512x512: rows [0, 352) train, [352, 512) validation
# Digit fill colours (one per digit, RGB) so that shape and colour both carry the class.
_DIGIT_TINT = np.array(
    [[220, 40, 40], [40, 200, 60], [240, 220, 40], [30, 110, 230], [245, 140, 40],
     [150, 50, 200], [40, 220, 220], [235, 60, 220], [170, 240, 70], [250, 170, 190]],
    dtype=np.float32,
)


def _stamp_text() -> str:
    counts = ", ".join(f"{k}={v}" for k, v in NUM_IMAGES.items())
    return f"ssaseg demo dataset v{DEMO_VERSION}: {SIZE}x{SIZE}, {len(DEMO_CLASSES)} classes, {counts}\n"


def default_cache_dir() -> Path:
    """``$SSASEG_CACHE`` if set, else ``~/.cache/ssaseg``."""
    env = os.environ.get("SSASEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ssaseg"


def _package_dir(name: str) -> Path:
    """Installed location of a package, found without importing it (scikit-learn's import is slow)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the demo dataset is built from sample data shipped with scikit-image and scikit-learn; "
            f"{name} is not installed (pip install 'ssaseg[demo]')"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def _sources(split: str) -> tuple[list[np.ndarray], dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """(photos RGB uint8, textures {class: grey uint8}, digit images (N,8,8) in [0,1], digit labels).

    The files are read straight from the installed packages (the same files
    ``skimage.data.*()``, ``sklearn.datasets.load_sample_images()`` and ``load_digits()`` read).
    """
    skd = _package_dir("skimage") / "data"
    skl = _package_dir("sklearn") / "datasets"
    if split == "training":
        photos = [_read_rgb(skd / n) for n in ("astronaut.png", "coffee.png", "rocket.jpg")]
        photos.append(_read_rgb(skl / "images" / "china.jpg"))
        rows = slice(0, _TEXTURE_TRAIN_ROWS)
    else:
        photos = [_read_rgb(skd / "chelsea.png"), _read_rgb(skl / "images" / "flower.jpg")]
        rows = slice(_TEXTURE_TRAIN_ROWS, None)
    textures = {c: _read_grey(skd / f"{n}.png")[rows] for c, n in ((1, "brick"), (2, "grass"), (3, "gravel"))}
    with gzip.open(skl / "data" / "digits.csv.gz", "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)  # 1797 rows: 64 pixels (0..16), label
    keep = (np.arange(len(table)) % 4 == 0) == (split == "validation")
    table = table[keep]
    return photos, textures, table[:, :64].reshape(-1, 8, 8) / 16.0, table[:, 64].astype(np.int64)


def _square_crop(rng: np.random.RandomState, img: np.ndarray, side: int, out: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = min(side, h, w)
    y, x = rng.randint(0, h - side + 1), rng.randint(0, w - side + 1)
    return cv2.resize(img[y : y + side, x : x + side], (out, out), interpolation=cv2.INTER_AREA)


def _region_mask(rng: np.random.RandomState) -> np.ndarray:
    """A random convex polygon or ellipse covering roughly 10-45 % of the image."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if rng.rand() < 0.5:
        center = tuple(int(v) for v in rng.randint(16, SIZE - 16, size=2))
        axes = tuple(int(v) for v in rng.randint(22, 60, size=2))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    else:
        pts = rng.randint(-16, SIZE + 16, size=(int(rng.randint(3, 7)), 2)).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    return mask.astype(bool)


def _render(rng: np.random.RandomState, photos, textures, digits, digit_labels) -> tuple[np.ndarray, np.ndarray]:
    """One (image (128,128,3) uint8 RGB, label (128,128) uint8) sample."""
    photo = photos[rng.randint(len(photos))]
    side = int(min(photo.shape[:2]) * rng.uniform(0.35, 1.0))
    image = _square_crop(rng, photo, side, SIZE).astype(np.float32)
    label = np.zeros((SIZE, SIZE), np.uint8)

    for cls in rng.choice([1, 2, 3], size=rng.randint(1, 3), replace=False):
        mask = _region_mask(rng)
        grey = _square_crop(rng, textures[cls], int(rng.randint(96, 192)), SIZE).astype(np.float32) / 255.0
        tint = np.asarray(_TEXTURE_TINT[cls], np.float32) * rng.uniform(0.8, 1.2)
        layer = grey[:, :, None] * tint * 1.5
        image = np.where(mask[:, :, None], layer, image)
        label[mask] = cls

    for _ in range(rng.randint(2, 5)):
        i = rng.randint(len(digits))
        s = int(rng.randint(40, 81))
        up = cv2.resize(digits[i].astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
        glyph = up > 0.5
        patch = _square_crop(rng, photos[rng.randint(len(photos))], s, s).astype(np.float32)
        fill = 0.4 * patch + 0.6 * _DIGIT_TINT[digit_labels[i]] * rng.uniform(0.75, 1.15)
        y, x = rng.randint(0, SIZE - s + 1), rng.randint(0, SIZE - s + 1)
        window = image[y : y + s, x : x + s]
        window[glyph] = fill[glyph]
        label[y : y + s, x : x + s][glyph] = 4 + digit_labels[i]

    return np.clip(image, 0, 255).astype(np.uint8), label


def build_demo_dataset(out_dir: str | os.PathLike) -> Path:
    """Write the demo dataset into ``out_dir`` (created; must not hold another dataset). Returns it."""
    out = Path(out_dir)
    for split, count in NUM_IMAGES.items():
        rng = np.random.RandomState(_SEEDS[split])
        photos, textures, digits, digit_labels = _sources(split)
        img_dir, ann_dir = out / "images" / split, out / "annotations" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = _render(rng, photos, textures, digits, digit_labels)
            stem = f"demo_{split}_{i:04d}"
            ok_img, jpg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            ok_lab, png = cv2.imencode(".png", label)
            if not (ok_img and ok_lab):
                raise RuntimeError(f"OpenCV failed to encode demo sample {stem}")
            (img_dir / f"{stem}.jpg").write_bytes(jpg.tobytes())
            (ann_dir / f"{stem}.png").write_bytes(png.tobytes())
    (out / "classes.txt").write_text("\n".join(DEMO_CLASSES) + "\n")
    return out


def _is_current(root: Path) -> bool:
    stamp = root / _STAMP
    return stamp.is_file() and stamp.read_text() == _stamp_text()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def _remove_abandoned_builds(cache: Path) -> None:
    """Delete the temporary folders of builds whose process died (killed mid-build).

    The folder name carries the builder's pid; a folder without one (older versions) or from
    another machine sharing the cache is removed once it is a day old.
    """
    for entry in cache.glob(".demo-v*.building-*"):
        pid_part = entry.name.rsplit(".building-", 1)[1].split("-", 1)[0]
        try:
            abandoned = not _process_alive(int(pid_part))
        except ValueError:
            abandoned = False
        try:
            abandoned = abandoned or time.time() - entry.stat().st_mtime > 86400
        except OSError:
            continue
        if abandoned:
            shutil.rmtree(entry, ignore_errors=True)


def ensure_demo_dataset(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the demo dataset root ``<cache_dir>/demo-v1``, building it first if needed.

    ``cache_dir`` defaults to :func:`default_cache_dir`. Safe against concurrent callers (each
    builds in its own temporary directory; the first rename wins) and against interrupted
    builds (the stamp is written last, inside the temporary directory).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = cache / f"demo-v{DEMO_VERSION}"
    _remove_abandoned_builds(cache)
    if _is_current(root):
        return root
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".demo-v{DEMO_VERSION}.building-{os.getpid()}-", dir=cache))
    try:
        build_demo_dataset(tmp)
        (tmp / _STAMP).write_text(_stamp_text())
        if _is_current(root):  # a concurrent caller finished first
            return root
        if root.exists():  # stale or partial: move aside first so the rename below is atomic
            stale = Path(tempfile.mkdtemp(prefix=f".demo-v{DEMO_VERSION}.stale-", dir=cache))
            try:
                os.replace(root, stale / "old")
            except OSError:
                pass  # another process replaced it meanwhile; checked below
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if not _is_current(root):  # lost a race to a process that wrote something else
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
