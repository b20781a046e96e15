"""Published backbone weights: typed configs, the download cache and :func:`load_backbone_weights`.

As in timm (``default_cfgs`` / ``PretrainedCfg``), each published backbone checkpoint is
described by a :class:`PretrainedCfg` registered with the model it initialises, under a tag
(``"imagenet"``): where it is published, the file name, the sha256 prefix when the file name
carries one, the converter that maps its layout, its license and source. The zoo files register
them next to their entry points; architecture arguments live apart.

``backbone_weights`` (``create_model`` argument or the config key ``model.backbone_weights``) is
either a tag, downloaded once into the cache directory, or a local file in any layout the
backbone's converter knows. Files are cached in ``$SSASEG_CACHE/weights`` (default
``~/.cache/ssaseg/weights``). Downloads go to a temporary file in the cache directory
and are renamed into place only after the hash check, so no partial or mismatched file is ever
left under the final name. When a download is impossible (offline, a page-only source), the
error names the config key, the URL and the exact path to place the file at.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .fileio import atomic_write
from .weights import WeightsError, load_weights

__all__ = [
    "PretrainedCfg",
    "DownloadError",
    "register_pretrained",
    "get_pretrained_cfg",
    "list_pretrained",
    "cache_dir",
    "cached_path",
    "download",
    "resolve_weights",
    "load_backbone_weights",
]

#: The config key named in user errors (``create_model(backbone_weights=...)`` is the same value).
CONFIG_KEY = "model.backbone_weights"
_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PretrainedCfg:
    """One published backbone checkpoint.

    Attributes:
        file_name: the published file name; also its name in the cache.
        converter: name of the key converter (:func:`ssaseg.weights.register_converter`) that
            maps the file's layout onto the backbone.
        source: who published it and where (project, release page, paper).
        license: the license the publisher states for the weights.
        url: direct download URL, or None where the publisher offers only a page (e.g. a Google
            Drive folder): then the user downloads it and places it at :func:`cached_path`.
        sha256: leading hex digits of the file's sha256 when the file name carries them (the
            ``name-<sha256[:8]>.pth`` convention of torch.hub and OpenMMLab's publish_model);
            checked after every download and before loading a cached copy.
    """

    file_name: str
    converter: str
    source: str
    license: str
    url: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is not None and (len(self.sha256) < 8 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"{self.file_name}: sha256 must be >= 8 lowercase hex digits, got {self.sha256!r}")


class DownloadError(WeightsError):
    """Published weights could not be downloaded (user error: the message says where to put the file)."""


_REGISTRY: dict[tuple[str, str], PretrainedCfg] = {}


def register_pretrained(cfgs: Mapping[str, PretrainedCfg]) -> dict[str, PretrainedCfg]:
    """Register ``{"<model>.<tag>": cfg}`` (timm's ``generate_default_cfgs`` idea; the zoo files
    call it next to their entry points) and return the mapping."""
    for name, cfg in cfgs.items():
        model_name, dot, tag = name.rpartition(".")
        if not dot or not model_name or not tag:
            raise ValueError(f"pretrained config names are '<model>.<tag>', got {name!r}")
        if _REGISTRY.get((model_name, tag), cfg) != cfg:
            raise ValueError(f"pretrained weights {name} are registered twice")
        _REGISTRY[(model_name, tag)] = cfg
    return dict(cfgs)


def get_pretrained_cfg(model_name: str, tag: str = "imagenet") -> PretrainedCfg:
    """The registered config of ``model_name``'s ``tag`` weights (KeyError naming the known tags)."""
    if (model_name, tag) not in _REGISTRY:
        tags = sorted(t for m, t in _REGISTRY if m == model_name)
        known = f"known tags: {', '.join(tags)}" if tags else "no pretrained backbone weights are registered for it"
        raise KeyError(f"{CONFIG_KEY}: {tag!r} is not a pretrained tag of {model_name!r} ({known})")
    return _REGISTRY[(model_name, tag)]


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``model.tag`` names of the registered weights matching a shell-style ``pattern``
    (models register theirs when their zoo module is imported, e.g. by ``ssaseg.list_models()``)."""
    import fnmatch

    return sorted(n for n in (f"{m}.{t}" for m, t in _REGISTRY) if fnmatch.fnmatch(n, pattern))


def cache_dir() -> Path:
    """``$SSASEG_CACHE``, else ``~/.cache/ssaseg`` (shared with the demo dataset)."""
    return Path(os.environ.get("SSASEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ssaseg"))


def cached_path(cfg: PretrainedCfg) -> Path:
    """Where ``cfg``'s file lives in the cache, ``<cache>/weights/<file_name>`` (and where to place
    it by hand)."""
    return cache_dir() / "weights" / cfg.file_name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _place_by_hand(cfg: PretrainedCfg, target: Path, where: str) -> str:
    return (
        f"Download {cfg.file_name} from {where} yourself and place it at {target} (the cache, "
        f"$SSASEG_CACHE/weights), or set {CONFIG_KEY} to the path of a local copy."
    )


def download(cfg: PretrainedCfg, model_name: str = "", tag: str = "", progress: bool | None = None) -> Path:
    """Fetch ``cfg.url`` into :func:`cached_path` atomically and return that path.

    The bytes go to a temporary file in the cache directory while their sha256 is computed;
    the file is renamed into place (``os.replace``, mode from the umask) only when the hash
    prefix matches. On any failure the temporary file is removed. ``progress``: a progress bar
    on stderr (default: when stderr is a terminal).

    Raises:
        DownloadError: one paragraph naming ``model.backbone_weights``, the URL and the exact path
            to place the file at, when the URL cannot be fetched or has no direct download; or
            naming both hashes on a mismatch.
    """
    target = cached_path(cfg)
    label = f"{model_name}.{tag}" if model_name else cfg.file_name
    if cfg.url is None:
        raise DownloadError(
            f"{CONFIG_KEY}: the {label} weights ({cfg.file_name}) have no direct download URL. "
            + _place_by_hand(cfg, target, cfg.source)
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"{CONFIG_KEY}: cannot create the cache directory {target.parent}: {err}. "
                            "Set $SSASEG_CACHE to a writable directory.") from None
    def fetch(out) -> None:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(cfg.url, timeout=_TIMEOUT_S) as response:
                total = int(response.headers.get("Content-Length") or 0)
                show = sys.stderr.isatty() if progress is None else progress
                bar = _progress_bar(total, cfg.file_name) if show else None
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise DownloadError(
                f"{CONFIG_KEY}: cannot download the {label} weights from {cfg.url} ({reason}). "
                + _place_by_hand(cfg, target, cfg.url)
            ) from None
        actual = digest.hexdigest()
        if cfg.sha256 is not None and not actual.startswith(cfg.sha256):
            raise DownloadError(
                f"{CONFIG_KEY}: the file downloaded from {cfg.url} has sha256 {actual[:len(cfg.sha256)]}..., "
                f"expected {cfg.sha256}...; it was discarded and {target} was not written. Retry later, or "
                + _place_by_hand(cfg, target, cfg.url)
            )

    # The temp file is renamed into place only when fetch() returns, i.e. after the hash check.
    atomic_write(target, fetch)
    return target


def _progress_bar(total: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, desc=name)


def _check_cached(cfg: PretrainedCfg, path: Path) -> None:
    """Refuse a cached (or hand-placed) copy whose sha256 prefix does not match the file name."""
    if cfg.sha256 is None:
        return
    actual = _sha256(path)
    if not actual.startswith(cfg.sha256):
        raise WeightsError(
            f"{CONFIG_KEY}: {path} has sha256 {actual[:len(cfg.sha256)]}..., expected {cfg.sha256}... "
            f"(the hash in its name): it is truncated or a different file. Delete it and retry"
            + (f", or fetch it again from {cfg.url}." if cfg.url else ".")
        )


def _converter_of(model_name: str) -> str:
    converters = {cfg.converter for (m, _), cfg in _REGISTRY.items() if m == model_name}
    if len(converters) != 1:
        raise WeightsError(
            f"{CONFIG_KEY}: no pretrained backbone weights are registered for {model_name!r}, so ssaseg does "
            "not know which converter reads a local file for it"
        )
    return converters.pop()


def resolve_weights(model_name: str, weights: str | os.PathLike, progress: bool | None = None) -> tuple[Path, str]:
    """``(local file, converter name)`` for ``backbone_weights``: a registered tag (downloaded
    into the cache when absent) or a local path.

    Raises:
        WeightsError: when ``weights`` is neither an existing file nor a known tag, when the
            download fails (:class:`DownloadError`) or a cached copy has the wrong hash. A
            missing local file that is a published file name gets the paragraph of
            :class:`DownloadError` (key, URL, where to put it, and the tag to use instead).
    """
    text = os.fspath(weights)
    if (model_name, text) in _REGISTRY:
        cfg = _REGISTRY[(model_name, text)]
        path = cached_path(cfg)
        if not path.is_file():
            path = download(cfg, model_name, text, progress=progress)
        _check_cached(cfg, path)
        return path, cfg.converter
    path = Path(text).expanduser()
    converter = _converter_of(model_name)
    if path.is_file():
        return path, converter
    for (m, tag), cfg in _REGISTRY.items():
        if m == model_name and cfg.file_name == path.name:
            where = cfg.url or cfg.source
            raise WeightsError(
                f"{CONFIG_KEY}: {path} does not exist. It is the published {model_name} backbone file "
                f"({cfg.source}): download it from {where} and place it at {path.absolute()}, or set "
                f"{CONFIG_KEY}: {tag} to have ssaseg fetch it into {cached_path(cfg)}."
            )
    tags = sorted(t for m, t in _REGISTRY if m == model_name)
    raise WeightsError(
        f"{CONFIG_KEY}: {text!r} is neither an existing file nor a pretrained tag of {model_name} "
        f"(tags: {', '.join(tags)})"
    )


def load_backbone_weights(model: nn.Module, model_name: str, weights: str | os.PathLike) -> None:
    """Load published backbone weights into ``model.backbone`` (or ``model`` when it is a backbone).

    Args:
        model: a segmentor built by ``create_model(model_name, ...)`` or its backbone.
        model_name: the registered model name (selects the pretrained configs and converter).
        weights: a tag registered for ``model_name`` (e.g. ``"imagenet"``: downloaded into the
            cache on first use, hash-checked) or a local file in a layout the converter knows.
    Raises:
        WeightsError: a user error naming the key, file or URL (see :func:`resolve_weights` and
            :func:`ssaseg.weights.load_weights`).
    """
    path, converter = resolve_weights(model_name, weights)
    load_weights(getattr(model, "backbone", model), path, converter)
