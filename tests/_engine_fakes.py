"""Shared helpers of the engine tests: a tiny registered model and an in-memory dataset.

The model (``engine_toy``) has GroupNorm only (no batch dependence), so its loss curve does not
depend on how a global batch is split across processes. The dataset items have the format of
``ssaseg.data.build_dataset`` (train: crop-size image + label; test: image + original-size label,
``path``, ``ori_size``); the train items draw a random flip from the global NumPy RNG, as the
real pipeline does, so seeding and resume are exercised.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ssaseg.decoders.fcn import FCNDecoder
from ssaseg.layers import ConvModule
from ssaseg.models import _ENTRYPOINTS, register_model
from ssaseg.segmentor import build_segmentor

NUM_CLASSES = 4
COLORS = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)


class ToyBackbone(nn.Module):
    """Two strided 3x3 ConvModules (GN): features at strides 2 and 4."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = ConvModule(3, width, 3, stride=2, norm="gn", num_groups=8)
        self.stage = ConvModule(width, width, 3, stride=2, norm="gn", num_groups=8)
        self.out_channels = [width, width]
        self.strides = [2, 4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.stem(x)
        return [a, self.stage(a)]


def engine_toy(num_classes: int, classifier: str = "ssa", classifier_kwargs: dict | None = None, width: int = 32, **kw):
    backbone = ToyBackbone(width)
    decoder = FCNDecoder(width, 32, in_index=-1, num_convs=1, kernel_size=3, norm="gn")
    return build_segmentor(backbone, decoder, num_classes, classifier, classifier_kwargs, **kw)


class Diverging(nn.Module):
    """Wraps a segmentor so that a run diverges at a known iteration: from the ``nan_at``-th
    training forward on, every loss term is NaN (``mode="loss"``), or the loss stays finite but a
    probe parameter gets an infinite gradient (``mode="grad"``: ``d sqrt(p) / dp`` at 0), which
    turns the weights NaN in the update."""

    def __init__(self, inner: nn.Module, nan_at: int, mode: str = "loss") -> None:
        super().__init__()
        self.inner, self.nan_at, self.mode, self.calls = inner, nan_at, mode, 0
        self.probe = nn.Parameter(torch.zeros(()))

    def forward(self, images, targets=None):
        out = self.inner(images, targets)
        if self.training:
            self.calls += 1
            active = self.calls >= self.nan_at
            probe = self.probe.sqrt() if active and self.mode == "grad" else self.probe * 0.0  # always used (DDP)
            out = {**out, "loss": out["loss"] + probe}
            if active and self.mode == "loss":
                out = {k: v * float("nan") for k, v in out.items()}
        return out

    def deploy(self):
        self.inner.deploy()
        return self


def engine_toy_diverging(num_classes: int, nan_at: int = 3, mode: str = "loss", **kw):
    return Diverging(engine_toy(num_classes, **kw), nan_at, mode)


for _fn in (engine_toy, engine_toy_diverging):
    if _fn.__name__ not in _ENTRYPOINTS:  # the test modules may import this helper more than once
        register_model(_fn)


def read_jsonl(path) -> list[dict]:
    """All records of a JSONL log."""
    import json

    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def make_sample(index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic image (H, W, 3) float in [0,1] with one coloured rectangle, and its label."""
    rng = np.random.RandomState(index)
    label = np.zeros((size, size), dtype=np.int64)
    cls = 1 + index % (NUM_CLASSES - 1)
    y0, x0 = rng.randint(0, size // 2, 2)
    h, w = rng.randint(size // 4, size // 2, 2)
    label[y0 : y0 + h, x0 : x0 + w] = cls
    label[:2, :2] = 255  # a few ignore pixels
    image = COLORS[label.clip(0, NUM_CLASSES - 1)] + rng.normal(0, 0.1, (size, size, 3)).astype(np.float32)
    return image, label


class FakeSegDataset(torch.utils.data.Dataset):
    """``n`` samples; train items are randomly flipped with the global NumPy RNG."""

    classes = [f"c{i}" for i in range(NUM_CLASSES)]
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)

    def __init__(self, n: int = 8, train: bool = True, size: int = 64) -> None:
        self.n, self.train, self.size = n, train, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        image, label = make_sample(index, self.size)
        if self.train and np.random.rand() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
        }
        if not self.train:
            item.update(path=f"fake_{index}.png", ori_size=(self.size, self.size))
        return item


def toy_config(work_dir: str, **sections) -> dict:
    """A resolved config for ``engine_toy`` on the fake data (tiny schedule), updated by ``sections``."""
    from ssaseg.config import DEFAULTS, merge_config, validate_config

    cfg = merge_config(
        DEFAULTS,
        {
            "model": {"name": "engine_toy", "classifier": "linear", "num_classes": NUM_CLASSES, "sync_bn": False},
            "data": {"dataset": "fake", "batch_size": 2, "num_workers": 0},
            "optimizer": {"lr": 1e-3, "param_rules": {"classifier": {"lr_mult": 10.0}, "gn": {"decay_mult": 0.0}}},
            "schedule": {"max_iters": 8, "warmup_iters": 2},
            "train": {"eval_interval": 0, "checkpoint_interval": 4, "log_interval": 1, "work_dir": work_dir, "amp": "off"},
        },
    )
    cfg = merge_config(cfg, sections)
    return validate_config(cfg, "toy config")


#: A two-iteration CLI config of the engine_toy model on the demo data (``.format(cache=...)``).
TINY_CLI_CONFIG = """\
model: {{name: engine_toy, classifier: linear, num_classes: 14, sync_bn: false}}
data:
  dataset: demo
  root: {cache}
  reduce_zero_label: false
  batch_size: 2
  num_workers: 0
  train_pipeline: {{scale: [64, 64], crop_size: [64, 64]}}
  test_pipeline: {{scale: [64, 64], resize_to_multiple: 32}}
schedule: {{max_iters: 2, warmup_iters: 1}}
train: {{eval_interval: 0, checkpoint_interval: 0, log_interval: 1, amp: "off"}}
"""
