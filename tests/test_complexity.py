"""Calibration of ssaseg.complexity: hand-computed mmcv-1.x MACs, params, true FLOPs, CLI."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssaseg import complexity
from ssaseg.complexity import mmcv_gmacs, mmcv_macs_by_module, params, true_gflops


def macs(module: nn.Module, shape: tuple[int, ...], **kw) -> float:
    return mmcv_gmacs(module, shape, **kw) * 1e9


class Seq(nn.Module):
    """Applies ``body`` to the image, then ``tail`` to the flattened (B, N, C) tokens."""

    def __init__(self, body: nn.Module, tail: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.tail = tail

    def forward(self, x):
        x = self.body(x)
        if self.tail is not None:
            x = self.tail(x.flatten(2).transpose(1, 2))
        return x


# ------------------------------------------------------------------- per-module rules, by hand
@pytest.mark.parametrize("bias", [True, False])
def test_conv_with_and_without_bias(bias):
    # 3x3, stride 2, 3->16 on 32x32 -> 16x16 outputs: 9*3*16 per position (+16 for the bias).
    positions = 16 * 16
    expected = 9 * 3 * 16 * positions + (16 * positions if bias else 0)
    assert macs(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=bias), (1, 3, 32, 32)) == expected


def test_grouped_dilated_and_depthwise_conv():
    # groups=4: k * Cin * (Cout // groups); dilation changes only the output size.
    grouped = nn.Conv2d(16, 32, 3, padding=2, dilation=2, groups=4, bias=False)
    assert macs(Seq(nn.Sequential(nn.Conv2d(3, 16, 1, bias=False), grouped)), (1, 3, 8, 8)) == (
        3 * 16 * 64 + 9 * 16 * 8 * 64
    )
    dw = Seq(nn.Sequential(nn.Conv2d(3, 16, 1, bias=False), nn.Conv2d(16, 16, 5, padding=2, groups=16)))
    assert macs(dw, (1, 3, 8, 8)) == 3 * 16 * 64 + (25 * 16 * 1 * 64 + 16 * 64)


def test_conv1d_and_transposed_conv():
    # ConvTranspose2d is counted per input position, its bias per output element.
    deconv = nn.ConvTranspose2d(3, 8, 4, stride=2, padding=1)
    assert macs(deconv, (1, 3, 6, 10)) == 16 * 3 * 8 * 6 * 10 + 8 * 12 * 20
    conv1d = Seq(nn.Conv2d(3, 4, 1, bias=False), nn.Sequential(Transpose(), nn.Conv1d(4, 6, 3, bias=False)))
    assert macs(conv1d, (1, 3, 4, 5)) == 3 * 4 * 20 + 3 * 4 * 6 * 18


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


def test_linear_on_tokens_counts_no_bias():
    # (1, 40, 3) tokens -> Linear(3, 12): numel(input) * out_features; bias ignored.
    for bias in (True, False):
        model = Seq(nn.Identity(), nn.Linear(3, 12, bias=bias))
        assert macs(model, (1, 3, 5, 8)) == 40 * 3 * 12


@pytest.mark.parametrize(
    "norm, factor",
    [
        (nn.BatchNorm2d(3), 2),
        (nn.BatchNorm2d(3, affine=False), 1),
        (nn.GroupNorm(1, 3), 2),
        (nn.GroupNorm(3, 3, affine=False), 1),
        (nn.InstanceNorm2d(3), 1),  # affine=False by default
        (nn.InstanceNorm2d(3, affine=True), 2),
    ],
)
def test_norms(norm, factor):
    assert macs(norm, (1, 3, 8, 8)) == 3 * 64 * factor


@pytest.mark.parametrize("affine, factor", [(True, 2), (False, 1)])
def test_layernorm_on_tokens(affine, factor):
    assert macs(Seq(nn.Identity(), nn.LayerNorm(3, elementwise_affine=affine)), (1, 3, 4, 4)) == 16 * 3 * factor


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.PReLU(), nn.ELU(), nn.LeakyReLU()])
def test_counted_activations(act):
    assert macs(act, (1, 3, 8, 8)) == 3 * 64


@pytest.mark.parametrize(
    "pool", [nn.MaxPool2d(2), nn.AvgPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d((2, 3))]
)
def test_pooling_counts_its_input(pool):
    assert macs(pool, (1, 3, 8, 12)) == 3 * 8 * 12


def test_upsample_counts_its_output_per_image():
    # mmcv takes output[0] (one image) and then divides by the batch: numel(out) / B².
    assert macs(nn.Upsample(scale_factor=2), (1, 3, 4, 4)) == 3 * 8 * 8
    assert macs(nn.Upsample(scale_factor=2, mode="bilinear"), (2, 3, 4, 4)) == 3 * 8 * 8 / 2


def test_batch_average():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert macs(conv, (2, 3, 8, 8)) == macs(conv, (1, 3, 8, 8))


# ------------------------------------------------------------------------ what is NOT counted
class Uncounted(nn.Module):
    """Every op mmcv 1.x does not see, around one counted 1x1 conv (3->4, no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)
        self.sbn = nn.SyncBatchNorm(4)
        self.emb = nn.Embedding(7, 4)
        self.gelu, self.hswish, self.sigmoid, self.silu = nn.GELU(), nn.Hardswish(), nn.Sigmoid(), nn.SiLU()
        self.drop = nn.Dropout(0.1)
        self.weight = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        x = self.sigmoid(self.hswish(self.gelu(self.sbn(self.conv(x)))))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear")
        x = F.conv2d(x, self.weight[:, :, None, None]) + F.relu(x) + F.layer_norm(x, x.shape[1:])
        t = self.silu(self.drop(x.flatten(2).transpose(1, 2)))
        t = self.mha(t, t, t, need_weights=False)[0] + self.emb(torch.zeros(t.shape[:2], dtype=torch.long))
        t = torch.softmax(t @ t.transpose(1, 2), -1) @ t
        return torch.einsum("bnc,cd->bnd", t, self.weight) + torch.bmm(t, t.transpose(1, 2))[..., :4]


