"""Model complexity counters: parameters, GMACs in the mmcv 1.x convention, true FLOPs, latency.

Three numbers are reported because they answer different questions:

* :func:`mmcv_gmacs` reproduces the figure that mmseg 0.x's ``tools/get_flops.py`` prints (and
  that the SSA-Seg paper and most mmseg-based papers report as "FLOPs"): forward hooks on an
  exact-type table of modules, one multiply-add counted as one "FLOP". It does not see
  ``matmul``/``bmm``/``einsum``, ``F.interpolate``, softmax, GELU/Hardswish/Sigmoid, attention
  written with ``nn.MultiheadAttention`` or any module whose type is not in the table
  (``nn.SyncBatchNorm`` included), so it understates attention models and the SSA classifier
  (docs/algorithm.md Q17).
* :func:`true_gflops` runs ``torch.utils.flop_counter.FlopCounterMode``: every matmul and
  convolution, SSA's own included, counted as 2 FLOPs per multiply-add. Element-wise work
  (norms, activations, softmax, interpolation) is not counted by it.
* :func:`latency_ms`: median wall time of the whole-image test forward, batch 1.
"""
from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ParamCount",
    "latency_ms",
    "meta_copy",
    "mmcv_gmacs",
    "mmcv_macs_by_module",
    "params",
    "true_gflops",
]

# --------------------------------------------------------------------------------------------
# mmcv 1.x counter (mmcv 1.7.2, mmcv/cnn/utils/flops_counter.py, itself derived from ptflops)
# --------------------------------------------------------------------------------------------
# Each rule receives (module, first positional input, output) for batch B and returns the MACs
# mmcv adds to ``module.__flops__`` for that call. mmcv divides the grand total by the batch
# size seen by the root module, so every rule below is "per call, whole batch".


def _conv_macs(m: nn.Module, x: Tensor, out: Tensor) -> int:
    # k·Cin·(Cout // groups) per output position, times B·prod(out spatial); plus one add per
    # output element when the conv has a bias.
    positions = x.shape[0] * math.prod(out.shape[2:])
    macs = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups) * positions
    if m.bias is not None:
        macs += m.out_channels * positions
    return macs


