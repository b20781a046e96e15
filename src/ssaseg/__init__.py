"""ssaseg: the SSA-Seg pixel classifier (NeurIPS 2024) for any segmentation decoder.

The public names are imported on first use (PEP 562), so that ``import ssaseg.cli`` and
``ssaseg --help`` / ``ssaseg configs ...`` start without importing torch.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("ssaseg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

#: public name -> submodule that defines it.
_EXPORTS = {
    "AuxHead": "segmentor",
    "Segmentor": "segmentor",
    "LinearClassifier": "classifiers",
    "SSAClassifier": "classifiers",
    "build_classifier": "classifiers",
    "count_parameters": "models",
    "create_model": "models",
    "list_models": "models",
    "register_model": "models",
    "from_pretrained": "hub",
    "save_pretrained": "model_format",
}
__all__ = sorted(_EXPORTS)
_SUBMODULES = (
    "backbones", "checkpoints", "classifiers", "cli", "complexity", "config", "config_catalog", "data",
    "decoders", "engine", "export", "hub", "layers", "model_format", "models", "segmentor", "zoo",
)

if TYPE_CHECKING:
    from .classifiers import LinearClassifier, SSAClassifier, build_classifier
    from .hub import from_pretrained
    from .model_format import save_pretrained
    from .models import count_parameters, create_model, list_models, register_model
    from .segmentor import AuxHead, Segmentor


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:  # ``import ssaseg; ssaseg.models`` as with an eager package
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ssaseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
