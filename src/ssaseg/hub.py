"""ssaseg's own model format, the reading side: :func:`from_pretrained`, :func:`ssaseg convert
<convert_checkpoint>` and the helpers ``test`` / ``predict`` use. The format and the writing side
are :mod:`ssaseg.model_format`.

:func:`from_pretrained` reads a saved directory, or a Hub ID (``"user/repo"``) through
``huggingface_hub`` (imported only then; its cache and ``HF_HUB_OFFLINE`` apply), following the
Hugging Face Hub's conventions as timm, smp and transformers do. A local directory never touches
the network.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.meta import class_meta
from .model_format import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    PretrainedError,
    is_deployed,
    json_model_args,
    save_pretrained,
)

if TYPE_CHECKING:
    from .segmentor import Segmentor

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "PretrainedError",
    "save_pretrained",
    "from_pretrained",
    "load_pretrained",
    "read_pretrained_config",
    "is_pretrained_dir",
    "is_deployed",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REQUIRED = ("model", "classifier", "num_classes", "model_args")


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory written by :func:`save_pretrained`."""
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def _download(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    """Fetch config.json and model.safetensors of a Hub repository (or take them from the cache)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise PretrainedError(
            f"{repo_id!r} is not a local directory; to read it as a Hugging Face Hub ID install "
            "huggingface_hub (pip install huggingface_hub)"
        ) from None
    from . import __version__

    try:
        for filename in (CONFIG_NAME, WEIGHTS_NAME):
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir,
                library_name="ssaseg", library_version=__version__,
            )
    except Exception as err:  # offline, unknown repo/revision/file, HTTP or connection failure
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (
            "offline mode is on (HF_HUB_OFFLINE) and the files are not in the cache"
            if offline
            else "check the ID, the network and HF_ENDPOINT/HF_TOKEN"
        )
        raise PretrainedError(
            f"{repo_id!r} is not a local directory and could not be read from the Hugging Face Hub "
            f"({type(err).__name__}: {reason}); {hint}. A local directory written by save_pretrained "
            "works without a network."
        ) from None
    return Path(path).parent


def _locate(source: str | os.PathLike, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise PretrainedError(
                f"{path} is a file; from_pretrained reads a directory written by save_pretrained "
                "(turn a checkpoint file into one with `ssaseg convert`)"
            )
        if not (path / CONFIG_NAME).is_file():
            raise PretrainedError(f"{path} has no {CONFIG_NAME}: it is not a directory written by save_pretrained")
        return path
    if isinstance(source, str) and _HUB_ID.match(source) and ".." not in source:
        return _download(source, revision, cache_dir)
    raise PretrainedError(f"{source} is neither a directory nor a Hugging Face Hub ID (user/name)")


def read_pretrained_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of a saved-model directory."""
    path = Path(directory) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PretrainedError(f"cannot read {path}: {err}") from None
    if not isinstance(config, dict):
        raise PretrainedError(f"{path} must hold a JSON object, got {type(config).__name__}")
    missing = [key for key in _REQUIRED if key not in config]
    if missing:
        raise PretrainedError(f"{path} lacks {', '.join(missing)}: it was not written by ssaseg's save_pretrained")
    if int(config.get("format_version", 1)) > FORMAT_VERSION:
        raise PretrainedError(
            f"{path} has format_version {config['format_version']}; this ssaseg reads up to "
            f"{FORMAT_VERSION} (upgrade ssaseg)"
        )
    if not isinstance(config["model_args"], dict) or not isinstance(config["num_classes"], int):
        raise PretrainedError(f"{path}: model_args must be an object and num_classes an integer")
    return config


def load_pretrained(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> tuple["Segmentor", dict[str, Any]]:
    """Like :func:`from_pretrained`, also returning the model's ``config.json`` contents."""
    from .checkpoints import load_state_dict_checked, read_checkpoint
    from .models import create_model

    directory = _locate(source, revision, cache_dir)
    config = read_pretrained_config(directory)
    try:
        model = create_model(config["model"], config["num_classes"], classifier=config["classifier"], **config["model_args"])
    except KeyError as err:
        raise PretrainedError(f"{directory / CONFIG_NAME}: model {err.args[0]}") from None
    except TypeError as err:
        raise PretrainedError(f"{directory / CONFIG_NAME}: model_args do not fit {config['model']!r}: {err}") from None
    if config.get("deployed", False):
        model.deploy()
    weights = directory / WEIGHTS_NAME
    try:
        state = read_checkpoint(weights)
    except FileNotFoundError:
        raise PretrainedError(f"{directory} has no {WEIGHTS_NAME}") from None
    except Exception as err:  # a torn or foreign file: safetensors raises its own error types
        raise PretrainedError(f"cannot read {weights}: {err}") from None
    load_state_dict_checked(model, state, weights)
    model.pretrained_config = {key: config.get(key) for key in ("dataset", "classes", "palette", "test_pipeline", "evaluation")}
    model.eval()
    if device is not None:
        model.to(device)
    return model, config


def from_pretrained(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> "Segmentor":
    """Rebuild a model saved by :func:`save_pretrained`, in eval mode.

    Args:
        source: a local directory, or a Hugging Face Hub ID ``"user/name"`` (downloaded through
            ``huggingface_hub``: its cache, ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE``
            apply). An existing local path always wins.
        revision: Hub branch, tag or commit (Hub IDs only).
        cache_dir: Hub cache folder (Hub IDs only).
        device: move the model there.

    The model's ``pretrained_config`` attribute holds the class names, palette, test pipeline and
    inference mode from ``config.json``. Raises :class:`PretrainedError` (a ``ValueError``)
    naming the directory or ID and what is wrong.
    """
    return load_pretrained(source, revision=revision, cache_dir=cache_dir, device=device)[0]


# ----------------------------------------------------------------------------- conversion


def _infer_num_classes(state: dict[str, Any]) -> int | None:
    """K from the main classifier's 1x1 conv (ssaseg or official layout)."""
    for key in ("classifier.conv_seg.weight", "decode_head.1.conv_seg.weight", "decode_head.conv_seg.weight"):
        if key in state:
            return int(state[key].shape[0])
    return None


def _infer_classifier(state: dict[str, Any]) -> str:
    """"ssa" when the checkpoint holds SSA's class-position embedding, else "linear"."""
    ssa_keys = ("classifier.class_position.", "decode_head.center_pos.", "decode_head.1.center_pos.")
    return "ssa" if any(key.startswith(ssa_keys) for key in state) else "linear"


def _class_meta_for(cfg: dict[str, Any] | None, num_classes: int) -> tuple[dict[str, Any], str | None]:
    """Class names / palette of a config's dataset when ssaseg knows them, else the defaults."""
    dataset = (cfg or {}).get("data", {}).get("dataset")
    if dataset:
        from .data import DATASETS

        spec = DATASETS.get(dataset)
        if spec is not None and spec.classes is not None and len(spec.classes) == num_classes:
            return {"classes": list(spec.classes), "palette": [list(c) for c in spec.palette]}, dataset
    return class_meta(None, num_classes), dataset


def convert_checkpoint(
    source: str | os.PathLike,
    save_directory: str | os.PathLike,
    *,
    model_name: str | None = None,
    num_classes: int | None = None,
    classifier: str | None = None,
    config: str | os.PathLike | None = None,
    model_args: dict[str, Any] | None = None,
    deploy: bool = True,
) -> list[str]:
    """Turn a checkpoint file into a :func:`save_pretrained` directory, loading it strictly.

    ``source``: an ssaseg training checkpoint (it carries its config and class names), an
    official SSA-Seg / mmseg 0.30 full-model checkpoint, or a plain ssaseg state dict
    (``.pth`` read with ``weights_only=True``, or ``.safetensors``). The model is ``model_name``,
    else the one of ``config`` (a packaged config name or a YAML path), else the one the
    checkpoint's config names; its architecture arguments are the config's (same model only),
    updated with ``model_args``. ``num_classes`` and ``classifier`` default to the config's, else
    to what the checkpoint's classifier weights show. Every tensor must find its parameter and
    every parameter its tensor (only the buffers that no ssaseg module owns, such as the
    reference's ``criterion.empty_weight``, are dropped). ``deploy`` drops the training-only
    modules before saving. The saved directory is read back and compared tensor by tensor.
    Returns the report lines.
    """
    import torch

    from .checkpoints import DROPPED_SUFFIXES, apply_state_dict, read_checkpoint, unwrap_state_dict
    from .models import create_model

    ckpt = read_checkpoint(source)
    state = unwrap_state_dict(ckpt)
    cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
    if config is not None:
        from .config import load_config
        from .config_catalog import resolve_config

        cfg = load_config(resolve_config(config))
    mcfg = (cfg or {}).get("model", {})
    name = model_name or mcfg.get("name")
    if not name:
        raise PretrainedError(f"{source}: no model named; pass --model NAME (see ssaseg.list_models()) or --config")
    same_model = name == mcfg.get("name")
    k = num_classes or (mcfg.get("num_classes") if same_model else None) or _infer_num_classes(state)
    if not k:
        raise PretrainedError(f"{source}: cannot tell the number of classes (no conv_seg weight); pass --num-classes")
    kind = classifier or (mcfg.get("classifier") if same_model else None) or _infer_classifier(state)
    args = dict(mcfg.get("kwargs") or {}) if same_model else {}
    if same_model and mcfg.get("classifier_kwargs"):
        args["classifier_kwargs"] = dict(mcfg["classifier_kwargs"])
    args.update(model_args or {})
    try:
        model = create_model(name, k, classifier=kind, **args)
    except TypeError as err:
        raise PretrainedError(f"architecture arguments do not fit {name!r}: {err}") from None
    official = any(key.removeprefix("module.").startswith(("decode_head.", "auxiliary_head.")) for key in state)
    try:
        apply_state_dict(model, state, source, strict=True)
    except ValueError:
        # A checkpoint of an already deployed model: it fits the deployed structure or nothing.
        trimmed = create_model(name, k, classifier=kind, **args).deploy()
        try:
            apply_state_dict(trimmed, state, source, strict=True)
        except ValueError:
            raise  # the first error, against the full model, is the informative one
        model = trimmed
    dropped = sorted(key for key in state if key.endswith(DROPPED_SUFFIXES))
    full_size = len(model.state_dict())
    if deploy:
        model.deploy()
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) and ckpt["meta"].get("classes") else None
    meta_dataset = None
    if meta is None or len(meta["classes"]) != k:
        meta, meta_dataset = _class_meta_for(cfg, k)
    data_cfg = (cfg or {}).get("data", {})
    out = save_pretrained(
        model, save_directory, classes=meta["classes"], palette=meta["palette"],
        test_pipeline=data_cfg.get("test_pipeline"), evaluation=(cfg or {}).get("evaluation"),
        dataset=data_cfg.get("dataset") or meta_dataset,
    )
    reloaded = from_pretrained(out)
    saved = model.state_dict()
    for key, value in reloaded.state_dict().items():
        if not torch.equal(value, saved[key]):
            raise PretrainedError(f"{out / WEIGHTS_NAME}: {key} differs after saving; the directory is not usable")
    lines = [
        f"source: {source} ({'official mmseg/SSA-Seg' if official else 'ssaseg'} layout, {len(state)} tensors)",
        f"model: {name}, classifier {kind}, {k} classes, arguments {json.dumps(json_model_args(args, name))}",
        f"loaded strictly: all {full_size} parameters and buffers of the model matched",
    ]
    lines += [f"dropped (no ssaseg module owns it): {key}" for key in dropped]
    if deploy:
        lines.append(f"deployed: kept {len(saved)} of {full_size} tensors (training-only modules dropped)")
    lines.append(f"wrote {out}/{{{WEIGHTS_NAME}, {CONFIG_NAME}, {CARD_NAME}}}; read back and checked equal")
    return lines


# ----------------------------------------------------------------------------- engine entry points

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def is_pretrained_source(source: str | os.PathLike) -> bool:
    """Whether ``ssaseg test/predict/export`` should read ``source`` with :func:`from_pretrained`:
    a saved-model directory, or a missing path shaped like a Hub ID (not like a checkpoint file)."""
    path = Path(source)
    if path.exists():
        return is_pretrained_dir(path)
    text = os.fspath(source)
    return bool(_HUB_ID.match(text)) and ".." not in text and not text.endswith(_CHECKPOINT_SUFFIXES)


def load_for_config(cfg: dict[str, Any], source: str | os.PathLike, device: str | None = None) -> "Segmentor":
    """The model of ``source`` (:func:`from_pretrained`), checked against the config it is tested
    with: same number of classes."""
    model = from_pretrained(source, device=device)
    expected = cfg["model"]["num_classes"]
    if model.num_classes != expected:
        raise PretrainedError(
            f"{source} holds a {model.num_classes}-class {model.model_name}, but the config has "
            f"model.num_classes {expected}"
        )
    return model


def inference_bundle(
    source: str | os.PathLike, cfg: dict[str, Any] | None = None, device: str | None = None
) -> tuple["Segmentor", dict[str, Any], dict[str, Any]]:
    """``(model, config, {"classes", "palette"})`` for ``ssaseg predict`` from a saved model.

    The config is the schema's defaults with the saved model, test pipeline and inference mode,
    unless ``cfg`` is given (its pipeline and inference settings are used then).
    """
    from .config import DEFAULTS, merge_config

    model, saved = load_pretrained(source, device=device)
    if cfg is None:
        args = dict(saved["model_args"])
        cfg = merge_config(DEFAULTS, {
            "model": {
                "name": saved["model"], "classifier": saved["classifier"], "num_classes": saved["num_classes"],
                "classifier_kwargs": args.pop("classifier_kwargs", None) or {}, "kwargs": args,
            },
            "data": {"test_pipeline": saved.get("test_pipeline") or {}},
            "evaluation": saved.get("evaluation") or {},
        })
    elif cfg["model"]["num_classes"] != model.num_classes:
        raise PretrainedError(
            f"{source} holds {model.num_classes} classes, but the config has model.num_classes {cfg['model']['num_classes']}"
        )
    default = class_meta(None, model.num_classes)
    meta = {"classes": saved.get("classes") or default["classes"], "palette": saved.get("palette") or default["palette"]}
    return model, cfg, meta
