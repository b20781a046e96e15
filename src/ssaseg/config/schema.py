"""The experiment-config schema: one dataclass per section, the only copy of every default.

Each field's type annotation is the type a YAML value must have (``X | None`` allows ``null``;
``list[int]`` checks the elements; ``dict[str, Any]`` is a free-form mapping; a nested dataclass
is a section), and its ``metadata`` (see :func:`setting`) carries the documentation, the allowed
values and any further constraint. :mod:`ssaseg.config.validation` checks values against it and
:mod:`ssaseg.config.docs` renders ``configs/SCHEMA.md`` from it.

The schema never imports torch: choices that live in torch-side registries
(``ssaseg.classifiers.CLASSIFIERS``) and constants owned by :mod:`ssaseg.data.meta` are looked
up lazily, when a default or a choice list is needed.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = [
    "Constraint",
    "ExperimentConfig",
    "ModelConfig",
    "DataConfig",
    "TrainPipelineConfig",
    "TestPipelineConfig",
    "OptimizerConfig",
    "ParamRule",
    "LayerDecay",
    "ScheduleConfig",
    "TrainConfig",
    "EvaluationConfig",
    "setting",
    "schema_defaults",
]


@dataclass(frozen=True)
class Constraint:
    """A rule a well-typed value must also satisfy; ``expect`` completes "KEY must be ...".

    ``test`` receives a value that already has the field's type (for a list: every element has
    the element type), so it only checks ranges and lengths.
    """

    expect: str
    test: Callable[[Any], bool]


def _count_of(n: int, what: str, ok: Callable[[Any], bool] = lambda x: True) -> Constraint:
    return Constraint(f"{n} {what}", lambda v: len(v) == n and all(ok(x) for x in v))


POSITIVE = Constraint("positive", lambda v: v > 0)
NON_NEGATIVE = Constraint(">= 0", lambda v: v >= 0)
INTERVAL = Constraint(">= 0 (0 disables)", lambda v: v >= 0)
FRACTION = Constraint("in [0, 1]", lambda v: 0 <= v <= 1)
OPEN_FRACTION = Constraint("in (0, 1]", lambda v: 0 < v <= 1)
SEED = Constraint("an integer in 0..2**63-1", lambda v: 0 <= v <= 2**63 - 1)
SIZE_PAIR = _count_of(2, "positive integers", lambda x: x > 0)
RATIO_RANGE = Constraint(
    "2 positive numbers (low <= high)", lambda v: len(v) == 2 and 0 < v[0] <= v[1]
)
RGB = _count_of(3, "numbers (R, G, B)")
POSITIVE_RGB = _count_of(3, "positive numbers (R, G, B)", lambda x: x > 0)
BETAS = _count_of(2, "numbers in [0, 1)", lambda x: 0 <= x < 1)
SCALES = Constraint("a non-empty list of positive numbers", lambda v: len(v) > 0 and all(x > 0 for x in v))


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    check: Constraint | None = None,
    required: bool = False,
    normalise: Callable[[Any], Any] | None = None,
) -> Any:
    """A schema field.

    Args:
        default: the default (lists and dicts are copied per instance); omit it for a key a
            mapping must always give (``LayerDecay``) or give ``factory``.
        doc: one line for SCHEMA.md.
        factory: computes the default lazily (for constants owned by other modules).
        choices: allowed values, or a function returning them (looked up at validation time).
        check: a :class:`Constraint` on well-typed values.
        required: the key must be non-null in a resolved config used for a run.
        normalise: maps a raw YAML value to the canonical one before any check.
    """
    metadata = {"doc": doc, "choices": choices, "check": check, "required": required, "normalise": normalise}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested section field (its default is the section's own defaults)."""
    return field(default_factory=cls, metadata={"doc": (cls.__doc__ or "").strip().splitlines()[0]})


def _classifier_names() -> tuple[str, ...]:
    from ..classifiers import CLASSIFIERS  # torch-side registry: imported only when validating

    return tuple(CLASSIFIERS)


def _imagenet_mean() -> list[float]:
    from ..data.meta import IMAGENET_MEAN

    return list(IMAGENET_MEAN)


