"""``ssaseg export`` / ``ssaseg.export``: ONNX and torch.export, static and dynamic H/W, checked
against eager; half / bfloat16 inference of every architecture."""
from __future__ import annotations

import copy

import pytest
import torch

import ssaseg
from ssaseg.classifiers import CLASSIFIERS
from ssaseg.cli import run
from ssaseg.export import STATIC_SHAPE_ONLY, ExportError, dynamic_refusal, export_model
from ssaseg.models import architecture_of, list_models

pytestmark = pytest.mark.usefixtures("single_thread")

K = 5
#: Small variants of each architecture (None: the registered size is already small).
TINY: dict[str, dict] = {
    "segformer": dict(embed_dims=8, depths=(1, 1, 1, 1), channels=32),
    "segnext": dict(embed_dims=(8, 16, 32, 32), depths=(1, 1, 1, 1), channels=32, md_r=4),
    "upernet_swin": dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), channels=32, aux_channels=16),
    "upernet_vit_adapter": dict(embed_dim=64, depth=4, num_heads=4, deform_num_heads=4, conv_inplane=16,
                                pretrain_size=64, interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
                                channels=32, aux_channels=16),
    "fcn_resnet": dict(depth=50, channels=32, aux_channels=16),
}
#: One registered model per architecture (the smallest).
ONE_PER_ARCH = ["afformer_b", "cgrseg_b", "fcn_r101_d8", "ocrnet_hrnet_w18", "seaformer_b", "segformer_b0",
                "segnext_t", "upernet_swin_t", "upernet_vit_adapter_l"]


def small(name: str, classifier: str = "ssa") -> torch.nn.Module:
    torch.manual_seed(0)
    return ssaseg.create_model(name, K, classifier=classifier, **TINY.get(architecture_of(name), {}))


def test_one_per_arch_covers_the_zoo():
    import pkgutil

    import ssaseg.zoo

    zoo = {m.name for m in pkgutil.iter_modules(ssaseg.zoo.__path__)}  # not the test-only models
    assert sorted({architecture_of(n) for n in list_models()} & zoo) == sorted(architecture_of(n) for n in ONE_PER_ARCH)


def test_torch_export_dynamic_and_cli_onnx(tmp_path, capsys):
    """torch.export with symbolic H, W runs at another size; the CLI writes an ONNX file from a
    saved model and prints the onnxruntime-vs-eager difference."""
    model = small("segformer_b0").eval().deploy()
    result = export_model(model, tmp_path / "m.pt2", format="torch-export", size=(64, 96), dynamic=True)
    assert [c.shape for c in result.checks] == [(1, 3, 64, 96), (1, 3, 96, 160)]
    assert all(c.max_abs_diff <= 1e-5 for c in result.checks) and "height >=" in result.ranges
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path / "saved")
    assert run(["export", str(tmp_path / "saved"), str(tmp_path / "m.onnx"), "--size", "64", "64"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "static shape" in out and "max |onnxruntime - eager|" in out
    diff = float(out.split("max |onnxruntime - eager| = ")[1].split()[0])
    assert diff <= 1e-4


def test_export_refusals(tmp_path, monkeypatch, capsys):
    model = small("segformer_b0", "linear")
    monkeypatch.setitem(STATIC_SHAPE_ONLY, "segformer", "test reason")
    with pytest.raises(ExportError, match="cannot be exported with --dynamic: test reason"):
        export_model(model, tmp_path / "x.onnx", dynamic=True)
    with pytest.raises(ExportError, match="--format must be one of"):
        export_model(model, tmp_path / "x.onnx", format="tflite")
    assert run(["export", str(tmp_path / "nothing"), str(tmp_path / "x.onnx")]) == 2
    assert "nothing" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.onnx*"))


def _calibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Running statistics from one batch, so that a randomly initialised deep net (HRNet) keeps
    activations of order 1 and float16 is tested on values it can hold."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(x, torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.long))
    model.eval()


#: Runs, but far from float32 on CPU (max error / max |logit| measured at 64x64, BN calibrated):
#: open findings, not yet explained.
_IMPRECISE = {
    ("fcn_resnet", torch.bfloat16): "0.68", ("fcn_resnet", torch.float16): "0.20",
    ("ocrnet", torch.bfloat16): "0.44", ("seaformer", torch.bfloat16): "0.78", ("seaformer", torch.float16): "inf (non-finite logits)",
}


def _slow_unless(*fast: str) -> list:
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in ONE_PER_ARCH]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("classifier", sorted(CLASSIFIERS))
@pytest.mark.parametrize("name", _slow_unless("segformer_b0"))
def test_reduced_precision_inference(name, classifier, dtype, request):
    """model.to(dtype) inference on CPU: finite and within 15% of the float32 logits' range
    (a loose bound: randomly initialised models, CPU kernels; it catches dtype errors,
    overflow and garbage, not small precision losses)."""
    arch = architecture_of(name)
    if (arch, dtype) in _IMPRECISE:  # the backbone's precision, whatever the classifier
        request.applymarker(pytest.mark.xfail(
            reason=f"relative error {_IMPRECISE[arch, dtype]} on CPU (open finding)", raises=AssertionError, strict=False))
    # SegNeXt with fixed NMF bases: random ones would be drawn differently in each dtype
    extra = {"rand_init": False} if arch == "segnext" else {}
    torch.manual_seed(0)
    model = ssaseg.create_model(name, K, classifier=classifier, **TINY.get(arch, {}), **extra)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    _calibrate_batchnorm(model, x)
    model.deploy()
    with torch.no_grad():  # N(0, 1) instead of N(0, 0.01) class weights: logits of the features' scale
        model.classifier.conv_seg.weight.mul_(100)
    with torch.no_grad():
        ref = model(x)
        out = copy.deepcopy(model).to(dtype)(x.to(dtype)).float()
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert float((out - ref).abs().max()) <= 0.15 * float(ref.abs().max()), name


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
@pytest.mark.parametrize("name", ONE_PER_ARCH)
def test_dynamic_export_sweep(name, fmt, tmp_path):
    """Every architecture exports with dynamic H, W and matches eager at two sizes, unless
    STATIC_SHAPE_ONLY says why not (then it still exports with a static shape)."""
    model = small(name)
    _calibrate_batchnorm(model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    dynamic = dynamic_refusal(model, fmt) is None
    # 256x320: large enough that no feature map is so small that a model specialises on it
    result = export_model(model, tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt2'}", format=fmt, size=(256, 320),
                          dynamic=dynamic)
    assert len(result.checks) == (2 if dynamic else 1)
    if not dynamic:
        with pytest.raises(ExportError, match="cannot be exported with --dynamic"):
            export_model(model, tmp_path / "d.onnx", format=fmt, dynamic=True)
