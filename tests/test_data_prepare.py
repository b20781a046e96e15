"""`ssaseg prepare` converters on tiny raw trees in the official download layouts."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from ssaseg.data import build_dataset, load_label
from ssaseg.data import meta, prepare

H, W = 12, 16


def _jpg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (H, W, 3)).astype(np.uint8)).save(path)


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    return prepare.run(parser.parse_args(list(argv)))


def _coco_raw(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    (root / "imageLists").mkdir()
    names = {"train": ["COCO_train2014_000000000077", "COCO_train2014_000000000078"],
             "test": ["COCO_train2014_000000000113"]}
    for split, lst in names.items():
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(lst) + "\n")
        for i, n in enumerate(lst):
            _jpg(root / "images" / f"{n}.jpg", i)
            s = np.zeros((H, W), np.uint16)
            s[:, 4:8] = 1      # person -> train id 1
            s[:, 8:12] = 13    # stop sign: COCO id 13 -> train id 12 (id 12 is unused)
            s[:, 12:] = 182    # wood -> 171
            s[0, 0] = 12       # an unused id -> 0 (unlabeled)
            savemat(root / "annotations" / f"{n}.mat", {"S": s, "names": np.array(["x"], dtype=object)})


def test_coco_stuff10k_converter(tmp_path: Path):
    raw, out = tmp_path / "cocostuff-10k-v1.1", tmp_path / "coco_stuff10k"
    _coco_raw(raw)
    assert _run("coco_stuff10k", str(raw), str(out), "--workers", "0") == 0
    lab = load_label(out / "annotations" / "train2014" / "COCO_train2014_000000000077_labelTrainIds.png")
    assert lab[1, 0] == 0 and lab[0, 4] == 1 and lab[0, 8] == 12 and lab[0, 12] == 171 and lab[0, 0] == 0
    assert (out / "images" / "test2014" / "COCO_train2014_000000000113.jpg").is_file()
    assert len(list((out / "annotations" / "train2014").iterdir())) == 2
    ds = build_dataset({"dataset": "coco_stuff10k", "root": str(out)}, "train2014", train=False)
    assert set(ds[0]["label"].unique().tolist()) == {255, 0, 11, 170}  # after reduce_zero_label
    assert ds.classes[11] == "stop sign" and ds.classes[170] == "wood"


def test_coco_stuff10k_converter_errors(tmp_path: Path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _coco_raw(raw)
    (raw / "annotations" / "COCO_train2014_000000000078.mat").unlink()
    assert _run("coco_stuff10k", str(raw), str(out), "--workers", "0") == 2
    assert "COCO_train2014_000000000078.mat" in capsys.readouterr().err
    savemat(raw / "annotations" / "COCO_train2014_000000000078.mat", {"S": np.full((H, W), 200, np.uint16)})
    assert _run("coco_stuff10k", str(raw), str(out), "--workers", "0") == 2
    assert "000078.mat: label ids must be in 0..182" in capsys.readouterr().err
    savemat(raw / "annotations" / "COCO_train2014_000000000078.mat", {"L": np.zeros((H, W), np.uint16)})
    assert _run("coco_stuff10k", str(raw), str(out), "--workers", "0") == 2
    assert "has no variable 'S'" in capsys.readouterr().err


def test_pascal_context_converter(tmp_path: Path):
    raw, voc, out = tmp_path / "pascal-context", tmp_path / "VOC2010", tmp_path / "out"
    (raw / "trainval").mkdir(parents=True)
    (raw / "59_labels.txt").write_text("".join(f"{i}: c{i}\n" for i in meta.PASCAL_CONTEXT59_IDS))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2008_000002\n2008_000003\n2008_000004\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000007\n")
    for i, name in enumerate(["2008_000002", "2008_000003", "2008_000007"]):  # 000004 has no .mat
        _jpg(voc / "JPEGImages" / f"{name}.jpg", i)
        m = np.zeros((H, W), np.uint16)  # 0 = unlabeled -> background
        m[:, 4:8] = 2      # aeroplane -> 1
        m[:, 8:12] = 458   # wood -> 59
        m[:, 12:] = 3      # a class outside the 59 -> background 0
        savemat(raw / "trainval" / f"{name}.mat", {"LabelMap": m})
    assert _run("pascal_context", str(raw), str(out), "--voc-dir", str(voc), "--workers", "0",
                "--images", "hardlink") == 0
    lab = load_label(out / "SegmentationClassContext" / "2008_000002.png")
    assert lab[0, 0] == 0 and lab[0, 4] == 1 and lab[0, 8] == 59 and lab[0, 12] == 0
    split = out / "ImageSets" / "SegmentationContext"
    assert split.joinpath("train.txt").read_text() == "2008_000002\n2008_000003\n"
    assert split.joinpath("val.txt").read_text() == "2008_000007\n"
    pc59 = build_dataset({"dataset": "pascal_context59", "root": str(out)}, "train", train=False)
    pc60 = build_dataset({"dataset": "pascal_context60", "root": str(out)}, "val", train=False)
    assert set(pc59[0]["label"].unique().tolist()) == {255, 0, 58}
    assert set(pc60[0]["label"].unique().tolist()) == {0, 1, 59}
    assert pc59.classes[0] == "aeroplane" and pc59.classes[58] == "wood"

    (raw / "59_labels.txt").write_text("1: accordion\n")
    with pytest.raises(prepare.DataError, match="59_labels.txt"):
        prepare.convert_pascal_context(raw, out, voc)