def _imagenet_std() -> list[float]:
    from ..data.meta import IMAGENET_STD

    return list(IMAGENET_STD)


def _amp_from_bool(value: Any) -> Any:
    # YAML 1.1 reads an unquoted ``off`` as False (and ``on`` as True).
    if isinstance(value, bool):
        return "auto" if value else "off"
    return value


# ----------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    """The architecture, its classifier and the weights to start from."""

    name: str | None = setting(None, "`ssaseg.list_models()` name", required=True)
    classifier: str = setting("ssa", "pixel classifier (`ssaseg.classifiers.CLASSIFIERS`)", choices=_classifier_names)
    num_classes: int | None = setting(None, "K, the number of classes", check=POSITIVE, required=True)
    kwargs: dict[str, Any] = setting({}, "architecture kwargs for `create_model` (e.g. `drop_path_rate: 0.1`)")
    classifier_kwargs: dict[str, Any] = setting({}, "classifier constant overrides (SSA: tau, loss weights, ...)")
    backbone_weights: str | None = setting(
        None, "published backbone weights: a tag (`imagenet`, downloaded into `$SSASEG_CACHE`) or a local file"
    )
    checkpoint: str | None = setting(None, "a full-model checkpoint (ssaseg or official layout)")
    sync_bn: bool = setting(True, "BatchNorm -> SyncBatchNorm when the world size is > 1")


@dataclass
class TrainPipelineConfig:
    """The training augmentation (mmseg's pipeline)."""

    scale: list[int] = setting([2048, 512], "Resize `img_scale` (long, short)", check=SIZE_PAIR)
    ratio_range: list[float] = setting([0.5, 2.0], "random rescale ratio (low, high)", check=RATIO_RANGE)
    crop_size: list[int] = setting([512, 512], "random crop (h, w)", check=SIZE_PAIR)
    cat_max_ratio: float = setting(0.75, "max share of one class in a crop (10 tries)", check=OPEN_FRACTION)
    flip_prob: float = setting(0.5, "horizontal flip probability", check=FRACTION)
    photometric: bool = setting(True, "PhotoMetricDistortion")
    mean: list[float] = setting(factory=_imagenet_mean, doc="normalisation mean, RGB", check=RGB)
    std: list[float] = setting(factory=_imagenet_std, doc="normalisation std, RGB", check=POSITIVE_RGB)


@dataclass
class TestPipelineConfig:
    """The deterministic test resize."""

    __test__ = False  # not a pytest test class despite the name

    scale: list[int] = setting([2048, 512], "keep-ratio Resize into (long, short)", check=SIZE_PAIR)
    resize_to_multiple: int | None = setting(32, "ResizeToMultiple divisor (null disables)", check=POSITIVE)
    mean: list[float] = setting(factory=_imagenet_mean, doc="normalisation mean, RGB", check=RGB)
    std: list[float] = setting(factory=_imagenet_std, doc="normalisation std, RGB", check=POSITIVE_RGB)


@dataclass
class DataConfig:
    """The dataset, its splits, the loaders and both pipelines."""

    dataset: str | None = setting(None, "`ssaseg.data.DATASETS` name (its defaults apply, see below)", required=True)
    root: str | None = setting(None, "dataset root (demo: cache dir)")
    train_split: str = setting("training", "split name (the dataset's other spellings are accepted)")
    val_split: str = setting("validation", "split name")
    classes: str | None = setting(None, "folder dataset only: a file with one class name per line")
    reduce_zero_label: bool | None = setting(None, "null = the dataset's default")
    batch_size: int = setting(4, "images per process", check=POSITIVE)
    num_workers: int = setting(4, "DataLoader workers per process", check=NON_NEGATIVE)
    repeat: int = setting(1, "RepeatDataset factor (SegNeXt configs: 50)", check=POSITIVE)
    train_pipeline: TrainPipelineConfig = section(TrainPipelineConfig)
    test_pipeline: TestPipelineConfig = section(TestPipelineConfig)


@dataclass
class ParamRule:
    """One ``optimizer.param_rules`` entry (mmcv ``custom_keys``); an absent key means 1.0."""

    lr_mult: float = setting(1.0, "learning-rate multiplier", check=NON_NEGATIVE)
    decay_mult: float = setting(1.0, "weight-decay multiplier", check=NON_NEGATIVE)


