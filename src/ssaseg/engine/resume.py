"""The resume contract: which checkpoint ``--resume`` continues, and what may change when it does.

A training checkpoint carries the resolved config of its run and the number of processes. A
resumed run must be the same run: every key that defines it (model, data, augmentation,
optimiser, schedule, batch size, AMP, seed, number of processes) must be unchanged, and a
difference is refused with the list of ``key: old -> new``. Only the keys in
:data:`RESUME_SAFE_KEYS` may differ; they change how the run is observed or where it finds
things, never the training trajectory.

``--resume auto`` takes the newest ``iter_<n>.pth`` that reads back as a complete, finite
checkpoint, warning about (and skipping) newer ones that do not, e.g. a file truncated by a
full disk.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .state import load_training_checkpoint, nonfinite_tensors
from .workdir import WorkDir

__all__ = ["RESUME_SAFE_KEYS", "TRAINING_STATE_KEYS", "ResumeError", "config_differences", "find_resume_checkpoint",
           "check_same_run"]

#: Dotted config keys (a key covers everything below it) that may change when a run is resumed.
RESUME_SAFE_KEYS: tuple[str, ...] = (
    "train.log_interval",  # logging, evaluation and checkpoint cadence
    "train.eval_interval",
    "train.checkpoint_interval",
    "train.max_keep_checkpoints",
    "train.work_dir",  # the run directory may have been moved
    "train.nonfinite",  # e.g. resume a stopped run with nonfinite=skip
    "train.find_unused_parameters",  # a DDP bookkeeping switch, same gradients
    "data.root",  # the same dataset copied elsewhere
    "data.num_workers",  # the data stream does not depend on it (per-sample seeds)
    "data.val_split",  # evaluation only
    "data.test_pipeline",
    "evaluation",
    "model.backbone_weights",  # initial weights, replaced by the checkpoint's
    "model.checkpoint",
)

#: Entries a checkpoint needs to be resumed (besides ``model``).
TRAINING_STATE_KEYS = ("optimizer", "scheduler", "iteration", "rng", "sampler")


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run (the message lists why)."""


def _is_safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in RESUME_SAFE_KEYS)


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}``; an empty mapping has no leaves (``kwargs: {}`` equals an absent key)."""
    if isinstance(cfg, dict):
        out: dict[str, Any] = {}
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: cfg}


def config_differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every run-defining key that differs (safe keys are ignored).

    A key missing from ``old`` (a checkpoint written before the key existed) counts as its default.
    """
    from ..config import DEFAULTS

    a, b, defaults = _flatten(old), _flatten(new), _flatten(DEFAULTS)
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, defaults.get(key, missing)), b.get(key, missing)
        if va != vb and not _is_safe(key):
            fmt = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            lines.append(f"{key}: {fmt(va)} -> {fmt(vb)}")
    return lines


def check_same_run(ckpt: dict, path: Path, cfg: dict, world_size: int) -> None:
    """Refuse ``ckpt`` unless it holds training state of the run ``cfg`` on ``world_size`` processes."""
    absent = [k for k in TRAINING_STATE_KEYS if k not in ckpt]
    if absent:
        raise ResumeError(f"{path} holds no training state ({', '.join(absent)} missing); it cannot be resumed")
    if not isinstance(ckpt.get("config"), dict):
        raise ResumeError(f"{path} carries no config, so it cannot be checked against this run; it cannot be resumed")
    diffs = config_differences(ckpt["config"], cfg)
    old_world = ckpt.get("world_size")
    if old_world is not None and int(old_world) != world_size:
        diffs.append(f"number of processes: {int(old_world)} -> {world_size}")
    if diffs:
        raise ResumeError(
            f"cannot resume {path}: this run differs from the checkpoint's in {len(diffs)} run-defining setting(s): "
            + "; ".join(diffs)
            + ". Resume with the checkpoint's settings (its config.yaml), or start a new run in another "
            f"--work-dir. Only these keys may change on resume: {', '.join(RESUME_SAFE_KEYS)}"
        )


def _read_resumable(path: Path) -> dict[str, Any]:
    ckpt = load_training_checkpoint(path)
    absent = [k for k in TRAINING_STATE_KEYS if k not in ckpt]
    if absent:
        raise ResumeError(f"no training state ({', '.join(absent)} missing)")
    bad = nonfinite_tensors(ckpt["model"])
    if bad:
        raise ResumeError(f"non-finite weights in {', '.join(bad[:3])}")
    return ckpt


def find_resume_checkpoint(work_dir: WorkDir, resume: str, verbose: bool = True) -> tuple[dict, Path] | None:
    """The checkpoint ``--resume`` names: ``(checkpoint, path)``, or None for ``auto`` on an empty dir.

    ``auto`` walks ``iter_*.pth`` newest first and skips, with a warning on stderr, files that
    cannot be read back; an explicit path is read as is (its errors name it).
    """
    if resume != "auto":
        path = Path(resume)
        return load_training_checkpoint(path), path
    candidates = work_dir.checkpoints()
    skipped = []
    for _, path in candidates:
        try:
            return _read_resumable(path), path
        except (ValueError, OSError) as err:
            skipped.append(path.name)
            if verbose:
                print(f"warning: --resume auto skips {path}, it cannot be resumed: {err}", file=sys.stderr)
    if skipped:
        raise ResumeError(f"--resume auto: none of the checkpoints in {work_dir.path} can be resumed "
                          f"({', '.join(skipped)}); start a new run in another --work-dir")
    return None
