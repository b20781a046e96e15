"""``ssaseg predict``: colourised masks and overlays for images, from a self-describing checkpoint."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..config import ConfigError, validate_config
from .build import build_model, class_meta
from .inference import predict_labels

__all__ = ["load_model_for_inference", "colorize", "overlay", "predict_files", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_model_for_inference(
    checkpoint: str | os.PathLike, cfg: dict | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, dict, dict[str, Any]]:
    """Rebuild the model from the config stored in ``checkpoint`` (or ``cfg``), load it, deploy it.

    Returns ``(model in eval mode on device, config, meta {"classes", "palette"})``.
    """
    from ..checkpoints import apply_state_dict, read_checkpoint, unwrap_state_dict
    from ..hub import inference_bundle, is_pretrained_source

    if is_pretrained_source(checkpoint):  # a save_pretrained directory or a Hub ID
        return inference_bundle(checkpoint, cfg, device)
    path = Path(checkpoint)
    ckpt = read_checkpoint(path)
    if cfg is None:
        cfg = ckpt.get("config")
        if not isinstance(cfg, dict):
            raise ConfigError(
                f"checkpoint {path} carries no config (not written by `ssaseg train`); pass --config CONFIG"
            )
        validate_config(cfg, f"config stored in {path}")
    model = build_model({**cfg, "model": {**cfg["model"], "checkpoint": None, "backbone_weights": None}})
    apply_state_dict(model, unwrap_state_dict(ckpt), path)
    model.deploy()
    model.eval().to(device)
    meta = ckpt.get("meta")
    if not meta:
        meta = class_meta(None, cfg["model"]["num_classes"])
    return model, cfg, meta


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3) uint8`` colours (255 = ignore -> black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    return lut[labels.astype(np.uint8)]


def overlay(image: np.ndarray, colors: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend an ``(H, W, 3) uint8`` image with a colour mask (mmseg's ``--opacity``)."""
    return (image.astype(np.float32) * (1 - opacity) + colors.astype(np.float32) * opacity).round().astype(np.uint8)


def _expand_inputs(inputs: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in directory {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return files


@torch.inference_mode()
def predict_files(
    checkpoint: str | os.PathLike,
    inputs: Iterable[str],
    out_dir: str | os.PathLike,
    cfg: dict | None = None,
    opacity: float = 0.5,
    device: str | None = None,
) -> list[Path]:
    """Write ``<stem>_mask.png`` (colourised prediction) and ``<stem>_overlay.png`` per input image."""
    from ..data import load_image
    from ..data.transforms import TestPipeline
    from ..hub import is_pretrained_source

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not Path(checkpoint).is_file() and not is_pretrained_source(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    files = _expand_inputs(inputs)
    model, cfg, meta = load_model_for_inference(checkpoint, cfg, dev)
    tp = cfg["data"]["test_pipeline"]
    pipeline = TestPipeline(tuple(tp["scale"]), tp["resize_to_multiple"], tuple(tp["mean"]), tuple(tp["std"]))
    ecfg = cfg["evaluation"]
    kwargs = {
        "mode": ecfg["mode"],
        "crop": tuple(ecfg["crop_size"]),
        "stride": tuple(ecfg["stride"]),
        "scales": tuple(ecfg["scales"]),
        "flip": bool(ecfg["flip"]),
        "resize_to_multiple": tp["resize_to_multiple"],
    }
    palette = np.asarray(meta["palette"], dtype=np.uint8)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    written = []
    for path in files:
        image = load_image(path)
        tensor, _ = pipeline(image)
        labels = predict_labels(model, tensor[None].to(dev), image.shape[:2], **kwargs)[0].cpu().numpy()
        colors = colorize(labels, palette)
        for suffix, arr in (("mask", colors), ("overlay", overlay(image, colors, opacity))):
            target = out / f"{path.stem}_{suffix}.png"
            Image.fromarray(arr).save(target)
            written.append(target)
    return written
