"""Training checkpoints (atomic writes, weights-only loading), RNG state capture, distributed set-up.

A training checkpoint ``iter_<n>.pth`` is a dict of plain containers and tensors, so
``torch.load(..., weights_only=True)`` reads it:
``{"model", "optimizer", "scheduler", "scaler", "iteration", "rng", "sampler", "config", "meta",
"world_size"}``. The trainer writes one only after checking that its tensors are finite.
``meta`` holds the class names and palette so that ``ssaseg predict`` needs only the checkpoint.
"""
from __future__ import annotations

import os
import random
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "atomic_torch_save",
    "load_training_checkpoint",
    "latest_checkpoint",
    "checkpoint_iterations",
    "nonfinite_tensors",
    "check_finite_weights",
    "capture_rng_state",
    "restore_rng_state",
    "seed_everything",
    "DistInfo",
    "init_distributed",
]

_CKPT_RE = re.compile(r"^iter_(\d+)\.pth$")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` via :func:`ssaseg.fileio.atomic_write`: never a torn file, umask
    permissions, and a failed write (disk full) raises ``OSError`` naming ``path``."""
    from ..fileio import atomic_write

    atomic_write(path, lambda fh: torch.save(obj, fh))


def checkpoint_iterations(work_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(n, path)`` of every ``iter_<n>.pth`` in ``work_dir``, newest (largest ``n``) first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in work_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found, reverse=True)


def latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The ``iter_<n>.pth`` with the largest ``n`` in ``work_dir`` (None if there is none)."""
    found = checkpoint_iterations(work_dir)
    return found[0][1] if found else None


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by the trainer (weights only); clear error if it is not one."""
    from ..checkpoints import read_checkpoint

    ckpt = read_checkpoint(path)
    if "model" not in ckpt:
        raise ValueError(f"{path} is not an ssaseg checkpoint (no 'model' entry)")
    return ckpt


def _float_tensors(obj: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [(prefix, obj)] if obj.is_floating_point() or obj.is_complex() else []
    if isinstance(obj, dict):
        return [item for k, v in obj.items() for item in _float_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [item for i, v in enumerate(obj) for item in _float_tensors(v, f"{prefix}.{i}")]
    return []


def nonfinite_tensors(obj: Any) -> list[str]:
    """Dotted names of the floating tensors in ``obj`` (nested dicts / lists) holding NaN or inf.

    One host transfer for all tensors (the per-tensor flags are stacked on their device).
    """
    named = _float_tensors(obj)
    if not named:
        return []
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    bad: list[str] = []
    for indices in by_device.values():
        flags = torch.stack([torch.isfinite(named[i][1]).all() for i in indices]).tolist()
        bad += [named[i][0] for i, ok in zip(indices, flags) if not ok]
    return bad


def check_finite_weights(state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Refuse weights holding NaN / inf (a diverged run): ``ValueError`` naming ``source``."""
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(
            f"checkpoint {os.fspath(source)} holds non-finite (NaN/inf) weights in {len(bad)} of "
            f"{len(_float_tensors(state))} tensors ({shown}); it comes from a diverged run and cannot be used"
        )


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as weights-only-loadable containers."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class DistInfo:
    """Rank / world size / device of this process."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, device: torch.device | None = None):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device or torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise torch.distributed from torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK).

    nccl on CUDA, gloo on CPU. Without those variables (or with WORLD_SIZE 1) nothing is
    initialised. ``device`` forces "cpu" or "cuda"; by default CUDA is used when available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)
