"""Atomic, umask-respecting file writes (a leaf module: standard library only).

Every file ssaseg writes (checkpoints, configs, logs, predictions, prepared data, saved models)
goes through :func:`atomic_write`, so a reader sees the old file or the complete new one, never a
torn one, and a failed write leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

__all__ = ["atomic_write", "atomic_write_file", "atomic_write_text", "current_umask", "TEMP_SUFFIX"]

#: Suffix of the temporary files :func:`atomic_write` creates (``.<name>.<random>.tmp``).
TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # fallback: read by setting it (briefly process-wide)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[IO[bytes], str]]:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        # mkstemp creates 0600 files; give the result the mode open() would (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh, tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` via ``write(binary file)`` into a temp file in the same directory, fsync it,
    then ``os.replace`` it into place: readers see the old file or the complete new one, never a
    torn one. The file gets the umask's permissions. A failed write (disk full, ...) raises
    ``OSError`` naming ``path`` and leaves neither a temp file nor a changed ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _temp_beside(path) as (fh, tmp):
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    except RuntimeError as err:  # torch.save reports a failed write as "unexpected pos ..."
        raise OSError(f"cannot write {path} (disk full or quota exceeded?): {err}") from err


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_file(path: str | os.PathLike, write_file: Callable[[str], None]) -> None:
    """:func:`atomic_write` for writers that take a file name instead of a file object
    (safetensors, ONNX, ``torch.export.save``, ``shutil.copyfile``): ``write_file(temp_path)``
    fills a temp file beside ``path``, which then replaces ``path`` with the umask's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _temp_beside(path) as (fh, tmp):
            fh.close()
            write_file(tmp)
            os.chmod(tmp, 0o666 & ~current_umask())  # the writer may have recreated the file
            os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
