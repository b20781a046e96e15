"""Training data-pipeline throughput: images/s per worker, 512x512 crops (ADE20K settings).

Two sources, both written to a temporary directory in ADE20K's layout and read through
``ssaseg.data.build_dataset(..., train=True)`` (decode -> Resize(2048x512, ratio 0.5-2) ->
RandomCrop 512 cat_max_ratio 0.75 -> flip -> PhotoMetricDistortion -> Normalize -> Pad):

* ``demo-x4``: the demo dataset's 128x128 training images upscaled 4x to 512x512 (OpenCV
  bicubic, re-encoded as JPEG quality 92; labels nearest) so decoding costs what a real
  512-pixel photo costs; the pipeline then rescales them like ADE20K images.
* ``ade-like``: synthetic JPEGs at typical ADE20K sizes (683x512, 512x384, 1024x768,
  512x683): smooth random colour fields (low-resolution noise upscaled bicubically, plus mild
  pixel noise, so the JPEG entropy is photo-like rather than white noise) and blocky labels with
  values 0..150.

For each ``num_workers`` in {0, 1, 2} a DataLoader (batch 4, ``collate_train``) is drained
for ``--images`` images after one warm-up batch; reported: total images/s and images/s per
worker process (num_workers=0 counts the main process as one worker), and for num_workers=0
images per CPU-second of the process (1 / CPU time per image: the rate of one unloaded core,
robust to other load on the machine). OpenCV and torch
intra-op threading are disabled first, as mmseg's ``setup_multi_processes`` does.

    python benchmarks/data_pipeline.py [--images 96] [--workers 0 1 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from ssaseg.data import build_dataset, collate_train, load_image, load_label
from ssaseg.data.demo import ensure_demo_dataset

ADE_SIZES = [(512, 683), (384, 512), (768, 1024), (683, 512)]  # (H, W)


def _write(root: Path, split: str, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(str(root / "annotations" / split / f"{stem}.png"), label)


def make_demo_x4(out: Path, count: int) -> Path:
    demo = ensure_demo_dataset()
    images = sorted((demo / "images" / "training").glob("*.jpg"))[:count]
    for p in images:
        img = load_image(p)
        lab = load_label(demo / "annotations" / "training" / f"{p.stem}.png")
        img = cv2.resize(img, (512, 512), interpolation=cv2.INTER_CUBIC)
        lab = cv2.resize(lab, (512, 512), interpolation=cv2.INTER_NEAREST)
        _write(out, "training", p.stem, img, lab + 1)  # +1: read back with ADE's reduce_zero_label
    return out


def make_ade_like(out: Path, count: int, seed: int = 0) -> Path:
    rs = np.random.RandomState(seed)
    for i in range(count):
        h, w = ADE_SIZES[i % len(ADE_SIZES)]
        coarse = rs.randint(0, 256, (h // 32 + 1, w // 32 + 1, 3)).astype(np.uint8)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img = np.clip(img + rs.randint(-12, 13, img.shape), 0, 255).astype(np.uint8)
        tiles = rs.randint(0, 151, (h // 64 + 1, w // 64 + 1)).astype(np.uint8)
        lab = cv2.resize(tiles, (w, h), interpolation=cv2.INTER_NEAREST)
        _write(out, "training", f"ADE_train_{i:08d}", img, lab)
    return out


def measure(root: Path, workers: int, images: int, batch: int = 4) -> tuple[float, float | None]:
    """(images/s wall clock, images per CPU-second of the main process when workers == 0)."""
    ds = build_dataset({"dataset": "ade20k", "root": str(root)}, "training", train=True)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_train,
                        drop_last=True, persistent_workers=False, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # warm-up: worker start, first decode
    start, cpu, seen = time.perf_counter(), time.process_time(), 0
    while seen < images:
        try:
            seen += next(it)["images"].shape[0]
        except StopIteration:
            it = iter(loader)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seen / wall, (seen / cpu if workers == 0 else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=96, help="images timed per setting")
    ap.add_argument("--files", type=int, default=48, help="files written per source")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    # As mmseg's setup_multi_processes: no OpenCV / torch intra-op threads, so one process
    # (main or worker) is one core's worth of work and the per-worker rate is meaningful.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} torch={torch.__version__} cv2={cv2.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        sources = {
            "demo-x4 (512x512)": make_demo_x4(Path(tmp) / "demo", args.files),
            "ade-like (683x512..1024x768)": make_ade_like(Path(tmp) / "ade", args.files),
        }
        print(f"{'source':32s} {'workers':>7s} {'img/s':>8s} {'img/s/worker':>13s} {'img/cpu-s':>10s}")
        for name, root in sources.items():
            for w in args.workers:
                rate, per_cpu = measure(root, w, args.images)
                cpu_col = f"{per_cpu:10.1f}" if per_cpu is not None else f"{'-':>10s}"
                print(f"{name:32s} {w:7d} {rate:8.1f} {rate / max(w, 1):13.1f} {cpu_col}", flush=True)


if __name__ == "__main__":
    main()
