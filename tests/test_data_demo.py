"""The offline demo dataset: deterministic bytes, ADE20K layout, classes, atomic cache."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ssaseg.data import load_image, load_label
from ssaseg.data.demo import DEMO_CLASSES, DEMO_PALETTE, build_demo_dataset, ensure_demo_dataset


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_build_is_deterministic_with_expected_layout(tmp_path: Path):
    a, b = build_demo_dataset(tmp_path / "a"), build_demo_dataset(tmp_path / "b")
    digest = _digest(a)
    assert digest == _digest(b)
    for split, n in (("training", 180), ("validation", 45)):
        images = sorted((a / "images" / split).glob("*.jpg"))
        labels = sorted((a / "annotations" / split).glob("*.png"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
    img = load_image(a / "images" / "training" / "demo_training_0000.jpg")
    lab = load_label(a / "annotations" / "training" / "demo_training_0000.png")
    assert img.shape == (128, 128, 3) and lab.shape == (128, 128)
    assert len(DEMO_CLASSES) == 14 and DEMO_PALETTE.shape == (14, 3) and DEMO_PALETTE.dtype == np.uint8
    seen = np.zeros(14, bool)
    for p in sorted((a / "annotations" / "validation").glob("*.png")):
        seen[np.unique(load_label(p))] = True
    assert seen.all()  # every class occurs, ids 0..13 directly


def test_ensure_demo_dataset_caches_and_rebuilds_stale(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SSASEG_CACHE", str(tmp_path / "cache"))
    root = ensure_demo_dataset()
    assert root == tmp_path / "cache" / "demo-v1"
    stamp = root / ".ssaseg-demo-version"
    first = stamp.stat().st_mtime_ns
    assert ensure_demo_dataset() == root and stamp.stat().st_mtime_ns == first  # cached
    stamp.unlink()  # looks partial / old -> rebuilt from scratch
    (root / "images" / "training" / "demo_training_0003.jpg").unlink()
    assert ensure_demo_dataset() == root
    assert stamp.is_file() and (root / "images" / "training" / "demo_training_0003.jpg").is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".demo")]  # temp dirs cleaned
