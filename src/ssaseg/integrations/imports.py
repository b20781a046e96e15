"""``ssaseg --import MODULE``: import user modules before a command runs, so that the models
(:func:`ssaseg.register_model`), datasets (``ssaseg.data.DATASETS``) and classifiers
(``ssaseg.classifiers.CLASSIFIERS``) they register can be named in configs (mmseg's
``custom_imports``).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["import_user_modules", "pop_import_options"]


def pop_import_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--import MODULE`` / ``--import=MODULE`` (anywhere, repeatable) out of ``argv``.

    Returns ``(remaining argv, modules)``. A ``--import`` without a value raises ``ValueError``.
    """
    rest: list[str] = []
    modules: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--import":
            value = next(args, None)
            if value is None or value.startswith("-"):
                raise ValueError("--import needs a module name or a .py file, e.g. --import my_models")
            modules.append(value)
        elif arg.startswith("--import="):
            modules.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return rest, modules


def _import_file(path: Path) -> ModuleType:
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded  # imported once per process, like a module import
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--import {path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running so that pickling by name (DataLoader workers, spawn) finds it.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_user_modules(specs: list[str]) -> list[ModuleType]:
    """Import each of ``specs``: a dotted module name (looked up on ``sys.path`` and in the
    current directory, as ``python -m`` does) or the path of a ``.py`` file.

    A module that cannot be found raises ``ValueError`` naming it; errors raised by the module's
    own code propagate unchanged (they are bugs in that module, with their traceback).
    """
    modules = []
    for spec in specs:
        path = Path(spec)
        if spec.endswith(".py") or os.sep in spec:
            if not path.is_file():
                raise ValueError(f"--import {spec}: file not found")
            modules.append(_import_file(path.resolve()))
            continue
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            modules.append(importlib.import_module(spec))
        except ModuleNotFoundError as err:
            if err.name is not None and (spec == err.name or spec.startswith(err.name + ".")):
                raise ValueError(
                    f"--import {spec}: no module named {err.name!r} (give a module on PYTHONPATH or in the "
                    "current directory, or the path of a .py file)"
                ) from None
            raise
    return modules
