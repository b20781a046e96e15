"""mmseg metrics from a device confusion matrix, against hand-computed values."""
import math

import pytest
import torch

from ssaseg.engine.metrics import ConfusionMatrix, metrics_from_confusion


def test_confusion_counts_ignore_and_absent_classes():
    # 4 classes; class 3 never appears in GT nor prediction; 255 pixels are ignored.
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])  # the predictions on ignored pixels don't count
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    expected = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.matrix, expected)
    m = cm.compute(["a", "b", "c", "d"])
    # IoU: a 1/(2+2-1)=1/3, b 2/(2+3-2)=2/3, c 1/(2+1-1)=1/2, d NaN (absent) -> excluded
    assert m["IoU"]["a"] == pytest.approx(100 / 3)
    assert m["IoU"]["b"] == pytest.approx(200 / 3)
    assert m["IoU"]["c"] == pytest.approx(50.0)
    assert math.isnan(m["IoU"]["d"]) and math.isnan(m["Acc"]["d"])
    assert m["mIoU"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    # Acc: a 1/2, b 2/2, c 1/2
    assert m["mAcc"] == pytest.approx((50 + 100 + 50) / 3)
    assert m["aAcc"] == pytest.approx(400 / 6)


def test_predicted_but_absent_class_counts_zero_iou():
    label = torch.zeros(2, 2, dtype=torch.long)
    pred = torch.tensor([[0, 0], [0, 1]])
    m = ConfusionMatrix(3).__class__(3)
    m.update(pred, label)
    out = m.compute()
    assert out["IoU"]["1"] == 0.0  # predicted, no GT: union > 0 -> IoU 0, kept in the mean
    assert math.isnan(out["Acc"]["1"])  # no GT pixel -> accuracy undefined
    assert math.isnan(out["IoU"]["2"])
    assert out["mIoU"] == pytest.approx((75.0 + 0.0) / 2)


def test_accumulates_over_batches_and_matches_bincount_reference():
    g = torch.Generator().manual_seed(0)
    k = 5
    cm = ConfusionMatrix(k)
    total = torch.zeros(k, k, dtype=torch.int64)
    for _ in range(3):
        label = torch.randint(0, k, (2, 7, 9), generator=g)
        label[:, 0] = 255
        pred = torch.randint(0, k, (2, 7, 9), generator=g)
        cm.update(pred, label)
        valid = label != 255
        total += torch.bincount(label[valid] * k + pred[valid], minlength=k * k).view(k, k)
    assert torch.equal(cm.matrix, total)


def test_all_ignored_and_shape_mismatch():
    cm = ConfusionMatrix(2)
    cm.update(torch.zeros(3, 3, dtype=torch.long), torch.full((3, 3), 255))
    out = cm.compute()
    assert math.isnan(out["aAcc"]) and math.isnan(out["mIoU"])
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(torch.zeros(2, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="class names"):
        metrics_from_confusion(torch.eye(2, dtype=torch.int64), ["only one"])
