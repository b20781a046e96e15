"""``ssaseg prepare DATASET RAW_DIR OUT_DIR``: convert official downloads to mmseg's layouts.

``coco_stuff10k``
    RAW_DIR is the extracted official ``cocostuff-10k-v1.1.zip``: ``images/*.jpg``,
    ``annotations/*.mat`` (key ``S``: uint16 COCO ids 0..182, 0 = unlabeled) and
    ``imageLists/{train,test}.txt``. Writes ``OUT_DIR/images/{train2014,test2014}/<name>.jpg`` and
    ``OUT_DIR/annotations/{train2014,test2014}/<name>_labelTrainIds.png`` with mmseg's
    ``clsID_to_trID`` mapping (train id = rank of the COCO id among the 172 used ids, so 0 stays
    unlabeled and 1..171 are the classes; the 11 unused COCO ids, which never occur in the
    official files, are mapped to 0). 9,000 / 1,000 images.
``pascal_context``
    RAW_DIR is the extracted ``trainval.tar.gz`` of the PASCAL-Context site: ``trainval/*.mat``
    (key ``LabelMap``: ids of the 459 classes of ``labels.txt``, 0 = unlabeled) and optionally
    ``59_labels.txt`` (checked against the built-in 59-class id table when present).
    ``--voc-dir`` (default OUT_DIR) is the VOC2010 folder holding ``JPEGImages`` and
    ``ImageSets/Main/{train,val}.txt``. Writes ``OUT_DIR/SegmentationClassContext/<id>.png``
    (0 = background/any other class, 1..59 = the 59 classes in mmseg's order) and
    ``OUT_DIR/ImageSets/SegmentationContext/{train,val}.txt``; the same files serve
    ``pascal_context59`` (reduce_zero_label: 0 -> 255) and ``pascal_context60`` (background =
    class 0). Images are copied to ``OUT_DIR/JPEGImages`` when ``--voc-dir`` differs.
    This replaces mmseg's Detail-API route (``trainval_merged.json``), which yields the same
    59-class masks; its split lists have 4,996 / 5,104 images, while the VOC2010 Main lists
    used here have 4,998 / 5,105.

Every output file is written atomically (temporary file + ``os.replace``), so an interrupted
run leaves no truncated files; re-running overwrites.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import meta
from ..fileio import atomic_write
from .io import DataError

__all__ = ["add_arguments", "run", "convert_coco_stuff10k", "convert_pascal_context", "CONVERTERS"]

_COCO_SPLITS = (("train", "train2014"), ("test", "test2014"))
_PC_SPLITS = ("train", "val")


# ----------------------------------------------------------------------------- helpers


def _lut(ids: Sequence[int], size: int) -> np.ndarray:
    """Lookup table of length ``size`` sending ``ids[i] -> i`` and every other id to 0."""
    lut = np.zeros(size, dtype=np.uint8)
    lut[np.asarray(ids)] = np.arange(len(ids), dtype=np.uint8)
    return lut


# COCO id -> train id (rank among the used ids; 0 -> 0).
_COCO_LUT = _lut(meta.COCO_STUFF_USED_IDS, 183)
# PASCAL-Context 459-class id -> 0 (background) or 1..59.
_PC_LUT = _lut((0,) + meta.PASCAL_CONTEXT59_IDS, 460)


def _load_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt / HDF5 files
        raise DataError(f"cannot read MATLAB file {path}: {exc}") from exc
    if key not in data:
        keys = sorted(k for k in data if not k.startswith("__"))
        raise DataError(f"MATLAB file {path} has no variable {key!r} (variables: {keys})")
    arr = np.asarray(data[key])
    if arr.ndim == 2 and np.issubdtype(arr.dtype, np.floating) and np.array_equal(arr, np.round(arr)):
        arr = arr.astype(np.int64)  # some MATLAB tools save label maps as double
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{path}: {key!r} should be a 2-D integer label map, got {arr.dtype} {arr.shape}")
    return arr


def _map_labels(arr: np.ndarray, lut: np.ndarray, path: Path) -> np.ndarray:
    if arr.size and (arr.min() < 0 or arr.max() >= len(lut)):
        raise DataError(f"{path}: label ids must be in 0..{len(lut) - 1}, found [{arr.min()}, {arr.max()}]")
    return lut[arr]


def _atomic_png(label: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda fh: Image.fromarray(label).save(fh, format="PNG"))


def _place_image(src: Path, dst: Path, mode: str) -> None:
    if src.resolve() == dst.resolve():
        return
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    if mode == "symlink":
        tmp.symlink_to(src.resolve())
    elif mode == "hardlink":
        try:
            os.link(src, tmp)
        except OSError:  # other file system: fall back to a copy
            shutil.copyfile(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not names:
        raise DataError(f"split list {path} is empty")
    return names


def _require(paths: Iterable[Path], what: str) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        shown = "\n".join(f"  {p}" for p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} {what} missing:\n{shown}{more}")


def _run_jobs(fn: Callable[[tuple], None], jobs: list[tuple], workers: int, desc: str) -> None:
    if workers <= 0:
        for job in tqdm(jobs, desc=desc, unit="img"):
            fn(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(pool.map(fn, jobs, chunksize=16), total=len(jobs), desc=desc, unit="img"):
            pass


# ----------------------------------------------------------------------------- COCO-Stuff-10K


def _coco_job(job: tuple[Path, Path, Path, Path], image_mode: str) -> None:
    img_src, mat, img_dst, lab_dst = job
    _atomic_png(_map_labels(_load_mat(mat, "S"), _COCO_LUT, mat), lab_dst)
    _place_image(img_src, img_dst, image_mode)


def convert_coco_stuff10k(
    raw_dir: str | os.PathLike, out_dir: str | os.PathLike, workers: int = 0, image_mode: str = "copy"
) -> dict[str, int]:
    """Convert the official COCO-Stuff-10K v1.1 tree; returns ``{split dir: image count}``."""
    raw, out = Path(raw_dir), Path(out_dir)
    if not raw.is_dir():
        raise FileNotFoundError(f"COCO-Stuff-10K directory not found: {raw}")
    counts = {}
    for list_name, split in _COCO_SPLITS:
        names = _read_list(raw / "imageLists" / f"{list_name}.txt")
        imgs = [raw / "images" / f"{n}.jpg" for n in names]
        mats = [raw / "annotations" / f"{n}.mat" for n in names]
        _require(imgs, f"images listed in imageLists/{list_name}.txt are")
        _require(mats, f"annotations listed in imageLists/{list_name}.txt are")
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations" / split).mkdir(parents=True, exist_ok=True)
        jobs = [
            (img, mat, out / "images" / split / f"{n}.jpg", out / "annotations" / split / f"{n}_labelTrainIds.png")
            for n, img, mat in zip(names, imgs, mats)
        ]
        _run_jobs(partial(_coco_job, image_mode=image_mode), jobs, workers, f"coco_stuff10k {split}")
        counts[split] = len(jobs)
    return counts


# ----------------------------------------------------------------------------- PASCAL-Context


def _read_id_names(path: Path) -> dict[int, str]:
    """Parse ``<id>: <name>`` lines (PASCAL-Context ``labels.txt`` / ``59_labels.txt``)."""
    table = {}
    for ln in path.read_text().splitlines():
        if not ln.strip():
            continue
        ident, sep, name = ln.partition(":")
        if not sep or not ident.strip().isdigit():
            raise DataError(f"{path}: expected '<id>: <name>' lines, got {ln!r}")
        table[int(ident)] = name.strip()
    return table


def _pc_job(job: tuple[Path, Path, Path | None, Path | None], image_mode: str) -> None:
    mat, lab_dst, img_src, img_dst = job
    _atomic_png(_map_labels(_load_mat(mat, "LabelMap"), _PC_LUT, mat), lab_dst)
    if img_src is not None and img_dst is not None:
        _place_image(img_src, img_dst, image_mode)


def convert_pascal_context(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    voc_dir: str | os.PathLike | None = None,
    workers: int = 0,
    image_mode: str = "copy",
) -> dict[str, int]:
    """Convert the 459-class PASCAL-Context ``.mat`` files; returns ``{split: image count}``."""
    raw, out = Path(raw_dir), Path(out_dir)
    voc = Path(voc_dir) if voc_dir is not None else out
    mat_dir = raw / "trainval" if (raw / "trainval").is_dir() else raw
    if not mat_dir.is_dir():
        raise FileNotFoundError(f"PASCAL-Context directory not found: {raw}")
    labels59 = raw / "59_labels.txt"
    if labels59.is_file():
        ids = sorted(_read_id_names(labels59))
        if tuple(ids) != meta.PASCAL_CONTEXT59_IDS:
            raise DataError(
                f"{labels59} lists ids {ids}, which differ from the standard 59-class table "
                f"{list(meta.PASCAL_CONTEXT59_IDS)}"
            )
    available = {p.stem: p for p in mat_dir.glob("*.mat")}
    if not available:
        raise DataError(f"no .mat label files found in {mat_dir}")
    copy_images = voc.resolve() != out.resolve()
    seg_dir, sets_dir = out / "SegmentationClassContext", out / "ImageSets" / "SegmentationContext"
    seg_dir.mkdir(parents=True, exist_ok=True)
    sets_dir.mkdir(parents=True, exist_ok=True)
    if copy_images:
        (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in _PC_SPLITS:
        voc_ids = _read_list(voc / "ImageSets" / "Main" / f"{split}.txt")
        ids = sorted(i for i in voc_ids if i in available)
        if not ids:
            list_file = voc / "ImageSets" / "Main" / f"{split}.txt"
            raise DataError(f"none of the {len(voc_ids)} ids of {list_file} has a .mat file in {mat_dir}")
        imgs = [voc / "JPEGImages" / f"{i}.jpg" for i in ids]
        _require(imgs, f"VOC2010 images for PASCAL-Context {split} are")
        jobs = [
            (available[i], seg_dir / f"{i}.png", *((img, out / "JPEGImages" / f"{i}.jpg") if copy_images else (None, None)))
            for i, img in zip(ids, imgs)
        ]
        _run_jobs(partial(_pc_job, image_mode=image_mode), jobs, workers, f"pascal_context {split}")
        text = "".join(f"{i}\n" for i in ids).encode()
        atomic_write(sets_dir / f"{split}.txt", lambda fh: fh.write(text))
        counts[split] = len(ids)
    return counts


CONVERTERS = ("coco_stuff10k", "pascal_context")


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ssaseg prepare`` (the module docstring becomes the help epilog)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__
    parser.add_argument("dataset", choices=CONVERTERS, help="which official download RAW_DIR holds")
    parser.add_argument(
        "raw_dir",
        help="extracted official download: coco_stuff10k = cocostuff-10k-v1.1.zip (images/, annotations/*.mat, "
        "imageLists/); pascal_context = trainval.tar.gz (trainval/*.mat, 59_labels.txt)",
    )
    parser.add_argument("out_dir", help="output root in mmseg's layout (data.root of the config)")
    parser.add_argument(
        "--voc-dir", default=None,
        help="pascal_context: VOC2010 folder with JPEGImages and ImageSets/Main (default: OUT_DIR)",
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="worker processes (0 = in-process)"
    )
    parser.add_argument(
        "--images", choices=("copy", "hardlink", "symlink"), default="copy", help="how images are placed in OUT_DIR"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``ssaseg prepare``; returns the process exit code (0 ok, 2 bad input)."""
    try:
        if args.dataset == "coco_stuff10k":
            counts = convert_coco_stuff10k(args.raw_dir, args.out_dir, args.workers, args.images)
        else:
            counts = convert_pascal_context(args.raw_dir, args.out_dir, args.voc_dir, args.workers, args.images)
    except (DataError, FileNotFoundError) as exc:
        print(f"ssaseg prepare {args.dataset}: error: {exc}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{k}: {v}" for k, v in counts.items())
    print(f"ssaseg prepare {args.dataset}: wrote {summary} images to {args.out_dir}")
    return 0
