"""Segmentation datasets in mmseg's prepared layouts, plus a generic folder layout.

Layouts (``data.dataset``: images | labels | reduce_zero_label default):

* ``ade20k``: ``images/{split}/**/*.jpg`` | ``annotations/{split}/**/<stem>.png`` | yes
* ``demo``: same layout as ade20k (built by :mod:`ssaseg.data.demo`) | ids 0..13 | no
* ``coco_stuff10k``: ``images/{split}/**/*.jpg`` |
  ``annotations/{split}/**/<stem>_labelTrainIds.png`` | yes
* ``pascal_context59`` / ``pascal_context60``: ``JPEGImages/<id>.jpg`` for the ids listed in
  ``ImageSets/SegmentationContext/{split}.txt`` | ``SegmentationClassContext/<id>.png``
  (0 = background, 1..59) | yes (59 classes) / no (60 classes, background = class 0)
* ``folder``: ``images/{split}/**/*.{jpg,jpeg,png,bmp,tif,tiff,webp}`` |
  ``labels/{split}/**/<stem>.png`` (or ``annotations/{split}``) | no; class names from the
  file ``data.classes`` (one per line), palette as mmseg makes one for custom classes.

Split names: ade20k/demo ``training``/``validation``, coco_stuff10k ``train2014``/``test2014``,
pascal_context ``train``/``val``. The other spellings of the same split (``train``,
``training``, ``train2014`` / ``val``, ``validation``, ``test``, ``test2014``) are accepted when
the literal one does not exist.

Pairs are matched by file stem and checked up front: a missing label, a duplicate stem or an
empty split raises before training starts, so one bad sample can never shift the image-label
pairing. Content problems (corrupt file, label size or value out of range) are raised when the
sample is read, naming both files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import meta
from .io import DataError, load_image, load_label
from .meta import IMAGE_SUFFIXES
from .transforms import IGNORE_INDEX, TestPipeline, TrainPipeline

__all__ = [
    "DATASETS",
    "SegDataset",
    "RepeatDataset",
    "build_dataset",
    "collate_train",
    "read_class_file",
    "custom_palette",
]

_SPLIT_ALIASES = (
    ("training", "train", "train2014"),
    ("validation", "val", "test", "test2014"),
)

Pair = tuple[Path, Path]


def custom_palette(num_classes: int) -> np.ndarray:
    """mmseg's palette for class lists without one: ``RandomState(42).randint(0, 255, (K, 3))``."""
    return np.random.RandomState(42).randint(0, 255, size=(num_classes, 3)).astype(np.uint8)


