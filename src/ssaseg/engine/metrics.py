"""mmseg's IoU metrics from a dataset-wide confusion matrix kept on the device.

``ConfusionMatrix.update(pred, label)`` adds one ``bincount`` per batch (no host round-trip);
``compute()`` (one transfer at the end) gives aAcc, mIoU, mAcc and per-class IoU / Acc. A class
with no ground-truth pixel has NaN accuracy and, if it is also never predicted, NaN IoU; NaNs are
left out of the means (mmseg's ``nanmean``). Under DDP, :meth:`ConfusionMatrix.all_reduce` sums
the matrices of all ranks.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["ConfusionMatrix", "metrics_from_confusion"]


class ConfusionMatrix:
    """``(K, K)`` int64 counts, rows = ground truth, columns = prediction, on ``device``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add ``pred`` and ``label`` (same shape, integer class ids; label ``ignore_index`` skipped).

        Label values outside ``[0, K)`` other than the ignore index are skipped as well (mmseg
        masks with ``label != ignore_index`` only, but such values cannot index a K-class matrix).
        """
        if pred.shape != label.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
        k = self.num_classes
        pred = pred.reshape(-1).to(self.matrix.device, torch.int64)
        label = label.reshape(-1).to(self.matrix.device, torch.int64)
        valid = (label != self.ignore_index) & (label >= 0) & (label < k)
        index = torch.where(valid, label * k + pred.clamp(0, k - 1), k * k)
        counts = torch.bincount(index, minlength=k * k + 1)
        self.matrix += counts[: k * k].view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        return metrics_from_confusion(self.matrix, class_names)


def metrics_from_confusion(matrix: Tensor, class_names: list[str] | None = None) -> dict[str, Any]:
    """mmseg metrics from a ``(K, K)`` confusion matrix (rows GT, columns prediction).

    Returns ``{"aAcc", "mIoU", "mAcc"}`` as percentages (floats, NaN if undefined), plus
    ``"IoU"`` and ``"Acc"``: ``{class name: percentage or NaN}``.
    """
    m = matrix.double()
    intersect = m.diagonal()
    area_label = m.sum(1)
    area_pred = m.sum(0)
    union = area_label + area_pred - intersect
    iou = intersect / union  # 0/0 -> NaN: absent from GT and prediction
    acc = intersect / area_label  # NaN where the class has no GT pixel
    total = area_label.sum()
    aacc = (intersect.sum() / total).item() if total > 0 else math.nan
    iou_l, acc_l = (iou * 100).cpu().tolist(), (acc * 100).cpu().tolist()
    names = class_names if class_names is not None else [str(i) for i in range(m.shape[0])]
    if len(names) != m.shape[0]:
        raise ValueError(f"{len(names)} class names for a {m.shape[0]}-class confusion matrix")
    return {
        "aAcc": aacc * 100,
        "mIoU": _nanmean(iou_l),
        "mAcc": _nanmean(acc_l),
        "IoU": dict(zip(names, iou_l)),
        "Acc": dict(zip(names, acc_l)),
    }


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan
