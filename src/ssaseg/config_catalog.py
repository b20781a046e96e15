"""The configs shipped inside the package: list, find by name, show, copy (``ssaseg configs``).

A packaged config is named by its file stem (``segformer_b5_512x512_160k_ade20k_ssa``) or by
its folder and stem (``segformer/segformer_b5_512x512_160k_ade20k_ssa``); ``.yaml`` may be
added. The partial files under ``_base_/`` are not configs of their own. Nothing here imports
torch, so ``ssaseg configs ...`` answers at once.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import shutil
from pathlib import Path

import yaml

from .fileio import atomic_write_file
from .config import ConfigError

__all__ = ["configs_root", "list_configs", "find_config", "resolve_config", "config_files", "copy_config"]

_BASE_DIR = "_base_"


def configs_root() -> Path:
    """The ``configs`` folder inside the installed package."""
    return Path(__file__).resolve().parent / "configs"


def _index() -> dict[str, Path]:
    """``{"folder/stem": path}`` of every packaged config, ``_base_`` excluded."""
    root = configs_root()
    return {
        path.relative_to(root).with_suffix("").as_posix(): path
        for path in sorted(root.rglob("*.yaml"))
        if _BASE_DIR not in path.relative_to(root).parts
    }


def list_configs(pattern: str = "*") -> list[str]:
    """Sorted stems of the packaged configs whose stem or ``folder/stem`` matches ``pattern``
    (shell-style; a pattern without wildcards matches as a substring)."""
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return sorted(
        key.rsplit("/", 1)[-1]
        for key in _index()
        if fnmatch.fnmatch(key, pattern) or fnmatch.fnmatch(key.rsplit("/", 1)[-1], pattern)
    )


def find_config(name: str) -> Path:
    """The file of the packaged config ``name`` (``stem``, ``folder/stem``, either with ``.yaml``).

    Raises :class:`~ssaseg.config.ConfigError` with the closest names when there is none.
    """
    index = _index()
    key = name.removesuffix(".yaml").strip("/")
    if key in index:
        return index[key]
    matches = [path for k, path in index.items() if k.rsplit("/", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = ", ".join(sorted(p.relative_to(configs_root()).with_suffix("").as_posix() for p in matches))
        raise ConfigError(f"config name {name!r} is ambiguous: {options}")
    stems = [k.rsplit("/", 1)[-1] for k in index]
    close = difflib.get_close_matches(key.rsplit("/", 1)[-1], stems, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `ssaseg configs list`"
    raise ConfigError(f"no packaged config named {name!r}{hint}")


def resolve_config(name_or_path: str | os.PathLike) -> Path:
    """A config file path: ``name_or_path`` itself when that file exists, else the packaged config
    of that name. A missing path that names a ``.yaml`` file outside the catalogue is reported as
    a missing file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    try:
        return find_config(str(name_or_path))
    except ConfigError as err:
        if path.suffix in (".yaml", ".yml") and (len(path.parts) > 1 or path.is_absolute()):
            raise ConfigError(f"config file not found: {path}") from None
        raise ConfigError(f"{err} (and no file {path} exists)") from None


def config_files(path: Path) -> list[Path]:
    """``path`` and every file of its ``_base_`` chain (depth-first, each once)."""
    seen: list[Path] = []

    def visit(p: Path) -> None:
        p = p.resolve()
        if p in seen:
            return
        seen.append(p)
        with open(p, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        bases = data.get("_base_", []) if isinstance(data, dict) else []
        for base in [bases] if isinstance(bases, str) else bases:
            visit(p.parent / base)

    visit(path)
    return seen


def copy_config(name: str, dest: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Copy the packaged config ``name`` and its ``_base_`` files into ``dest``, keeping the
    catalogue's layout so that the relative ``_base_`` paths still resolve.

    A destination file that exists with other content is never replaced unless ``overwrite``;
    each file is written atomically. Returns the written (or identical, kept) files, the
    config itself first.
    """
    root = configs_root()
    dest = Path(dest)
    pairs = [(src, dest / src.relative_to(root)) for src in config_files(find_config(name))]
    clashes = [dst for src, dst in pairs if dst.exists() and dst.read_bytes() != src.read_bytes()]
    if clashes and not overwrite:
        raise ConfigError(
            f"not copying {name}: {', '.join(map(str, clashes))} already exist(s) with other content "
            "(use --overwrite to replace)"
        )
    for src, dst in pairs:
        atomic_write_file(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
    return [dst for _, dst in pairs]