def read_class_file(path: str | os.PathLike) -> list[str]:
    """Class names, one per line (blank lines and ``#`` comments skipped); index = line order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-names file not found: {path}")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataError(f"class-names file {path} lists no classes")
    if len(names) > 255:
        raise DataError(
            f"class-names file {path} lists {len(names)} classes; at most 255 fit uint8 labels with 255 = ignore"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"class-names file {path} repeats {dupes}")
    return names


# ----------------------------------------------------------------------------- pair discovery


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {path}")


def _scan(directory: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """``{relative path without suffix: file}`` for files under ``directory`` (recursive)."""
    found: dict[str, Path] = {}
    lowered = tuple(s.lower() for s in suffixes)
    for dirpath, _, files in os.walk(directory):
        for name in files:
            low = name.lower()
            suffix = next((s for s in lowered if low.endswith(s)), None)
            if suffix is None:
                continue
            full = Path(dirpath, name)
            key = full.relative_to(directory).as_posix()[: -len(suffix)]
            if key in found:
                raise DataError(f"two images share the stem {key!r} in {directory}: {found[key].name} and {name}")
            found[key] = full
    return found


def _match(images: dict[str, Path], label_for: Callable[[str], Path], where: str) -> list[Pair]:
    if not images:
        raise DataError(f"split is empty: no images found in {where}")
    pairs = [(images[k], label_for(k)) for k in sorted(images)]
    missing = [(img, lab) for img, lab in pairs if not lab.is_file()]
    unresolvable = [lab for _, lab in missing if lab.is_symlink()]
    if unresolvable:
        raise DataError(f"label {unresolvable[0]} is a symbolic link that does not resolve to a file "
                        f"(a link loop or a dangling target) in {where}")
    if missing:
        shown = "\n".join(f"  {lab}  (for {img})" for img, lab in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(f"{len(missing)} of {len(pairs)} label files are missing in {where}:\n{shown}{more}")
    return pairs


def _resolve_split(parent: Path, split: str, exists: Callable[[Path, str], bool]) -> str:
    if exists(parent, split):
        return split
    for group in _SPLIT_ALIASES:
        if split in group:
            for alias in group:
                if alias != split and exists(parent, alias):
                    return alias
    return split  # caller raises with the literal name


def _dir_split_pairs(
    root: Path,
    split: str,
    image_dir: str,
    label_dirs: Sequence[str],
    label_suffix: str,
    image_suffixes: Sequence[str],
) -> list[Pair]:
    _require_dir(root, "dataset root")
    _require_dir(root / image_dir, "image")
    split = _resolve_split(root / image_dir, split, lambda p, s: (p / s).is_dir())
    img_dir = root / image_dir / split
    if not img_dir.is_dir():
        available = sorted(p.name for p in (root / image_dir).iterdir() if p.is_dir())
        raise FileNotFoundError(f"split directory not found: {img_dir} (available splits: {available})")
    ann_dir = next((root / d / split for d in label_dirs if (root / d / split).is_dir()), None)
    if ann_dir is None:
        raise FileNotFoundError(
            f"label directory not found: {' or '.join(str(root / d / split) for d in label_dirs)}"
        )
    images = _scan(img_dir, image_suffixes)
    return _match(images, lambda key: ann_dir / (key + label_suffix), str(img_dir))


def _ade_pairs(root: Path, split: str) -> list[Pair]:
    return _dir_split_pairs(root, split, "images", ("annotations",), ".png", (".jpg",))


def _coco_pairs(root: Path, split: str) -> list[Pair]:
    return _dir_split_pairs(root, split, "images", ("annotations",), "_labelTrainIds.png", (".jpg",))


def _folder_pairs(root: Path, split: str) -> list[Pair]:
    return _dir_split_pairs(root, split, "images", ("labels", "annotations"), ".png", IMAGE_SUFFIXES)


def _pascal_context_pairs(root: Path, split: str) -> list[Pair]:
    _require_dir(root, "dataset root")
    sets = root / "ImageSets" / "SegmentationContext"
    _require_dir(sets, "split-file")
    split = _resolve_split(sets, split, lambda p, s: (p / f"{s}.txt").is_file())
    split_file = sets / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in sets.glob("*.txt"))
        raise FileNotFoundError(f"split file not found: {split_file} (available: {available})")
    _require_dir(root / "JPEGImages", "image")
    _require_dir(root / "SegmentationClassContext", "label")
    ids = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
    if not ids:
        raise DataError(f"split is empty: {split_file} lists no image ids")
    images = {i: root / "JPEGImages" / f"{i}.jpg" for i in ids}
    missing = [p for p in images.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images listed in {split_file} are missing, e.g. {missing[0]}"
        )
    return _match(images, lambda key: root / "SegmentationClassContext" / f"{key}.png", str(split_file))


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of one ``data.dataset`` value."""

    reader: Callable[[Path, str], list[Pair]]
    classes: tuple[str, ...] | None  # None: from ``data.classes`` (folder) or the demo module
    palette: tuple[tuple[int, int, int], ...] | None
    reduce_zero_label: bool
    train_defaults: dict[str, Any]
    test_defaults: dict[str, Any]


_ADE_TRAIN = {"scale": (2048, 512), "ratio_range": (0.5, 2.0), "crop_size": (512, 512)}
_PC_TRAIN = {"scale": (520, 520), "ratio_range": (0.5, 2.0), "crop_size": (480, 480)}

