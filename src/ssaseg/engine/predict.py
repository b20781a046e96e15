"""``ssaseg predict``: class-id masks and overlays for images, from a self-describing checkpoint.

Outputs, per input ``<rel>/<stem>.<ext>`` (``<rel>`` is the input's path below the deepest folder
common to all inputs, so inputs with the same name in different folders never collide):

* ``<out>/<rel>/<stem>_mask.png``: a palette PNG whose pixel values are the class ids and whose
  palette is the classes' colours (viewers show colours, ``np.array(Image.open(f))`` gives ids);
  16-bit greyscale ids when there are more than 256 classes.
* ``<out>/<rel>/<stem>_overlay.png``: the image blended with the colours (``--opacity``).

Two inputs that differ only by extension (``x.jpg``, ``x.png``) keep it: ``x.jpg_mask.png``.
Existing outputs are never overwritten without ``overwrite=True`` (checked before any work);
every file is written atomically. An unreadable input is reported and skipped. Predictions are
computed by :func:`~ssaseg.engine.inference.predict_labels_tiled`, so the memory does not grow
with K x the original image size; the network input is bounded by :data:`MAX_NETWORK_PIXELS`.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..config import ConfigError, validate_config
from ..data.meta import IMAGE_SUFFIXES
from ..data.meta import class_meta
from .build import build_model
from .inference import predict_labels_tiled
from .state import check_finite_weights

__all__ = [
    "load_model_for_inference",
    "colorize",
    "predict_files",
    "PredictResult",
    "output_stems",
    "MAX_NETWORK_PIXELS",
]

#: Largest test-pipeline scale (h x w) fed to the network: a config (e.g. stored in a checkpoint)
#: asking for more is refused instead of allocating gigabytes.
MAX_NETWORK_PIXELS = 4096 * 4096


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
    state = unwrap_state_dict(ckpt)
    check_finite_weights(state, path)
    model = build_model(cfg, load_weights=False)
    apply_state_dict(model, state, path)
    model.deploy()
    model.eval().to(device)
    meta = ckpt.get("meta")
    if not meta:
        meta = class_meta(None, cfg["model"]["num_classes"])
    return model, cfg, meta


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3) uint8`` colours (ids without a colour, e.g. 255 = ignore -> black)."""
    lut = np.zeros((max(256, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    return lut[labels.astype(np.intp)]


def _expand_inputs(inputs: Iterable[str], out_dir: Path) -> tuple[list[Path], Path]:
    """The image files of ``inputs`` (files, or folders searched recursively, leaving out
    ``out_dir``: earlier predictions are not inputs) and the deepest folder common to all of them."""
    files: list[Path] = []
    roots: list[Path] = []
    out_dir = out_dir.resolve()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_SUFFIXES and not f.resolve().is_relative_to(out_dir) and not f.is_dir()
            )
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in directory {p}")
            files += found
            roots.append(p.resolve())
        elif p.is_file():
            files.append(p)
            roots.append(p.resolve().parent)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    unique = list(dict.fromkeys(files))
    try:
        common = Path(os.path.commonpath(roots))
    except ValueError:  # different drives
        common = Path(os.sep)
    return unique, common


def output_stems(files: list[Path], common: Path) -> dict[Path, Path]:
    """Input -> output path without the ``_mask.png`` / ``_overlay.png`` ending (see the module
    docstring); raises ``ValueError`` if two inputs would still write the same files."""
    rel = {}
    for f in files:
        r = f.resolve()
        rel[f] = r.relative_to(common) if r.is_relative_to(common) else Path(r.name)
    by_stem: dict[Path, list[Path]] = {}
    for f, r in rel.items():
        by_stem.setdefault(r.with_suffix(""), []).append(f)
    stems = {}
    for stem, group in by_stem.items():
        for f in group:
            stems[f] = stem if len(group) == 1 else rel[f]  # keep the extension: x.jpg_mask.png
    seen: dict[Path, Path] = {}
    for f, stem in stems.items():
        if stem in seen:
            raise ValueError(f"inputs {seen[stem]} and {f} would write the same outputs {stem}_mask.png; "
                             "rename one or predict them in separate runs")
        seen[stem] = f
    return stems


def _check_network_size(cfg: dict, source: str) -> None:
    tp, ecfg = cfg["data"]["test_pipeline"], cfg["evaluation"]
    scale = [int(s) for s in tp["scale"]]
    ratio = max((float(r) for r in ecfg["scales"]), default=1.0)
    pixels = scale[0] * scale[1] * ratio * ratio
    if pixels > MAX_NETWORK_PIXELS:
        raise ConfigError(
            f"{source}: data.test_pipeline.scale {scale} with evaluation.scales up to {ratio} feeds the network "
            f"{pixels / 1e6:.0f} M pixels per image, more than the limit of {MAX_NETWORK_PIXELS / 1e6:.1f} M "
            "(4096 x 4096); pass --config with a smaller data.test_pipeline.scale (large images are "
            "predicted at that scale and upsampled tile by tile)"
        )


def _label_png(labels: np.ndarray, palette: np.ndarray) -> Any:
    from PIL import Image

    if len(palette) <= 256:
        img = Image.fromarray(labels.astype(np.uint8))  # mode L; putpalette makes it P, values kept
        flat = np.zeros((256, 3), dtype=np.uint8)
        flat[: len(palette)] = palette
        img.putpalette(flat.reshape(-1).tolist())
        return img
    return Image.fromarray(labels.astype(np.uint16))  # more classes than a palette holds: 16-bit ids


def _save_png(img: Any, path: Path) -> None:
    from ..fileio import atomic_write

    atomic_write(path, lambda fh: img.save(fh, format="PNG"))


@dataclass
class PredictResult:
    written: list[Path] = field(default_factory=list)  # the files written
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input, reason) of unreadable inputs


@torch.inference_mode()
def predict_files(
    checkpoint: str | os.PathLike,
    inputs: Iterable[str],
    out_dir: str | os.PathLike,
    cfg: dict | None = None,
    opacity: float = 0.5,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    tile: int | None = None,
) -> PredictResult:
    """Write ``_mask.png`` (class ids, palette) and ``_overlay.png`` per input (module docstring).

    Raises ``FileExistsError`` before any work when an output exists and ``overwrite`` is False.
    """
    from PIL import Image
    from tqdm import tqdm

    from ..data import load_image
    from ..data.transforms import TestPipeline
    from ..hub import is_pretrained_source

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"--opacity must be in [0, 1], got {opacity}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not Path(checkpoint).is_file() and not is_pretrained_source(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    out = Path(out_dir)
    files, common = _expand_inputs(inputs, out)
    targets = {f: (out / f"{s}_mask.png", out / f"{s}_overlay.png") for f, s in output_stems(files, common).items()}
    if not overwrite:
        existing = [t for pair in targets.values() for t in pair if t.exists()]
        if existing:
            raise FileExistsError(
                f"{len(existing)} output file(s) exist already, e.g. {existing[0]}; pass --overwrite to replace "
                "them or choose another --out"
            )
    model, cfg, meta = load_model_for_inference(checkpoint, cfg, dev)
    _check_network_size(cfg, f"config of {checkpoint}")
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
    result = PredictResult()
    for path in tqdm(files, desc="predict", unit="img", disable=not progress, dynamic_ncols=True):
        try:
            image = load_image(path)
        except (ValueError, OSError) as err:
            result.skipped.append((path, str(err)))
            print(f"skipped {path}: {err}", file=sys.stderr)
            continue
        tensor, _ = pipeline(image)
        labels = predict_labels_tiled(model, tensor[None].to(dev), image.shape[:2], tile=tile, **kwargs)[0]
        mask = _label_png(labels.cpu().numpy(), palette)
        colors = mask.convert("RGB") if mask.mode == "P" else Image.fromarray(colorize(np.asarray(mask), palette))
        blend = Image.blend(Image.fromarray(image), colors, opacity)
        mask_path, overlay_path = targets[path]
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        _save_png(mask, mask_path)
        _save_png(blend, overlay_path)
        result.written += [mask_path, overlay_path]
    return result
