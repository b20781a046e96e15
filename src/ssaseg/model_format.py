"""ssaseg's own model format, the writing side: :func:`save_pretrained` and the
``model.save_pretrained(...)`` method (:class:`PretrainedMixin`). Reading is :mod:`ssaseg.hub`.

A model directory holds three files:

* ``model.safetensors``: the state dict (a deployed model's has no SSA teacher and no unused
  auxiliary head);
* ``config.json``: everything needed to rebuild and use the model - the registry name, the
  architecture arguments as passed to :func:`ssaseg.create_model` (``classifier_kwargs``
  included), the classifier, ``num_classes``, whether the weights are deployed, class names,
  palette, the test pipeline (resize and normalisation) and the inference mode;
* ``README.md``: a model card (Hub front matter, usage, classes), written only when absent so
  that an edited card is kept.

This module does not import the model registry, so :class:`~ssaseg.segmentor.Segmentor` can
inherit the method without an import cycle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fileio import atomic_write_file

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME", "FORMAT_VERSION", "PretrainedError", "PretrainedMixin",
           "save_pretrained", "model_card", "is_deployed", "json_model_args"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: Version of the config.json layout; a reader refuses a newer one.
FORMAT_VERSION = 1
#: Architecture arguments that point at files of the machine that built the model: not stored.
_LOCAL_ARGS = ("backbone_weights",)


class PretrainedError(ValueError):
    """A model directory or Hub ID that cannot be read or written (the message says why)."""


def is_deployed(model: "nn.Module") -> bool:
    """Whether ``model`` holds only what inference uses: no classifier teacher and no auxiliary
    head besides the cascade's stage 0 (what :meth:`Segmentor.deploy` leaves)."""
    no_teacher = not getattr(model.classifier, "has_teacher", False)
    return no_teacher and len(model.aux_heads) <= int(bool(getattr(model, "is_cascade", False)))


def json_model_args(args: dict[str, Any], name: str) -> dict[str, Any]:
    """``args`` with tuples as lists; a value JSON cannot hold is a :class:`PretrainedError`."""
    def plain(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, key) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise PretrainedError(
            f"cannot save {name}: architecture argument {key}={value!r} is not a JSON value "
            "(numbers, strings, booleans, lists, dicts)"
        )

    return {k: plain(v, k) for k, v in args.items() if k not in _LOCAL_ARGS}


def _default_meta(num_classes: int) -> dict[str, Any]:
    from .data.meta import class_meta

    return class_meta(None, num_classes)


def _default_test_pipeline() -> dict[str, Any]:
    from .config import DEFAULTS

    return dict(DEFAULTS["data"]["test_pipeline"])


def _default_evaluation() -> dict[str, Any]:
    from .config import DEFAULTS

    return dict(DEFAULTS["evaluation"])