DATASETS: dict[str, DatasetSpec] = {
    "ade20k": DatasetSpec(_ade_pairs, meta.ADE20K_CLASSES, meta.ADE20K_PALETTE, True, _ADE_TRAIN,
                          {"scale": (2048, 512), "resize_to_multiple": 32}),
    "coco_stuff10k": DatasetSpec(_coco_pairs, meta.COCO_STUFF_CLASSES, meta.COCO_STUFF_PALETTE, True, _ADE_TRAIN,
                                 {"scale": (2048, 512), "resize_to_multiple": None}),
    "pascal_context59": DatasetSpec(_pascal_context_pairs, meta.PASCAL_CONTEXT59_CLASSES,
                                    meta.PASCAL_CONTEXT59_PALETTE, True, _PC_TRAIN,
                                    {"scale": (520, 520), "resize_to_multiple": None}),
    "pascal_context60": DatasetSpec(_pascal_context_pairs, meta.PASCAL_CONTEXT60_CLASSES,
                                    meta.PASCAL_CONTEXT60_PALETTE, False, _PC_TRAIN,
                                    {"scale": (520, 520), "resize_to_multiple": None}),
    "folder": DatasetSpec(_folder_pairs, None, None, False, _ADE_TRAIN,
                          {"scale": (2048, 512), "resize_to_multiple": 32}),
    # 128x128 images: the (2048, 512) ADE scale would upsample them 4x for nothing.
    "demo": DatasetSpec(_ade_pairs, None, None, False,
                        {"scale": (128, 128), "ratio_range": (0.5, 2.0), "crop_size": (128, 128)},
                        {"scale": (128, 128), "resize_to_multiple": 32}),
}


# ----------------------------------------------------------------------------- datasets


class SegDataset(Dataset):
    """Image/label pairs + a pipeline.

    ``ds[i]`` -> ``{"image": (3, h, w) float32, "label": (h, w) int64 (255 = ignore),
    "path": str, "label_path": str, "ori_size": (H0, W0)}``. With the train pipeline ``(h, w)``
    is the crop size; with the test pipeline the image is resized and the label keeps the
    original size ``(H0, W0)``. Random draws come from the global NumPy RNG (seeded per worker
    by PyTorch and per sample by ssaseg's trainer) unless :meth:`get` receives ``rng``.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        classes: Sequence[str],
        palette: np.ndarray,
        reduce_zero_label: bool,
        pipeline: TrainPipeline | TestPipeline,
        name: str = "dataset",
    ) -> None:
        if not pairs:
            raise DataError(f"{name}: split is empty")
        self.pairs = list(pairs)
        self.classes = list(classes)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(len(self.classes), 3)
        self.reduce_zero_label = reduce_zero_label
        self.pipeline = pipeline
        self.name = name
        # 0 -> 255 and k -> k-1, 255 stays 255 (mmseg's reduce_zero_label) as one lookup.
        lut = np.arange(256, dtype=np.int64) - (1 if reduce_zero_label else 0)
        lut[0 if reduce_zero_label else 255] = IGNORE_INDEX
        lut[IGNORE_INDEX] = IGNORE_INDEX
        self._lut = lut.astype(np.uint8)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw sample: ``(image (H,W,3) uint8 RGB, label (H,W) uint8 after reduce_zero_label)``."""
        img_path, lab_path = self.pairs[index]
        context = f"(sample {index} of {self.name}: image {img_path}, label {lab_path})"
        try:
            image = load_image(img_path)
            label = load_label(lab_path)
        except DataError as exc:
            raise DataError(f"{exc} {context}") from exc
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc} {context}") from exc
        if image.shape[:2] != label.shape:
            raise DataError(
                f"size mismatch: image {img_path} is {image.shape[0]}x{image.shape[1]} (HxW) but its label "
                f"{lab_path} is {label.shape[0]}x{label.shape[1]}"
            )
        label = self._lut[label]
        k = len(self.classes)
        if label.max(initial=0) >= k:
            counts = np.bincount(label.ravel(), minlength=256)
            bad = np.flatnonzero(counts[k:IGNORE_INDEX]) + k
            if len(bad):
                rzl = "after reduce_zero_label " if self.reduce_zero_label else ""
                raise DataError(
                    f"label {lab_path} (image {img_path}) has values {bad.tolist()} {rzl}outside the "
                    f"{k} classes 0..{k - 1} (255 = ignore); wrong dataset type or reduce_zero_label?"
                )
        return image, label

    def get(self, index: int, rng: np.random.RandomState | None = None) -> dict[str, Any]:
        """Load and transform sample ``index`` drawing augmentation parameters from ``rng``."""
        image, label = self.load(index)
        ori_size = (int(image.shape[0]), int(image.shape[1]))
        tensor, target = self.pipeline(image, label, rng)
        img_path, lab_path = self.pairs[index]
        return {
            "image": tensor,
            "label": target,
            "path": str(img_path),
            "label_path": str(lab_path),
            "ori_size": ori_size,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index)

    def __repr__(self) -> str:
        return f"SegDataset({self.name!r}, {len(self)} samples, {len(self.classes)} classes, pipeline={self.pipeline})"