def _deconv_macs(m: nn.Module, x: Tensor, out: Tensor) -> int:
    # Transposed conv is counted per INPUT position; the bias per output element. (mmcv
    # versions multiplied the output height by itself here; 1.7.2 uses H·W.)
    kh, kw = m.kernel_size
    macs = kh * kw * m.in_channels * (m.out_channels // m.groups) * x.shape[0] * x.shape[2] * x.shape[3]
    if m.bias is not None:
        macs += m.out_channels * x.shape[0] * out.shape[2] * out.shape[3]
    return macs


def _linear_macs(m: nn.Module, x: Tensor, out: Tensor) -> int:
    # numel(input) · out_features: the bias is not counted.
    return x.numel() * out.shape[-1]


def _norm_macs(m: nn.Module, x: Tensor, out: Tensor) -> int:
    # numel(input), doubled when the norm has an affine transform (``affine`` for BN/GN/IN,
    # ``elementwise_affine`` for LayerNorm).
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return x.numel() * (2 if affine else 1)


def _act_macs(m: nn.Module, x: Tensor, out: Tensor) -> int:
    return out.numel()


def _pool_macs(m: nn.Module, x: Tensor, out: Tensor) -> int:
    return x.numel()


def _upsample_macs(m: nn.Module, x: Tensor, out: Tensor) -> int:
    # mmcv takes ``output[0]``, the first image of the batch: numel(output) / B.
    return out[0].numel()


_MMCV_RULES: dict[type, Callable[[nn.Module, Tensor, Tensor], int]] = {
    nn.Conv1d: _conv_macs,
    nn.Conv2d: _conv_macs,
    nn.Conv3d: _conv_macs,
    nn.ConvTranspose2d: _deconv_macs,
    nn.Linear: _linear_macs,
    nn.BatchNorm1d: _norm_macs,
    nn.BatchNorm2d: _norm_macs,
    nn.BatchNorm3d: _norm_macs,
    nn.GroupNorm: _norm_macs,
    nn.InstanceNorm1d: _norm_macs,
    nn.InstanceNorm2d: _norm_macs,
    nn.InstanceNorm3d: _norm_macs,
    nn.LayerNorm: _norm_macs,
    nn.ReLU: _act_macs,
    nn.PReLU: _act_macs,
    nn.ELU: _act_macs,
    nn.LeakyReLU: _act_macs,
    nn.ReLU6: _act_macs,
    nn.MaxPool1d: _pool_macs,
    nn.MaxPool2d: _pool_macs,
    nn.MaxPool3d: _pool_macs,
    nn.AvgPool1d: _pool_macs,
    nn.AvgPool2d: _pool_macs,
    nn.AvgPool3d: _pool_macs,
    nn.AdaptiveMaxPool1d: _pool_macs,
    nn.AdaptiveMaxPool2d: _pool_macs,
    nn.AdaptiveMaxPool3d: _pool_macs,
    nn.AdaptiveAvgPool1d: _pool_macs,
    nn.AdaptiveAvgPool2d: _pool_macs,
    nn.AdaptiveAvgPool3d: _pool_macs,
    nn.Upsample: _upsample_macs,
}


def _first_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            return value
    return None


class _EvalMode:
    """Context: every module in eval mode, then each module's own ``training`` flag restored."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for module, flag in self.flags:
            module.training = flag


def _dummy_input(model: nn.Module, input_shape: Sequence[int], values: bool = True) -> Tensor:
    """A ``(B, 3, H, W)`` input on the model's device and dtype (uninitialised if not ``values``)."""
    if len(input_shape) != 4 or input_shape[1] != 3:
        raise ValueError(f"input_shape must be (B, 3, H, W), got {tuple(input_shape)}")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    if not values:
        return torch.empty(tuple(input_shape), device=device, dtype=dtype)
    # Deterministic content: data-dependent paths (if any) take the same branch every run.
    generator = torch.Generator().manual_seed(0)
    return torch.randn(tuple(input_shape), generator=generator).to(device=device, dtype=dtype)


def meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers live on the ``meta`` device.

    Costs no weight memory (used to count parameters after ``deploy()`` without touching the
    caller's model).
    """
    memo: dict[int, object] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def _forward_counted(
    model: nn.Module,
    input_shape: Sequence[int],
    shape_only: bool,
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """One eval forward of ``model`` under ``inference_mode`` and a fresh ``context()``.

    With ``shape_only`` the forward runs under a ``FakeTensorMode``: tensors carry shapes,
    dtypes and devices but no data, so no arithmetic is done and no activation memory is
    used; module hooks and dispatch modes see the same calls and shapes as in a real run.
    A forward that needs values (``.item()``, data-dependent shapes) raises there and is
    re-run for real, which gives the same counts, only slower; ``context`` is called once
    per attempt so that each attempt starts its count from zero.
    """

    def forward(values: bool) -> None:
        with _EvalMode(model), torch.inference_mode():
            x = _dummy_input(model, input_shape, values)
            with context():
                model(x)

    if shape_only:
        from torch._subclasses.fake_tensor import FakeTensorMode

        try:
            with _no_fake_leftovers(model), FakeTensorMode(allow_non_fake_inputs=True):
                forward(values=False)
            return
        except (RuntimeError, NotImplementedError, TypeError):
            pass
    forward(values=True)


@contextlib.contextmanager
def _no_fake_leftovers(model: nn.Module):
    """Undo what a fake forward stored on the model: a module that caches a tensor in eval
    mode (an attention-bias table, a resized positional embedding) would otherwise keep a
    data-less FakeTensor and break the next real forward."""
    from torch._subclasses.fake_tensor import FakeTensor

    stores = [(d, dict(d)) for m in model.modules() for d in (m.__dict__, m._buffers, m._parameters)]
    try:
        yield
    finally:
        for store, before in stores:
            for key in [k for k, v in store.items() if isinstance(v, FakeTensor)]:
                if key in before:
                    store[key] = before[key]
                else:
                    del store[key]


def mmcv_macs_by_module(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 512, 512),
    skip_types: Iterable[type] = (),
    shape_only: bool = True,
) -> dict[str, float]:
    """Per-module MACs under mmcv 1.x's rules (see :func:`mmcv_gmacs`), summed over calls.

    Returns ``{qualified module name: MACs per image}`` for every counted module that ran
    (``""`` is the root). Useful to find which module makes a total differ from a reference.
    """
    skip = tuple(skip_types)
    counts: dict[str, int] = {}
    handles = []

    @contextlib.contextmanager
    def fresh_count():
        counts.clear()
        yield

    def make_hook(name: str, rule: Callable[[nn.Module, Tensor, Tensor], int]):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            x = _first_tensor(args, kwargs)
            out = output if isinstance(output, Tensor) else _first_tensor(tuple(output), {})
            if x is None or out is None:
                raise TypeError(f"mmcv counter: module {name or type(module).__name__} got no tensor input/output")
            # ``+=``: a module called several times (shared weights) is counted at every call.
            counts[name] = counts.get(name, 0) + int(rule(module, x, out))

        return hook

    # mmcv hooks EVERY module whose exact type is in the table (module.apply, not leaves only),
    # so a counted module nested in another counted module would be counted in both; subclasses
    # (e.g. MultiheadAttention's NonDynamicallyQuantizableLinear, SyncBatchNorm) are not counted.
    for name, module in model.named_modules():
        rule = _MMCV_RULES.get(type(module))
        if rule is not None and not isinstance(module, skip):
            handles.append(module.register_forward_hook(make_hook(name, rule), with_kwargs=True))
    try:
        _forward_counted(model, input_shape, shape_only, fresh_count)
    finally:
        for handle in handles:
            handle.remove()
    # mmcv reports the average per image: the grand total over the batch seen by the root.
    return {name: macs / input_shape[0] for name, macs in counts.items()}


def mmcv_gmacs(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 512, 512),
    skip_types: Iterable[type] = (),
    shape_only: bool = True,
) -> float:
    """GMACs of one forward of ``model`` on a ``input_shape`` tensor, counted as mmcv 1.x does.

    This is the number mmseg 0.x's ``tools/get_flops.py`` prints as "GFLOPs" (mmcv:
    "a multiply-add counts as one FLOP"). The model runs once in eval mode under
    ``torch.inference_mode`` (its modules' ``training`` flags are restored and all hooks are
    removed afterwards; its weights are not modified); for a :class:`~ssaseg.segmentor.Segmentor` the eval forward is
    mmseg's ``forward_dummy``: backbone, decode head test path, classifier student path, resize.
    Unexecuted modules (teacher, auxiliary heads) contribute nothing, so deploying first does
    not change the figure.

    Rules, per call, for a module whose ``type()`` is exactly one of these (subclasses are NOT
    counted), with B the batch and input/output the first tensor in/out:

    * ``Conv1d/2d/3d``: ``prod(kernel) · Cin · (Cout // groups) · B · prod(out spatial)``,
      plus ``Cout · B · prod(out spatial)`` when it has a bias.
    * ``ConvTranspose2d``: ``kh · kw · Cin · (Cout // groups) · B · Hin · Win``, plus
      ``Cout · B · Hout · Wout`` when it has a bias.
    * ``Linear``: ``numel(input) · out_features``; the bias is not counted.
    * ``BatchNorm1d/2d/3d``, ``GroupNorm``, ``InstanceNorm1d/2d/3d``, ``LayerNorm``:
      ``numel(input)``, times 2 when affine (``affine`` / ``elementwise_affine``).
    * ``ReLU``, ``PReLU``, ``ELU``, ``LeakyReLU``, ``ReLU6``: ``numel(output)``.
    * ``Max/AvgPool1d/2d/3d``, ``AdaptiveMax/AvgPool1d/2d/3d``: ``numel(input)``.
    * ``Upsample``: ``numel(output[0])`` (first image of the batch).

    The total is divided by B. Everything else costs 0: ``nn.MultiheadAttention`` (its
    ``out_proj`` is a ``NonDynamicallyQuantizableLinear``), ``matmul``/``bmm``/``einsum``,
    ``F.interpolate``, softmax, GELU/Hardswish/Sigmoid/SiLU, ``nn.SyncBatchNorm``,
    ``nn.Embedding``, ``nn.Identity``/``Dropout``. A module called twice is counted twice.

    Args:
        model: any ``nn.Module`` taking one image tensor.
        input_shape: ``(B, 3, H, W)``; mmseg papers use ``(1, 3, 512, 512)``.
        skip_types: extra module types to leave uncounted, e.g. ``(nn.BatchNorm2d,)`` to
            mimic a reference config that built those norms as SyncBN (mmseg's get_flops does
            not revert SyncBN, so those norms are absent from published figures).
        shape_only: run the forward under ``FakeTensorMode`` (shapes only: fast, no
            activation memory); a model whose forward needs values falls back to a real one.

    Returns:
        MACs / 1e9.
    """
    return sum(mmcv_macs_by_module(model, input_shape, skip_types, shape_only).values()) / 1e9


# --------------------------------------------------------------------------------------------
# Parameters, true FLOPs, latency
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one model.

    * ``train``: every parameter of the model as built (auxiliary heads, SSA teacher).
    * ``inference``: after ``deploy()`` (no auxiliary heads, no teacher).
    * ``readme``: as built, less the classifier's train-only modules: auxiliary heads
      included, SSA teacher projections excluded. The SSA-Seg README's counts follow this
      convention (docs/algorithm.md §15.4 item 5; e.g. UperNet Swin-T 59.94 M + 1.13 M = 61.1 M).
    """

    train: int
    inference: int
    readme: int


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def params(model: nn.Module) -> ParamCount:
    """Parameter counts of ``model`` for training, inference and the README convention.

    ``deploy()`` runs on structural copies whose tensors live on the ``meta`` device, so the
    caller's model is untouched and no weight memory is duplicated. A model without
    ``deploy()`` has all three counts equal. Frozen parameters are included (mmcv counts only
    ``requires_grad`` ones; every ssaseg model is fully trainable, so they agree).
    """

    def deployed(module: nn.Module) -> int:
        skeleton = meta_copy(module)
        skeleton.deploy()
        return _count(skeleton)

    train = _count(model)
    inference = deployed(model) if hasattr(model, "deploy") else train
    classifier = getattr(model, "classifier", None)
    readme = train
    if isinstance(classifier, nn.Module) and hasattr(classifier, "deploy"):
        readme = train - _count(classifier) + deployed(classifier)
    return ParamCount(train, inference, readme)


def true_gflops(
    model: nn.Module, input_shape: Sequence[int] = (1, 3, 512, 512), shape_only: bool = True
) -> float:
    """GFLOPs (2 per multiply-add) of one eval forward, from ``torch.utils.flop_counter``.

    Counts every matmul/bmm/convolution/attention kernel dispatched by the forward, including
    SSA's gathers and cosine classifier; element-wise work is not counted. Batch-1 figure:
    the total is divided by ``input_shape[0]``. ``shape_only`` as in :func:`mmcv_gmacs`.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counters: list[FlopCounterMode] = []

    def fresh_counter() -> FlopCounterMode:
        counters.append(FlopCounterMode(display=False))
        return counters[-1]

    _forward_counted(model, input_shape, shape_only, fresh_counter)
    return counters[-1].get_total_flops() / input_shape[0] / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 512, 512),
    runs: int = 20,
    warmup: int = 5,
) -> float:
    """Median wall time (ms) of ``model(x).argmax(1)`` on the model's device.

    Whole-image test forward (backbone, decoder, classifier, resize to the input size) plus
    the argmax, as in mmseg's benchmark loop, without data loading or host copies; CUDA is
    synchronised around each run. ``warmup`` runs are discarded. ``cudnn.benchmark`` is left as
    the caller set it (mmseg's benchmark sets it False).
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    times: list[float] = []
    with _EvalMode(model), torch.inference_mode():
        x = _dummy_input(model, input_shape)
        device = x.device
        for i in range(warmup + runs):
            _sync(device)
            start = time.perf_counter()
            model(x).argmax(1)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