def test_uncounted_ops_cost_nothing():
    model = Uncounted()
    per_module = mmcv_macs_by_module(model, (1, 3, 4, 4))
    # MHA's out_proj is a NonDynamicallyQuantizableLinear (a Linear subclass): not counted.
    assert set(per_module) == {"conv"}
    assert per_module["conv"] == 3 * 4 * 16


def test_subclass_of_a_counted_type_is_not_counted():
    class MyConv(nn.Conv2d):
        pass

    assert macs(MyConv(3, 4, 1), (1, 3, 4, 4)) == 0
    assert macs(MyConv(3, 4, 1), (1, 3, 4, 4), shape_only=False) == 0


def test_skip_types_mimics_syncbn_configs():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    assert macs(model, (1, 3, 4, 4)) == 3 * 4 * 16 + 2 * 64 + 64
    assert macs(model, (1, 3, 4, 4), skip_types=(nn.BatchNorm2d,)) == 3 * 4 * 16 + 64


# -------------------------------------------------------------------- call and nesting semantics
def test_reused_module_is_counted_at_every_call():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)

        def forward(self, x):
            return self.conv(self.conv(x))

    assert macs(Twice(), (1, 3, 4, 4)) == 2 * 9 * 16


def test_nested_counted_modules_are_each_counted():
    # mmcv hooks every module of a listed type (module.apply), not leaves only: a ReLU kept
    # inside a Conv2d and called by the parent counts as a ReLU, the conv as a conv.
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1, bias=False)
            self.conv.act = nn.ReLU()

        def forward(self, x):
            return self.conv.act(self.conv(x))

    assert mmcv_macs_by_module(Nested(), (1, 3, 4, 4)) == {"conv": 3 * 4 * 16, "conv.act": 64}


