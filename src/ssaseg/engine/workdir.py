"""Ownership and bookkeeping of a run directory (``train.work_dir``).

* **Lock.** A training run holds an exclusive ``fcntl`` lock on ``<work_dir>/.lock`` for its
  whole life (rank 0 under torchrun). A second run on the same directory fails at once; the OS
  drops the lock when the holder dies, even by ``kill -9``, so there is no stale lock to clear.
* **Fresh runs** refuse a directory that holds another run's ``iter_*.pth`` (continue it with
  ``--resume auto`` or pick a new directory), so a later ``--resume auto`` can never pick up a
  checkpoint of a different run.
* **Publishing a checkpoint** (after it was verified and written atomically): ``latest.pth``
  is re-pointed at it, and only then are checkpoints beyond ``train.max_keep_checkpoints``
  deleted, oldest first.
* **Leftovers** of a write killed half-way (``.*.tmp``) are deleted when a run takes the lock.
* **Log.** ``log.jsonl`` keeps only the records up to the iteration a run starts from, so the
  records of iterations a killed run did past its last checkpoint are not duplicated.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

from .state import checkpoint_iterations

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the directory is not protected there
    fcntl = None  # type: ignore[assignment]

__all__ = ["WorkDir", "WorkDirError", "LATEST", "LOCK_FILE", "LOG_FILE"]

LATEST = "latest.pth"
LOCK_FILE = ".lock"
LOG_FILE = "log.jsonl"


class WorkDirError(ValueError):
    """The run directory is in use or belongs to another run (the message says what to do)."""


class WorkDir:
    """A run directory; ``owner`` is False on ranks other than 0 (they never write here)."""

    def __init__(self, path: str | os.PathLike, owner: bool = True) -> None:
        self.path = Path(path)
        self.owner = owner

    @contextlib.contextmanager
    def locked(self) -> Iterator[WorkDir]:
        """Hold the directory's lock for the duration of the ``with`` block."""
        if not self.owner or fcntl is None:
            yield self
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise WorkDirError(
                    f"work dir {self.path} is in use by another training run (process {holder}); wait for it "
                    "to finish or pass a different --work-dir"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)  # releases the lock

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(iteration, path)`` of the ``iter_<n>.pth`` files, newest first."""
        return checkpoint_iterations(self.path)

    def remove_temp_files(self) -> list[Path]:
        """Delete the temp files of writes that were killed half-way (call while holding the lock)."""
        from ..fileio import TEMP_SUFFIX

        if not self.owner or not self.path.is_dir():
            return []
        stale = [p for p in self.path.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def ensure_fresh(self) -> None:
        """Refuse to start a new run where another run's checkpoints are."""
        found = self.checkpoints()
        if found:
            names = ", ".join(p.name for _, p in found[:3]) + (" ..." if len(found) > 3 else "")
            raise WorkDirError(
                f"work dir {self.path} already holds checkpoints of a run ({names}); continue that run with "
                "--resume auto, or start a new one in a different --work-dir"
            )

    def discard_checkpoints(self) -> None:
        """Delete a previous run's checkpoints and ``latest.pth`` (an explicit fresh start)."""
        if not self.owner:
            return
        for _, path in self.checkpoints():
            path.unlink(missing_ok=True)
        (self.path / LATEST).unlink(missing_ok=True)

    def publish(self, checkpoint: Path, keep: int) -> None:
        """Point ``latest.pth`` at the freshly written ``checkpoint``, then prune to ``keep`` (0 = all)."""
        if not self.owner:
            return
        self._point_latest(checkpoint)
        if keep > 0:
            for _, stale in self.checkpoints()[keep:]:
                if stale != checkpoint:
                    stale.unlink(missing_ok=True)

    def _point_latest(self, checkpoint: Path) -> None:
        from ..fileio import TEMP_SUFFIX, atomic_write

        latest = self.path / LATEST
        tmp = self.path / f".{LATEST}.{os.getpid()}{TEMP_SUFFIX}"
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(checkpoint.name)  # relative: the directory can be moved
        except OSError:  # no symlinks here (some file systems): a hard link, else a copy
            try:
                os.link(checkpoint, tmp)
            except OSError:
                data = checkpoint.read_bytes()
                atomic_write(latest, lambda fh: fh.write(data))
                return
        os.replace(tmp, latest)

    def trim_log(self, last_iteration: int) -> None:
        """Keep the ``log.jsonl`` records with ``iter <= last_iteration`` (all of them go at 0)."""
        from ..fileio import atomic_write

        log = self.path / LOG_FILE
        if not self.owner or not log.is_file():
            return
        kept = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill: drop it
                continue
            if isinstance(record, dict) and int(record.get("iter", 0)) <= last_iteration:
                kept.append(line + "\n")
        text = "".join(kept).encode()
        atomic_write(log, lambda fh: fh.write(text))
