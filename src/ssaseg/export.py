"""Deployment export: ONNX (``torch.onnx.export(dynamo=True)``) or a ``torch.export`` program
(``.pt2``), checked against the eager model (``ssaseg export``).

The exported function is the deployed model in eval mode: ``images (B, 3, H, W) float32 ->
logits (B, K, H, W)``. With ``dynamic=True`` the height and width are symbolic (the batch size
stays the example's); the export is then checked at the example size and at a second size.
Architectures that cannot take another size once exported are listed in
:data:`STATIC_SHAPE_ONLY` with the reason - the one place the command reads when it refuses
``--dynamic``.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMATS", "STATIC_SHAPE_ONLY", "ExportError", "ExportCheck", "ExportResult", "export_model", "dynamic_refusal"]

FORMATS = ("onnx", "torch-export")
_ADAPTIVE_POOL_ONNX = (
    " pools to 2/3/6 bins with adaptive average pooling, whose ONNX lowering gathers with indices computed "
    "for the example size (onnxruntime rejects any other size); --format torch-export is dynamic"
)
#: Why an exported graph cannot take another input height/width, keyed by architecture (zoo
#: module, see ``ssaseg.models.architecture_of``) for every format, or by ``"arch:format"`` for
#: one format. Found by exporting each architecture at a 256x320 example and running the export
#: at 288x384 (the slow sweep in tests/test_export.py); every other pair exports with dynamic H, W.
STATIC_SHAPE_ONLY: dict[str, str] = {
    "cgrseg": (
        "EfficientFormerV2 resizes its attention biases only when the token grid differs from the trained "
        "resolution (a branch on the input shape in backbones/efficientformer_v2.py), so the exported graph "
        "holds one side of it: either the fixed grid or every grid but that one"
    ),
    "upernet_vit_adapter": (
        "ViT-Adapter's deformable attention builds its offset normaliser with torch.tensor() from the level "
        "shapes (backbones/ms_deform_attn.py), so torch.export fixes the patch grid (H/16, W/16) to the example's"
    ),
    "afformer:onnx": "AFFormer's low-pass filter" + _ADAPTIVE_POOL_ONNX,
    "upernet_swin:onnx": "UperNet's pyramid pooling" + _ADAPTIVE_POOL_ONNX,
}
#: The second input size of a dynamic export's check is the example size plus this.
_SECOND_SIZE_OFFSET = (32, 64)


class ExportError(ValueError):
    """An export that cannot be made or that does not match the eager model."""


@dataclass
class ExportCheck:
    """One comparison of the export with the eager model on a random input."""

    shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float
    note: str = ""


@dataclass
class ExportResult:
    path: Path
    format: str
    dynamic: bool
    checks: list[ExportCheck] = field(default_factory=list)
    ranges: str = ""


def dynamic_refusal(model: nn.Module, format: str = "onnx") -> str | None:
    """Why ``model`` cannot be exported to ``format`` with dynamic height/width, or None when it can."""
    from .models import architecture_of

    name = getattr(model, "model_name", None)
    if not name:
        return None
    arch = architecture_of(name)
    return STATIC_SHAPE_ONLY.get(arch) or STATIC_SHAPE_ONLY.get(f"{arch}:{format}")


def _deployed_copy(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model).float().cpu().eval()
    if hasattr(model, "deploy"):
        model.deploy()
    return model


def _is_stochastic(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether eval outputs depend on the global RNG (SegNeXt built with ``nmf_random_eval=True``)."""
    with torch.no_grad():
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        b = model(x)
    return not torch.equal(a, b)


def _dynamic_shapes(dynamic: bool) -> dict[str, Any] | None:
    if not dynamic:
        return None
    from torch.export import Dim

    # AUTO: export infers the valid range (e.g. a minimum set by the strides); a dimension the
    # model specialises is caught below, never silently exported as static.
    return {"images": {2: Dim.AUTO, 3: Dim.AUTO}}


