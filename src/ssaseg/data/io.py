"""Image and label file reading with errors that name the file.

Decoding uses Pillow (not OpenCV) because Pillow raises on truncated or corrupt files where
``cv2.imread`` prints a warning and returns a partial image or ``None``, and because Pillow
reports the file's mode (needed to read palette labels as indices). Conversions:

* images: ``RGB`` as is; ``L``/``1``/``P``/``PA``/``LA``/``RGBA``/``CMYK``/``YCbCr`` via
  ``Image.convert("RGB")`` (alpha is dropped, not composited — as OpenCV's ``IMREAD_COLOR``
  does in mmseg; palette images use their colours); 16-bit / 32-bit integer grey (``I;16*``,
  ``I``) is scaled to 8 bits as ``round(v / 256)`` clipped to 255, the same conversion OpenCV
  applies to 16-bit files under ``IMREAD_COLOR`` (so mmseg would see the same pixels), then
  replicated to 3 channels. EXIF orientation is not applied: labels are drawn on the stored
  pixel grid.
* labels: single-channel only. ``L``/``P``/``1`` give their stored values (for ``P`` the
  palette *indices*, never the colours, like mmseg's Pillow label loader); 16-bit labels are
  accepted when every value fits in uint8.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DataError", "load_image", "load_label"]

_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class DataError(ValueError):
    """A dataset file exists but its content is unusable (corrupt, wrong mode, bad values)."""


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        if path.is_symlink():
            raise DataError(f"{what} {path} is a symbolic link that does not resolve to a file "
                            "(a link loop or a dangling target)")
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        img = Image.open(path)
        img.load()  # decode now so that truncated / corrupt data raises here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {what} file {path}: {exc}") from exc
    return img


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB (see the module docstring for modes)."""
    path = Path(path)
    with _open(path, "image") as img:
        if img.mode == "RGB":
            return np.array(img)
        if img.mode in _INT_MODES:
            grey = np.asarray(img).astype(np.float32)
            grey = np.clip(np.rint(grey / 256.0), 0, 255).astype(np.uint8)
            return np.repeat(grey[:, :, None], 3, axis=2)
        if img.mode == "F":
            raise DataError(f"image {path} is a floating-point image (mode F); expected an 8/16-bit image")
        return np.array(img.convert("RGB"))


def load_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as ``(H, W) uint8`` class indices (mode L, P, 1, or 16-bit with values <= 255)."""
    path = Path(path)
    with _open(path, "label") as img:
        mode = img.mode
        if mode in ("L", "P", "1"):
            return np.array(img, dtype=np.uint8)
        if mode in _INT_MODES:
            arr = np.asarray(img)
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise DataError(
                    f"label {path} (mode {mode}) has values in [{arr.min()}, {arr.max()}]; "
                    "labels must be class indices 0..255 (255 = ignore)"
                )
            return arr.astype(np.uint8)
    raise DataError(
        f"label {path} has mode {mode}; expected a single-channel index image (mode L or P), "
        "not colour-coded labels"
    )