class RepeatDataset(Dataset):
    """``times`` passes over ``dataset`` per epoch (mmseg ``RepeatDataset``); ``ds[i] = base[i % n]``."""

    def __init__(self, dataset: SegDataset, times: int) -> None:
        if times < 1:
            raise ValueError(f"repeat must be >= 1, got {times}")
        self.dataset = dataset
        self.times = int(times)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def palette(self) -> np.ndarray:
        return self.dataset.palette

    def __len__(self) -> int:
        return self.times * len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[index % len(self.dataset)]


def collate_train(batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack training samples (all padded to the crop size): ``{"images": (B,3,h,w), "labels": (B,h,w)}``."""
    return {
        "images": torch.stack([b["image"] for b in batch]),
        "labels": torch.stack([b["label"] for b in batch]),
    }


# ----------------------------------------------------------------------------- builder


def _pipeline_kwargs(cfg: dict[str, Any] | None, defaults: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    merged = {**defaults, **(cfg or {})}
    unknown = set(merged) - set(keys)
    if unknown:
        raise ValueError(f"unknown pipeline keys {sorted(unknown)}; expected a subset of {list(keys)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}


def build_dataset(data_cfg: dict[str, Any], split: str, train: bool) -> SegDataset | RepeatDataset:
    """Dataset for ``split`` from the ``data:`` config section (configs/SCHEMA.md).

    ``train=True`` applies :class:`TrainPipeline` (and wraps in :class:`RepeatDataset` when
    ``data_cfg["repeat"] > 1``), ``train=False`` :class:`TestPipeline`. Missing keys take the
    dataset's defaults (docs/algorithm.md §10.1).
    """
    name = data_cfg.get("dataset") or "ade20k"
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    if name == "demo":
        from .demo import DEMO_CLASSES, DEMO_PALETTE, ensure_demo_dataset

        root = ensure_demo_dataset(data_cfg.get("root"))
        classes, palette = list(DEMO_CLASSES), np.asarray(DEMO_PALETTE, dtype=np.uint8)
    else:
        if not data_cfg.get("root"):
            raise ValueError(f"data.root is required for dataset {name!r}")
        root = Path(data_cfg["root"]).expanduser()
        if name == "folder":
            if not data_cfg.get("classes"):
                raise ValueError("dataset 'folder' needs data.classes: a file with one class name per line")
            class_file = Path(data_cfg["classes"]).expanduser()
            if not class_file.is_file() and (root / class_file).is_file():
                class_file = root / class_file
            classes = read_class_file(class_file)
            palette = custom_palette(len(classes))
        else:
            classes, palette = list(spec.classes or ()), np.asarray(spec.palette, dtype=np.uint8)
    rzl = data_cfg.get("reduce_zero_label")
    rzl = spec.reduce_zero_label if rzl is None else bool(rzl)
    if train:
        kw = _pipeline_kwargs(
            data_cfg.get("train_pipeline"),
            {"cat_max_ratio": 0.75, "flip_prob": 0.5, "photometric": True, **spec.train_defaults},
            ("scale", "ratio_range", "crop_size", "cat_max_ratio", "flip_prob", "photometric", "mean", "std"),
        )
        pipeline: TrainPipeline | TestPipeline = TrainPipeline(**kw)
    else:
        kw = _pipeline_kwargs(data_cfg.get("test_pipeline"), spec.test_defaults,
                              ("scale", "resize_to_multiple", "mean", "std"))
        pipeline = TestPipeline(**kw)
    pairs = spec.reader(root, split)
    dataset = SegDataset(pairs, classes, palette, rzl, pipeline, name=f"{name}:{split}")
    repeat = int(data_cfg.get("repeat") or 1)
    if train and repeat > 1:
        return RepeatDataset(dataset, repeat)
    return dataset