def _check_symbolic(program: torch.export.ExportedProgram, name: str) -> str:
    """The symbolic ranges of H and W; raises if export specialised either to a constant."""
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    dims = placeholder.meta["val"].shape[2:]
    static = [axis for axis, d in zip(("height", "width"), dims) if not isinstance(d, torch.SymInt)]
    if static:
        raise ExportError(
            f"the exported graph fixed the input {' and '.join(static)} to the example's; this model cannot "
            "be exported with dynamic shapes (add its architecture to ssaseg.export.STATIC_SHAPE_ONLY)"
        )
    parts = []
    for axis, d in zip(("height", "width"), dims):
        vr = program.range_constraints.get(d.node.expr)
        if vr is None:
            parts.append(axis)
            continue
        if str(vr.upper) not in ("int_oo", "oo"):  # sympy's unbounded integer / infinity
            raise ExportError(
                f"the exported graph only accepts an input {axis} in {vr.lower}..{vr.upper}: at this example size "
                "the model takes a size-dependent branch (small feature maps are common causes); export with a "
                "larger --size, or without --dynamic"
            )
        parts.append(f"{axis} >= {vr.lower}")
    return ", ".join(parts)


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(
            "checking an ONNX export needs onnxruntime (pip install onnxruntime, or ssaseg[export]); "
            "pass --no-check to skip the check"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    size: tuple[int, int] = (512, 512),
    batch: int = 1,
    dynamic: bool = False,
    check: bool = True,
    rtol: float = 1e-3,
    seed: int = 0,
) -> ExportResult:
    """Export the deployed, eval-mode copy of ``model`` to ``out`` and check it.

    Args:
        model: a segmentor (not modified: a deployed float32 CPU copy is exported).
        out: the file to write (``.onnx`` or ``.pt2``; written atomically).
        format: ``"onnx"`` or ``"torch-export"``.
        size: example input ``(H, W)``.
        batch: example batch size (static).
        dynamic: symbolic H and W (see :data:`STATIC_SHAPE_ONLY`).
        check: compare with eager on random input(s) (ONNX: with onnxruntime).
        rtol: the check fails when ``max|export - eager| > rtol * max(1, max|eager|)``.
    """
    from .fileio import atomic_write_file

    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if dynamic and (reason := dynamic_refusal(model, format)):
        raise ExportError(f"{model.model_name} cannot be exported with --dynamic: {reason}")
    model = _deployed_copy(model)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *size, generator=gen)
    stochastic = _is_stochastic(model, x)
    shapes = _dynamic_shapes(dynamic)
    out = Path(out)
    ranges = ""
    try:
        with torch.no_grad():
            program = torch.export.export(model, (x,), dynamic_shapes=shapes)
    except Exception as err:  # torch's own export errors name the op and the guard
        raise ExportError(f"torch.export failed for {getattr(model, 'model_name', 'the model')}: {err}") from err
    if dynamic:
        ranges = _check_symbolic(program, "images")
    if format == "torch-export":
        atomic_write_file(out, lambda tmp: torch.export.save(program, tmp))
        runner = torch.export.load(str(out)).module()
    else:
        def write_onnx(tmp: str) -> None:
            torch.onnx.export(
                program, (x,), tmp, dynamo=True, input_names=["images"], output_names=["logits"],
                external_data=False, verbose=False,
            )

        atomic_write_file(out, write_onnx)
        runner = None
    result = ExportResult(out, format, dynamic, ranges=ranges)
    if not check:
        return result
    inputs = [x]
    if dynamic:
        h, w = (s + o for s, o in zip(size, _SECOND_SIZE_OFFSET))
        inputs.append(torch.randn(batch, 3, h, w, generator=gen))
    for inp in inputs:
        with torch.no_grad():
            torch.manual_seed(seed)
            ref = model(inp)
            torch.manual_seed(seed)
            try:
                got = runner(inp) if runner is not None else _run_onnx(out, inp)
            except ExportError:
                raise
            except Exception as err:  # a guard of the exported graph, or the runtime, refused the input
                raise ExportError(f"{out} does not run on input {tuple(inp.shape)}: {err}") from err
        note = ""
        if stochastic and runner is None:
            # ONNX Runtime draws its own random numbers: compare with another eager draw instead.
            with torch.no_grad():
                torch.manual_seed(seed + 1)
                other = model(inp)
            note = f"random at inference; eager vs eager with another seed differs by {float((other - ref).abs().max()):.3g}"
        diff = float((got - ref).abs().max())
        scale = float(ref.abs().max())
        result.checks.append(ExportCheck(tuple(inp.shape), diff, scale, note))
        if got.shape != ref.shape or not torch.isfinite(got).all():
            raise ExportError(f"{out}: export returned {tuple(got.shape)} (finite: {bool(torch.isfinite(got).all())}) "
                              f"for input {tuple(inp.shape)}; eager returns {tuple(ref.shape)}")
        if not note and not diff <= rtol * max(1.0, scale):  # written so that NaN fails too
            raise ExportError(f"{out}: export differs from eager by {diff:.3g} (max |logit| {scale:.3g}) "
                              f"for input {tuple(inp.shape)}")
    return result
