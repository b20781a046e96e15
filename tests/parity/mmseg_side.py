"""mmseg 0.30 from the side directory ``.venv-parity/`` (see conftest.py), with the ``mmcv.ops`` stub."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIDE_PACKAGES = Path(os.environ.get("SSASEG_PARITY_PACKAGES", REPO / ".venv-parity"))


def _unavailable(*args, **kwargs):
    raise NotImplementedError("mmcv was built without compiled ops (MMCV_WITH_OPS=0)")


def import_mmseg():
    """Import mmseg from the side directory (with the ``mmcv.ops`` stub); None when unavailable."""
    if SIDE_PACKAGES.is_dir() and str(SIDE_PACKAGES) not in sys.path:
        sys.path.append(str(SIDE_PACKAGES))  # after site-packages: the main torch/numpy win
    if "mmcv.ops" not in sys.modules:
        ops = types.ModuleType("mmcv.ops")
        for name in ("sigmoid_focal_loss", "CrissCrossAttention", "point_sample", "PSAMask"):
            setattr(ops, name, _unavailable)
        # mmcv's revert_sync_batchnorm also looks for mmcv's own SyncBN class: one nothing is.
        ops.SyncBatchNorm = type("SyncBatchNorm", (), {})
        sys.modules["mmcv.ops"] = ops
    try:
        import mmcv
        import mmseg
        from mmseg.models import build_segmentor  # noqa: F401
    except ImportError:
        return None
    mmcv.ops = sys.modules["mmcv.ops"]
    return mmseg