def test_shape_only_falls_back_for_value_dependent_forward_without_double_counting():
    class ValueDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1, bias=False)
            self.b = nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x):
            y = self.a(x)  # runs (and is counted) before the fake forward fails below
            n = int((y > -1e9).sum().item())
            return self.b(y)[..., : max(1, n)]

    expected = 3 * 4 * 16 + 4 * 4 * 16
    assert macs(ValueDependent(), (1, 3, 4, 4)) == expected
    assert true_gflops(ValueDependent(), (1, 3, 4, 4)) * 1e9 == 2 * expected


def test_shape_only_equals_real_forward():
    model = Uncounted()
    model.extra = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Upsample(scale_factor=2))
    model.forward = lambda x, m=model: Uncounted.forward(m, m.extra(x))
    shape = (1, 3, 8, 8)
    assert mmcv_macs_by_module(model, shape) == mmcv_macs_by_module(model, shape, shape_only=False)
    assert true_gflops(model, shape) == true_gflops(model, shape, shape_only=False)


def test_tensors_cached_during_the_fake_forward_are_undone():
    class Caching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.register_buffer("table", torch.ones(4))
            self.cache = torch.zeros(4)

        def forward(self, x):
            self.cache = self.conv.weight.flatten()[:4] * 2  # eval-time cache, as some backbones do
            self.table = self.table + 1
            self.scratch = x.mean()
            return self.conv(x) + self.cache[:, None, None] + self.table[:, None, None]

    model = Caching()
    macs(model, (1, 3, 4, 4))
    true_gflops(model, (1, 3, 4, 4))
    assert torch.equal(model.cache, torch.zeros(4)) and torch.equal(model.table, torch.ones(4))
    assert not hasattr(model, "scratch")
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 4, 4, 4)  # real forward still works


