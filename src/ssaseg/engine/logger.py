"""Run logging: a JSONL file (one record per log step and per evaluation) and TensorBoard scalars."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..tables import render_table

__all__ = ["json_safe", "RunLogger", "format_metrics_table"]


def json_safe(value: Any) -> Any:
    """NaN/inf -> None so that the JSONL stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class RunLogger:
    """Appends records to ``<work_dir>/log.jsonl`` and scalars to ``<work_dir>/tb`` (rank 0 only)."""

    def __init__(self, work_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(work_dir) / "log.jsonl"
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(Path(work_dir) / "tb"))

    def log(self, record: dict[str, Any], scalars: dict[str, float] | None = None, step: int | None = None) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(json_safe(record)) + "\n")
        except OSError as err:  # e.g. a full disk: name the file
            raise OSError(err.errno, f"cannot append to {self.path}: {err.strerror or err}") from err
        if self._writer is not None and scalars:
            for key, value in scalars.items():
                if value is not None and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def format_metrics_table(metrics: dict[str, Any], per_class: bool = True) -> str:
    """Plain-text table: per-class IoU / Acc (optional) and the summary aAcc / mIoU / mAcc."""

    def pct(v: float | None) -> str:
        return "  nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.2f}"

    lines = []
    if per_class:
        rows = [[name, pct(iou), pct(metrics["Acc"][name])] for name, iou in metrics["IoU"].items()]
        lines += [render_table(["class", "IoU", "Acc"], rows, fmt="plain", align="lrr"), ""]
    lines.append(f"aAcc {pct(metrics['aAcc'])}  mIoU {pct(metrics['mIoU'])}  mAcc {pct(metrics['mAcc'])}")
    return "\n".join(lines)
