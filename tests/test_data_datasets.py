"""Readers of the mmseg layouts, file modes, and errors that name the bad file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssaseg.data import DataError, RepeatDataset, build_dataset, collate_train, load_image, load_label
from ssaseg.data import meta

H, W = 24, 32
SMALL_TRAIN = {"scale": [32, 24], "ratio_range": [0.5, 2.0], "crop_size": [16, 16]}
SMALL_TEST = {"scale": [64, 48], "resize_to_multiple": 32}


def _write_pair(img_path: Path, lab_path: Path, label: np.ndarray, seed: int = 0) -> None:
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.RandomState(seed).randint(0, 256, label.shape + (3,)).astype(np.uint8)
    Image.fromarray(rgb).save(img_path)
    Image.fromarray(label.astype(np.uint8)).save(lab_path)


def _label(values: list[int], seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).choice(values, size=(H, W)).astype(np.uint8)


def _cfg(dataset: str, root: Path, **kw) -> dict:
    return {"dataset": dataset, "root": str(root), "train_pipeline": SMALL_TRAIN, "test_pipeline": SMALL_TEST, **kw}


@pytest.fixture
def ade_root(tmp_path: Path) -> Path:
    root = tmp_path / "ADEChallengeData2016"
    for split, n in (("training", 3), ("validation", 2)):
        for i in range(n):
            stem = f"ADE_{split[:5] if split == 'training' else 'val'}_{i + 1:08d}"
            _write_pair(root / "images" / split / f"{stem}.jpg", root / "annotations" / split / f"{stem}.png",
                        _label([0, 1, 75, 150], seed=i), seed=i)
    return root


def test_ade20k_reduce_zero_label_and_items(ade_root: Path):
    val = build_dataset(_cfg("ade20k", ade_root), "validation", train=False)
    assert len(val) == 2 and len(val.classes) == 150 and val.palette.shape == (150, 3)
    item = val[0]
    raw = np.array(Image.open(item["path"].replace("images", "annotations").replace(".jpg", ".png")))
    expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (H, W)
    np.testing.assert_array_equal(item["label"].numpy(), expected)  # 0->255, k->k-1, original size
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32  # 48x64 -> x32
    assert item["ori_size"] == (H, W) and item["path"].endswith("ADE_val_00000001.jpg")

    train = build_dataset(_cfg("ade20k", ade_root, repeat=3), "train", train=True)  # 'train' -> 'training'
    assert isinstance(train, RepeatDataset) and len(train) == 9 and train.classes == val.classes
    batch = collate_train([train[i] for i in range(4)])
    assert batch["images"].shape == (4, 3, 16, 16) and batch["labels"].shape == (4, 16, 16)
    assert set(batch["labels"].unique().tolist()) <= {0, 74, 149, 255}


def test_coco_stuff10k_layout(tmp_path: Path):
    root = tmp_path / "coco_stuff10k"
    for split in ("train2014", "test2014"):
        stem = f"COCO_{split}_000000000009"
        _write_pair(root / "images" / split / f"{stem}.jpg",
                    root / "annotations" / split / f"{stem}_labelTrainIds.png", _label([0, 1, 171]))
    ds = build_dataset(_cfg("coco_stuff10k", root), "test2014", train=False)
    assert len(ds) == 1 and len(ds.classes) == 171 and ds.classes[0] == "person"
    assert set(ds[0]["label"].unique().tolist()) == {255, 0, 170}
    assert len(build_dataset(_cfg("coco_stuff10k", root), "validation", train=False)) == 1  # alias


def _pascal_root(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2010"
    ids = {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007"]}
    for split, names in ids.items():
        (root / "ImageSets" / "SegmentationContext").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "SegmentationContext" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for i, name in enumerate(names):
            _write_pair(root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClassContext" / f"{name}.png",
                        _label([0, 1, 30, 59], seed=i))
    # an image outside the split files must be ignored
    _write_pair(root / "JPEGImages" / "2008_009999.jpg", root / "SegmentationClassContext" / "2008_009999.png", _label([0]))
    return root


def test_pascal_context_59_and_60(tmp_path: Path):
    root = _pascal_root(tmp_path)
    pc59 = build_dataset(_cfg("pascal_context59", root), "train", train=False)
    pc60 = build_dataset(_cfg("pascal_context60", root), "train", train=False)
    assert len(pc59) == 2 and len(pc59.classes) == 59 and len(pc60.classes) == 60
    assert pc60.classes[0] == "background" and pc60.classes[1:] == pc59.classes
    assert set(pc59[0]["label"].unique().tolist()) == {255, 0, 29, 58}
    assert set(pc60[0]["label"].unique().tolist()) == {0, 1, 30, 59}
    assert len(build_dataset(_cfg("pascal_context59", root), "validation", train=False)) == 1


def test_folder_dataset(tmp_path: Path):
    root = tmp_path / "mine"
    _write_pair(root / "images" / "train" / "a.png", root / "labels" / "train" / "a.png", _label([0, 2, 255]))
    _write_pair(root / "images" / "train" / "sub" / "b.jpg", root / "labels" / "train" / "sub" / "b.png", _label([1]))
    (root / "classes.txt").write_text("# my classes\nsky\nroad\n\ncar\n")
    ds = build_dataset(_cfg("folder", root, classes="classes.txt"), "train", train=False)
    assert ds.classes == ["sky", "road", "car"] and ds.palette.shape == (3, 3)
    assert [Path(p).name for p, _ in ds.pairs] == ["a.png", "b.jpg"]
    assert set(ds[0]["label"].unique().tolist()) == {0, 2, 255}


def test_demo_config_reads_ade_layout(tmp_path: Path):
    from ssaseg.data.demo import DEMO_CLASSES

    ds = build_dataset({"dataset": "demo", "root": str(tmp_path)}, "validation", train=False)
    assert ds.classes == list(DEMO_CLASSES) and len(ds) == 45
    assert int(ds[0]["label"].max()) <= 13  # ids used directly, no reduce_zero_label


# ----------------------------------------------------------------------------- modes


def test_image_modes_convert_to_rgb_uint8(tmp_path: Path):
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(load_image(tmp_path / "l.png"), np.dstack([grey] * 3))

    rgba = np.random.RandomState(0).randint(0, 256, (H, W, 4)).astype(np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3])  # alpha dropped

    pal = Image.fromarray(grey % 4, mode="L").convert("P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    pal.save(tmp_path / "p.png")
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), colours[grey % 4])

    deep = (np.arange(H * W).reshape(H, W) * 85).astype(np.uint16)  # up to 65195
    Image.fromarray(deep).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    out = load_image(tmp_path / "i16.png")
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out[..., 1], np.clip(np.rint(deep / 256.0), 0, 255).astype(np.uint8))


def test_palette_label_uses_indices_not_colours(tmp_path: Path):
    idx = _label([0, 3, 200])
    img = Image.fromarray(idx, mode="L").convert("P")
    img.putpalette(list(np.random.RandomState(0).randint(0, 256, 768)))
    img.save(tmp_path / "lab.png")
    np.testing.assert_array_equal(load_label(tmp_path / "lab.png"), idx)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png.*mode RGB"):
        load_label(tmp_path / "rgb.png")


# ----------------------------------------------------------------------------- errors


def test_corrupt_jpeg_names_the_file(ade_root: Path):
    bad = ade_root / "images" / "training" / "ADE_train_00000002.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    ds = build_dataset(_cfg("ade20k", ade_root), "training", train=True)
    ds[0]  # the other samples still load
    with pytest.raises(DataError, match="ADE_train_00000002.jpg") as info:
        ds[1]
    assert "ADE_train_00000002.png" in str(info.value)  # both paths named


def test_missing_label_detected_up_front(ade_root: Path):
    (ade_root / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="ADE_train_00000002.png"):
        build_dataset(_cfg("ade20k", ade_root), "training", train=True)


def test_label_size_mismatch(ade_root: Path):
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(ade_root / "annotations" / "validation" / "ADE_val_00000002.png")
    ds = build_dataset(_cfg("ade20k", ade_root), "validation", train=False)
    with pytest.raises(DataError, match=r"ADE_val_00000002.jpg is 24x32.*ADE_val_00000002.png is 24x33"):
        ds[1]


def test_label_values_out_of_range(ade_root: Path):
    Image.fromarray(_label([0, 5, 152, 200])).save(ade_root / "annotations" / "validation" / "ADE_val_00000001.png")
    ds = build_dataset(_cfg("ade20k", ade_root), "validation", train=False)
    with pytest.raises(DataError, match=r"ADE_val_00000001.png.*\[151, 199\]"):
        ds[0]


def test_empty_split_and_missing_directories(tmp_path: Path, ade_root: Path):
    (ade_root / "images" / "empty").mkdir()
    (ade_root / "annotations" / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        build_dataset(_cfg("ade20k", ade_root), "empty", train=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset(_cfg("ade20k", tmp_path / "nowhere"), "training", train=False)
    with pytest.raises(FileNotFoundError, match="testing.*available splits"):
        build_dataset(_cfg("ade20k", ade_root), "testing", train=False)
    root = _pascal_root(tmp_path)
    (root / "ImageSets" / "SegmentationContext" / "train.txt").write_text("\n")
    with pytest.raises(DataError, match="train.txt"):
        build_dataset(_cfg("pascal_context59", root), "train", train=False)


def test_meta_tables_complete():
    for classes, palette, k in (
        (meta.ADE20K_CLASSES, meta.ADE20K_PALETTE, 150),
        (meta.COCO_STUFF_CLASSES, meta.COCO_STUFF_PALETTE, 171),
        (meta.PASCAL_CONTEXT59_CLASSES, meta.PASCAL_CONTEXT59_PALETTE, 59),
        (meta.PASCAL_CONTEXT60_CLASSES, meta.PASCAL_CONTEXT60_PALETTE, 60),
    ):
        assert len(classes) == len(set(classes)) == len(palette) == k
        assert np.asarray(palette).min() >= 0 and np.asarray(palette).max() <= 255
    assert meta.ADE20K_CLASSES[:3] == ("wall", "building", "sky") and meta.ADE20K_CLASSES[-1] == "flag"
    assert len(meta.COCO_STUFF_USED_IDS) == 172 and meta.COCO_STUFF_USED_IDS[-1] == 182
