"""Trainer: exact resume continuity, a tiny train -> checkpoint -> resume -> test run on the demo
data, checkpoint contents, and data errors surfacing with the file name."""
import json

import numpy as np
import pytest
import torch

from _engine_fakes import FakeSegDataset, toy_config
from ssaseg.engine import test as run_test
from ssaseg.engine import train
from ssaseg.engine.state import load_training_checkpoint


pytestmark = pytest.mark.usefixtures("single_thread")


def _run(cfg, resume=None, **kw):
    return train(cfg, resume=resume, train_dataset=FakeSegDataset(6), val_dataset=FakeSegDataset(3, train=False),
                 progress=False, tensorboard=False, **kw)


def _train_records(work_dir):
    lines = (work_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "train"]


def test_resume_continues_the_same_run(tmp_path):
    """8 iterations straight == 4 (interrupted) + resume + 4: identical per-iteration losses, lrs
    and final weights.

    The resumed half uses a DataLoader worker while the straight run loads in-process: per-sample
    seeding makes the data stream independent of that. 6 samples / batch 2 = 3 batches per epoch,
    so the resume point (iteration 4) is in the middle of epoch 1.
    """
    res_a = _run(toy_config(str(tmp_path / "a"), train={"checkpoint_interval": 0}))
    split = toy_config(str(tmp_path / "b"), train={"checkpoint_interval": 0})
    first = _run(split, stop_after=4)
    assert first.iterations == 4 and first.checkpoint.name == "iter_4.pth"
    split["data"]["num_workers"] = 1
    res_b = _run(split, resume="auto")
    assert res_b.iterations == 4 and res_b.checkpoint.name == "iter_8.pth"
    a, b = _train_records(tmp_path / "a"), _train_records(tmp_path / "b")
    assert [r["iter"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra["lr"] == rb["lr"], (ra, rb)
    assert len({r["loss"] for r in a}) == 8  # the losses do change (the test can fail)
    wa = torch.load(res_a.checkpoint, weights_only=True)["model"]
    wb = torch.load(res_b.checkpoint, weights_only=True)["model"]
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_checkpoint_contents_and_incompatible_resume(tmp_path):
    cfg = toy_config(str(tmp_path), schedule={"max_iters": 2}, train={"checkpoint_interval": 0})
    res = _run(cfg)
    ckpt = load_training_checkpoint(res.checkpoint)
    assert ckpt["iteration"] == 2 and ckpt["sampler"] == {"epoch": 0, "offset": 2}
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert ckpt["config"] == cfg and ckpt["meta"]["classes"] == FakeSegDataset.classes
    assert (tmp_path / "config.yaml").is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    other = toy_config(str(tmp_path), data={"batch_size": 3})
    with pytest.raises(ValueError, match=r"data.batch_size: 2 -> 3"):
        _run(other, resume=str(res.checkpoint))
    wide = toy_config(str(tmp_path), model={"kwargs": {"width": 16}})
    with pytest.raises(ValueError, match=r"model.kwargs.width: \(absent\) -> 16"):
        _run(wide, resume=str(res.checkpoint))


def test_demo_data_train_resume_test(tmp_path):
    """Real data pipeline (demo dataset), SSA classifier: train 2 -> resume to 3 -> test."""
    cfg = toy_config(
        str(tmp_path / "run"),
        model={"classifier": "ssa", "num_classes": 14},
        data={"dataset": "demo", "root": str(tmp_path / "cache"), "reduce_zero_label": False,
              "train_pipeline": {"scale": [64, 64], "crop_size": [64, 64]},
              "test_pipeline": {"scale": [64, 64], "resize_to_multiple": 32}},
        schedule={"max_iters": 3},
        train={"checkpoint_interval": 0, "eval_interval": 0},
    )
    train(cfg, progress=False, tensorboard=False, stop_after=2)
    cfg["train"]["eval_interval"] = 3  # safe to change on resume
    from ssaseg.data import build_dataset

    val = build_dataset(cfg["data"], "validation", train=False)
    val_small = torch.utils.data.Subset(val, range(4))
    val_small.classes = val.classes
    res = train(cfg, resume="auto", val_dataset=val_small, progress=False, tensorboard=False)
    assert res.iterations == 1 and res.metrics is not None
    assert 0.0 <= res.metrics["aAcc"] <= 100.0 and len(res.metrics["IoU"]) == 14
    metrics = run_test(cfg, str(res.checkpoint), dataset=val_small, progress=False)
    assert metrics["aAcc"] == pytest.approx(res.metrics["aAcc"])  # deploy() does not change inference
    assert list((tmp_path / "run").glob("eval_single_scale_*.json"))


def test_corrupt_image_error_names_the_file(tmp_path):
    from PIL import Image

    root = tmp_path / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / split / f"img{i}.jpg")
            Image.fromarray(np.ones((32, 32), np.uint8)).save(root / "annotations" / split / f"img{i}.png")
    bad = root / "images" / "training" / "img1.jpg"
    bad.write_bytes(b"not a jpeg at all")
    cfg = toy_config(str(tmp_path / "run"), model={"num_classes": 150},
                     data={"dataset": "ade20k", "root": str(root), "batch_size": 1,
                           "train_pipeline": {"scale": [32, 32], "crop_size": [32, 32]}},
                     schedule={"max_iters": 2})
    with pytest.raises(ValueError, match="img1.jpg"):
        train(cfg, progress=False, tensorboard=False)


def test_bf16_autocast_on_cpu(tmp_path):
    cfg = toy_config(str(tmp_path), schedule={"max_iters": 2}, train={"amp": "bf16", "checkpoint_interval": 0})
    res = _run(cfg)
    assert all(np.isfinite(r["loss"]) for r in res.history)