@dataclass
class LayerDecay:
    """Layer-wise lr decay (ViT-Adapter); both keys are needed."""

    rate: float = setting(doc="lr multiplier per layer from the top", check=OPEN_FRACTION)
    num_layers: int = setting(doc="number of backbone layers", check=POSITIVE)


@dataclass
class OptimizerConfig:
    """AdamW or SGD with mmcv-style parameter rules."""

    type: str = setting("adamw", "optimizer", choices=("adamw", "sgd"))
    lr: float = setting(6.0e-5, "base learning rate", check=NON_NEGATIVE)
    betas: list[float] = setting([0.9, 0.999], "AdamW betas", check=BETAS)
    momentum: float = setting(0.9, "SGD momentum", check=FRACTION)
    weight_decay: float = setting(0.01, "weight decay", check=NON_NEGATIVE)
    param_rules: dict[str, ParamRule] = setting(
        {}, "`{substring: {lr_mult, decay_mult}}`: longest key first, ties alphabetical; first match wins"
    )
    layer_decay: LayerDecay | None = setting(None, "`{rate, num_layers}` (ViT-Adapter: `{rate: 0.95, num_layers: 24}`)")


@dataclass
class ScheduleConfig:
    """Poly learning rate with linear warm-up, per iteration."""

    max_iters: int = setting(160000, "training iterations", check=POSITIVE)
    warmup_iters: int = setting(1500, "linear warm-up iterations", check=NON_NEGATIVE)
    warmup_ratio: float = setting(1.0e-6, "warm-up starts at lr * warmup_ratio", check=FRACTION)
    power: float = setting(1.0, "poly exponent", check=NON_NEGATIVE)
    min_lr: float = setting(0.0, "poly floor", check=NON_NEGATIVE)


@dataclass
class TrainConfig:
    """Precision, logging, checkpoints and the seed."""

    amp: str = setting(
        "auto", "auto: bf16 on CUDA if supported, off on CPU", choices=("auto", "bf16", "fp16", "off"),
        normalise=_amp_from_bool,
    )
    eval_interval: int = setting(8000, "iterations between evaluations", check=INTERVAL)
    checkpoint_interval: int = setting(8000, "iterations between checkpoints", check=INTERVAL)
    log_interval: int = setting(50, "iterations between log records", check=INTERVAL)
    seed: int = setting(0, "seed of the data order, augmentation and initialisation", check=SEED)
    work_dir: str | None = setting(None, "run directory (null: `runs/<config stem>`)")
    find_unused_parameters: bool = setting(False, "DDP `find_unused_parameters`")
    max_keep_checkpoints: int = setting(0, "keep only the newest N `iter_*.pth` (0 keeps all)", check=NON_NEGATIVE)
    nonfinite: str = setting(
        "stop", "a NaN/inf loss: `stop` the run (exit 2) or `skip` the update (one host sync per step)",
        choices=("stop", "skip"),
    )


@dataclass
class EvaluationConfig:
    """Whole-image or sliding-window test, flip and multi-scale TTA."""

    mode: str = setting("whole", "test mode", choices=("whole", "slide"))
    crop_size: list[int] = setting([512, 512], "slide window (h, w)", check=SIZE_PAIR)
    stride: list[int] = setting([341, 341], "slide stride (h, w)", check=SIZE_PAIR)
    flip: bool = setting(False, "horizontal-flip TTA")
    scales: list[float] = setting([1.0], "multi-scale TTA ratios", check=SCALES)


@dataclass
class ExperimentConfig:
    """One experiment: the root of the schema."""

    model: ModelConfig = section(ModelConfig)
    data: DataConfig = section(DataConfig)
    optimizer: OptimizerConfig = section(OptimizerConfig)
    schedule: ScheduleConfig = section(ScheduleConfig)
    train: TrainConfig = section(TrainConfig)
    evaluation: EvaluationConfig = section(EvaluationConfig)


def schema_defaults() -> dict[str, Any]:
    """Every key's default as the plain nested dict a resolved config is (a fresh copy)."""
    return dataclasses.asdict(ExperimentConfig())