def save_pretrained(
    model: "nn.Module",
    save_directory: str | os.PathLike,
    *,
    classes: list[str] | None = None,
    palette: list[list[int]] | None = None,
    test_pipeline: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> Path:
    """Write ``model`` (built by :func:`ssaseg.create_model`) to ``save_directory``.

    The weights are saved as the model holds them: call ``model.deploy()`` first to share an
    inference-only model without its SSA teacher. Class names, palette, test pipeline and
    inference mode default to those the model was loaded with (:func:`from_pretrained`), else to
    ``"0".."K-1"``, ssaseg's default palette and the config defaults (configs/SCHEMA.md).
    Each file is written atomically. Returns the directory.
    """
    from safetensors.torch import save_file

    name = getattr(model, "model_name", None)
    if name is None or not hasattr(model, "model_args"):
        raise PretrainedError(
            "save_pretrained needs a model built by ssaseg.create_model (it records the registry name "
            "and the architecture arguments); this one has no model_name/model_args"
        )
    previous = getattr(model, "pretrained_config", None) or {}
    k = model.num_classes
    meta = _default_meta(k)
    classes = list(classes if classes is not None else previous.get("classes", meta["classes"]))
    palette = [list(map(int, c)) for c in (palette if palette is not None else previous.get("palette", meta["palette"]))]
    if len(classes) != k or len(palette) != k:
        raise PretrainedError(f"{name} has {k} classes but got {len(classes)} class names and {len(palette)} colours")
    config = {
        "format_version": FORMAT_VERSION,
        "library_name": "ssaseg",
        "model": name,
        "classifier": getattr(model, "classifier_name", None) or ("ssa" if hasattr(model.classifier, "tau") else "linear"),
        "num_classes": k,
        "model_args": json_model_args(dict(model.model_args), name),
        "deployed": is_deployed(model),
        "dataset": dataset if dataset is not None else previous.get("dataset"),
        "classes": classes,
        "palette": palette,
        "test_pipeline": dict(test_pipeline or previous.get("test_pipeline") or _default_test_pipeline()),
        "evaluation": dict(evaluation or previous.get("evaluation") or _default_evaluation()),
    }
    try:
        from . import __version__

        config["ssaseg_version"] = __version__
    except ImportError:  # pragma: no cover - the package always defines it
        pass
    out = Path(save_directory)
    if out.exists() and not out.is_dir():
        raise PretrainedError(f"cannot save to {out}: it exists and is not a directory")
    # Own contiguous copies: safetensors refuses tensors that share storage (views, tied weights).
    state = {key: value.detach().to("cpu").contiguous().clone() for key, value in model.state_dict().items()}
    atomic_write_file(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    atomic_write_file(out / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    if not (out / CARD_NAME).exists():
        card = model_card(config, sum(v.numel() for v in state.values()))
        atomic_write_file(out / CARD_NAME, lambda tmp: Path(tmp).write_text(card, encoding="utf-8"))
    return out


def model_card(config: dict[str, Any], num_values: int) -> str:
    """A Hub model card (README.md) for a saved model's ``config``."""
    classifier = {"ssa": "SSA (semantic and spatial adaptive) classifier", "linear": "linear (1x1 conv) classifier"}
    datasets = f"datasets:\n- {config['dataset']}\n" if config.get("dataset") else ""
    shown = ", ".join(config["classes"][:20]) + (", ..." if len(config["classes"]) > 20 else "")
    return (
        "---\nlibrary_name: ssaseg\npipeline_tag: image-segmentation\n"
        f"tags:\n- semantic-segmentation\n- ssaseg\n- {config['model']}\n{datasets}---\n\n"
        f"# {config['model']} with the {classifier.get(config['classifier'], config['classifier'])}\n\n"
        f"A semantic-segmentation model saved by [ssaseg](https://pypi.org/project/ssaseg/): "
        f"{config['num_classes']} classes, {num_values / 1e6:.1f} M values in `{WEIGHTS_NAME}`"
        f"{' (deployed: no training-only modules)' if config['deployed'] else ''}.\n\n"
        "```python\nimport ssaseg\n\n"
        "model = ssaseg.from_pretrained(\"THIS_DIRECTORY_OR_HUB_ID\")  # eval mode\n"
        "logits = model(images)  # images (B, 3, H, W), normalised as in config.json's test_pipeline\n```\n\n"
        "```bash\nssaseg predict THIS_DIRECTORY_OR_HUB_ID image.jpg --out predictions/\n"
        "ssaseg export THIS_DIRECTORY_OR_HUB_ID model.onnx\n```\n\n"
        f"Classes: {shown}.\n\n"
        f"Architecture arguments (`ssaseg.create_model`): `{json.dumps(config['model_args'])}`.\n"
    )


# ----------------------------------------------------------------------------- loading



class PretrainedMixin:
    """``model.save_pretrained(DIR, ...)`` on :class:`~ssaseg.segmentor.Segmentor` (see :func:`save_pretrained`)."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> Path:
        return save_pretrained(self, save_directory, **kwargs)  # type: ignore[arg-type]