def test_counter_restores_the_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    model.train()
    model[1].eval()
    seen = []
    user_hook = model[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for shape_only in (True, False):
        mmcv_gmacs(model, (1, 3, 8, 8), shape_only=shape_only)
        true_gflops(model, (1, 3, 8, 8), shape_only=shape_only)
    assert model.training and model[0].training and not model[1].training and model[2].training
    assert [len(m._forward_hooks) for m in model] == [1, 0, 0]
    assert len(seen) == 4  # the user's hook still fires, alongside ours
    user_hook.remove()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BN stats untouched


def test_hooks_are_removed_when_the_forward_fails():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            self.conv(x)
            raise ValueError("boom")

    model = Broken()
    with pytest.raises(ValueError, match="boom"):
        mmcv_gmacs(model, (1, 3, 4, 4))
    assert len(model.conv._forward_hooks) == 0


def test_bad_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        mmcv_gmacs(nn.Conv2d(3, 4, 1), (3, 64, 64))


# ------------------------------------------------------------------------ true FLOPs, latency
def test_true_gflops_counts_matmuls_as_two_flops_per_mac():
    class MatMul(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1, bias=False)

        def forward(self, x):
            t = self.conv(x).flatten(2)  # (1, 8, 16)
            return t @ t.transpose(1, 2)  # 8*8*16 MACs, invisible to mmcv

    assert macs(MatMul(), (1, 3, 4, 4)) == 3 * 8 * 16
    assert true_gflops(MatMul(), (1, 3, 4, 4)) * 1e9 == 2 * (3 * 8 * 16 + 8 * 8 * 16)


def test_latency_is_positive_and_validates_runs():
    model = nn.Conv2d(3, 4, 3)
    assert complexity.latency_ms(model, (1, 3, 16, 16), runs=2, warmup=1) > 0
    with pytest.raises(ValueError, match="runs"):
        complexity.latency_ms(model, (1, 3, 16, 16), runs=0)


# ----------------------------------------------------------------------- segmentor integration
class TinyBackbone(nn.Module):
    out_channels = [8, 16]
    strides = [4, 8]

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        f1 = self.conv1(x)
        return [f1, self.conv2(f1)]


def tiny_segmentor(num_classes: int = 5, classifier: str = "linear", **kwargs):
    from ssaseg.decoders.fcn import FCNDecoder
    from ssaseg.segmentor import build_segmentor, fcn_aux_head

    decoder = FCNDecoder(16, 8, in_index=1, num_convs=1, kernel_size=3)
    aux = fcn_aux_head(8, num_classes, in_index=0, channels=8)
    return build_segmentor(TinyBackbone(), decoder, num_classes, classifier, aux_heads=[aux])


def test_segmentor_counts_the_test_path_only():
    # 64x64 input: conv1 -> 8x16x16, conv2 -> 16x8x8, FCN 3x3 ConvModule (no bias) + BN + ReLU,
    # conv_seg 1x1 8->5 with bias. The final bilinear resize and the aux head cost nothing.
    expected = (
        (9 * 3 * 8 * 256 + 8 * 256)
        + (9 * 8 * 16 * 64 + 16 * 64)
        + (9 * 16 * 8 * 64 + 2 * 8 * 64 + 8 * 64)
        + (8 * 5 * 64 + 5 * 64)
    )
    model = tiny_segmentor()
    assert macs(model, (1, 3, 64, 64)) == expected
    assert macs(model.deploy(), (1, 3, 64, 64)) == expected


def test_params_train_and_inference_for_ssa():
    c, k = 8, 5
    model = tiny_segmentor(k, "ssa")
    before = sum(p.numel() for p in model.parameters())
    count = params(model)
    assert count.train == before
    aux = sum(p.numel() for p in model.aux_heads.parameters())
    # deploy() drops the aux head and SSA's train-only projections (docs/algorithm.md §2: 4C² + 2C).
    assert count.train - count.inference == aux + 4 * c * c + 2 * c
    assert count.train - count.readme == 4 * c * c + 2 * c  # README convention keeps the aux head
    linear = params(tiny_segmentor(k, "linear"))
    assert linear.readme == linear.train and linear.train - linear.inference == aux
    assert sum(p.numel() for p in model.parameters()) == before  # caller's model untouched
    assert len(model.aux_heads) == 1 and all(p.device.type == "cpu" for p in model.parameters())


# --------------------------------------------------------------------------------------- CLI
@pytest.fixture
def tiny_registry(monkeypatch):
    import ssaseg.models as models

    def _tiny(num_classes: int, classifier: str = "ssa", classifier_kwargs=None, **kwargs):
        return tiny_segmentor(num_classes, classifier)

    models.list_models()  # import the zoo first so that the fixture's entry is the only change
    monkeypatch.setitem(models._ENTRYPOINTS, "_tiny", _tiny)
    monkeypatch.setattr(models, "list_models", lambda pattern="*": ["_tiny"])
    monkeypatch.setitem(complexity.PAPER_FIGURES, "_tiny", complexity.PaperFigure(0.001, 0.0005, 1.0))
    monkeypatch.setattr(complexity.paper, "ZOO_ORDER", ("_tiny", "not_landed_yet"))


def cli(*argv: str) -> argparse.Namespace:
    return complexity.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_run_one_model_every_classifier(tiny_registry, capsys):
    code = complexity.run(cli("_tiny", "--classifier", "all", "--size", "64", "--runs", "1", "--format", "md"))
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("| _tiny")]
    assert [line.split(" | ")[1] for line in lines] == list(complexity.classifier_order())
    assert "GMACs (mmcv)" in out and "true GFLOPs" in out and "latency ms (CPU" in out


def test_run_all_compares_with_paper(tiny_registry, capsys):
    code = complexity.run(cli("--all", "--size", "64", "--no-latency", "--num-classes", "5"))
    captured = capsys.readouterr()
    assert code == 0
    assert "not_landed_yet" in captured.err
    row = next(line for line in captured.out.splitlines() if line.startswith("_tiny"))
    assert "paper params (M)" in captured.out and "%" in row


def test_classifiers_come_from_the_registry(tiny_registry, monkeypatch, capsys):
    from ssaseg import classifiers

    assert complexity.classifier_order() == ("ssa", "linear", "cac")
    monkeypatch.setitem(classifiers.CLASSIFIERS, "linear2", classifiers.LinearClassifier)
    assert complexity.classifier_order() == ("ssa", "linear", "cac", "linear2")
    asked = []

    def measure(name, kind, *args):
        asked.append(kind)
        return complexity.BenchmarkRow(name, kind)

    monkeypatch.setattr(complexity.benchmark, "benchmark_model", measure)
    assert complexity.run(cli("_tiny", "--classifier", "all", "--no-latency")) == 0
    assert asked == ["ssa", "linear", "cac", "linear2"]
    assert cli("_tiny", "--classifier", "linear2").classifier == "linear2"


@pytest.mark.parametrize(
    "argv, message",
    [
        (("nope",), "unknown model"),
        (("_tiny", "--size", "100"), "multiple of 32"),
        (("_tiny", "--all"), "not both"),
        ((), "MODEL name or --all"),
    ],
)
def test_run_rejects_bad_arguments(tiny_registry, capsys, argv, message):
    assert complexity.run(cli(*argv)) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------- real structures vs mmcv 1.7.2
def _zoo_model(name: str, classifier: str):
    import ssaseg

    if name not in ssaseg.list_models():
        pytest.skip(f"{name} is not registered yet")
    return ssaseg.create_model(name, num_classes=150, classifier=classifier)


def test_segnext_t_matches_mmcv_and_paper():
    # mmcv 1.7.2 on the mmseg config: 4.26 M / 6.20 G, where MSCAN's norms are SyncBN and
    # therefore uncounted; README +SSA: 4.6 M / 6.3 G.
    base = _zoo_model("segnext_t", "linear")
    assert params(base).inference / 1e6 == pytest.approx(4.26, rel=0.01)
    assert mmcv_gmacs(base, skip_types=(nn.BatchNorm2d,)) == pytest.approx(6.20, rel=0.01)
    assert mmcv_gmacs(base) == pytest.approx(6.20, rel=0.01)
    ssa = _zoo_model("segnext_t", "ssa")
    assert params(ssa).inference / 1e6 == pytest.approx(4.6, abs=0.05)
    assert mmcv_gmacs(ssa) == pytest.approx(6.3, abs=0.05)


@pytest.mark.slow
def test_segformer_b5_matches_mmcv_and_paper():
    # mmcv 1.7.2 on the mmseg config (MHA attention, 256-ch head, SyncBN): 82.01 M / 52.45 G;
    # README +SSA: 82.3 M / 52.6 G.
    base = _zoo_model("segformer_b5", "linear")
    assert params(base).inference / 1e6 == pytest.approx(82.01, rel=0.001)
    assert mmcv_gmacs(base, skip_types=(nn.BatchNorm2d,)) == pytest.approx(52.45, rel=0.001)
    ssa = _zoo_model("segformer_b5", "ssa")
    assert params(ssa).inference / 1e6 == pytest.approx(82.3, abs=0.05)
    assert mmcv_gmacs(ssa) == pytest.approx(52.6, abs=0.05)


def test_agrees_with_mmcv_when_installed():
    """Cross-check against the real counter (mmcv 1.7.2 agrees to the MAC on every ssaseg
    model; mmcv is not a dependency, so this runs only where it is installed)."""
    flops_counter = pytest.importorskip("mmcv.cnn.utils.flops_counter")
    model = Uncounted()
    model.extra = nn.Sequential(
        nn.BatchNorm2d(3), nn.ReLU6(), nn.MaxPool2d(2), nn.Upsample(scale_factor=2), nn.ConvTranspose2d(3, 3, 2, 2)
    )
    model.forward = lambda x, m=model: Uncounted.forward(m, F.avg_pool2d(m.extra(x), 2))
    shape = (2, 3, 8, 12)
    counted = flops_counter.add_flops_counting_methods(model)
    counted.start_flops_count()
    with torch.no_grad():
        counted(torch.randn(shape))
    reference, _ = counted.compute_average_flops_cost()
    counted.stop_flops_count()
    assert macs(model, shape) == reference
