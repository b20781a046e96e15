"""OCRNet + HRNetV2: cascade semantics, shapes, training step, parameter counts, weight loading."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.hrnet import HighResolutionNet, HighResolutionNetFeatures, cfg_cls
from torch import nn

from ssaseg import count_parameters, create_model, list_models
from ssaseg.backbones.hrnet import HRNet, checkpoint_filter_fn
from ssaseg.checkpoints import SSA_PARAMETER_NAMES, load_checkpoint
from ssaseg.decoders.ocr import OCRDecoder, SpatialGatherModule
from ssaseg.weights import load_weights

K = 19


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The machine is shared by several test runs; one thread avoids oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def w18_ssa() -> nn.Module:
    torch.manual_seed(0)
    return create_model("ocrnet_hrnet_w18", K, classifier="ssa")


def _batch(size: int = 64, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, size, size, generator=gen)
    labels = torch.randint(0, K, (batch, size, size), generator=gen)
    labels[0, :8] = 255
    return images, labels


def test_registered() -> None:
    assert {"ocrnet_hrnet_w48", "ocrnet_hrnet_w18"} <= set(list_models("ocrnet_*"))


def test_w48_parameter_counts() -> None:
    """Exact counts at K=150 (built on the meta device: no memory, no init cost).

    The README's "8.7 M" for OCRNet-HRNet-W48 is a typo (docs/algorithm.md §15.4 item 1): the baseline has
    70.53 M parameters and the SSA model 71.66 M at inference (72.71 M with the train-only
    teacher), in line with mmseg's ~70.5 M for ocrnet_hr48.
    """
    with torch.device("meta"):
        linear = create_model("ocrnet_hrnet_w48", 150, classifier="linear")
        ssa = create_model("ocrnet_hrnet_w48", 150, classifier="ssa")
    assert count_parameters(linear.backbone) == 65_325_120
    assert linear.backbone.out_channels == [48, 96, 192, 384]
    # Stage 0: 1x1 ConvModule 720 -> 720 (+BN) and conv_seg 720 -> 150.
    assert count_parameters(linear.aux_heads) == 720 * 720 + 2 * 720 + 720 * 150 + 150
    assert count_parameters(linear.decoder) == 4_503_040
    assert count_parameters(linear) == 70_533_100
    assert count_parameters(ssa) == 72_714_220
    c = 512
    assert count_parameters(ssa) - count_parameters(linear) == 8 * c * c + 14 * c + 150 * c  # docs/algorithm.md §16.1
    ssa.deploy()
    assert len(ssa.aux_heads) == 1  # stage 0 is needed at inference
    assert count_parameters(ssa) == 71_664_620
    assert count_parameters(ssa) - count_parameters(linear) == 4 * c * c + 12 * c + 150 * c


def test_w18_architecture(w18_ssa: nn.Module) -> None:
    model = w18_ssa
    assert model.backbone.out_channels == [18, 36, 72, 144]
    assert model.backbone.strides == [4, 8, 16, 32]
    assert model.is_cascade
    stage0 = model.aux_heads[0]
    assert stage0.decoder.channels == 270 and stage0.decoder.convs[0].conv.kernel_size == (1, 1)
    assert stage0.classifier.loss_weight == 0.4 and isinstance(stage0.classifier.dropout, nn.Identity)
    assert isinstance(model.classifier.dropout, nn.Identity)  # OCR head: dropout_ratio=-1
    assert model.decoder.channels == 512 and model.decoder.bottleneck.conv.in_channels == 270
    # mmseg HRModule fuses the lower-resolution branches with bilinear (not nearest) upsampling.
    ups = [m for m in model.backbone.modules() if isinstance(m, nn.Upsample)]
    assert ups and all(m.mode == "bilinear" and m.align_corners is False for m in ups)
    assert count_parameters(model.backbone) == 9_562_260


@pytest.mark.parametrize("classifier", ["ssa", "linear"])
def test_w18_train_step(classifier: str, w18_ssa: nn.Module) -> None:
    torch.manual_seed(0)
    model = w18_ssa if classifier == "ssa" else create_model("ocrnet_hrnet_w18", K, classifier="linear")
    model.train()
    images, labels = _batch()
    calls = []
    hook = model.aux_heads[0].register_forward_hook(lambda m, i, o: calls.append(o[0]))
    try:
        losses = model(images, labels)
    finally:
        hook.remove()
    model.zero_grad(set_to_none=True)
    losses["loss"].backward()
    # docs/algorithm.md Q28: stage 0 runs once; its logits are reused as the OCR decoder's prev_logits.
    assert len(calls) == 1
    expected = {"ce", "aux.ce", "loss"}
    if classifier == "ssa":
        expected |= {"ce_coarse", "ce_teacher", "kd_response", "dice", "dice_teacher", "kd_semantic", "kd_spatial"}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    stage0_logits = calls[0].detach()
    up = F.interpolate(stage0_logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    # mmseg 0.30 CE: ignored pixels stay in the denominator.
    ce_all_pixels = F.cross_entropy(up, labels, ignore_index=255, reduction="sum") / labels.numel()
    torch.testing.assert_close(losses["aux.ce"], 0.4 * ce_all_pixels)
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_grad == []


def test_w18_eval_uses_stage0_logits(w18_ssa: nn.Module) -> None:
    model = w18_ssa.eval()
    images, _ = _batch(96, batch=1)
    with torch.no_grad():
        out = model(images)
        assert out.shape == (1, K, 96, 96)
        features = model.backbone(images)
        prev = model.aux_heads[0](features)
        assert prev.shape == (1, K, 24, 24)
        logits = model.classifier(model.decoder(features, prev))
        torch.testing.assert_close(out, F.interpolate(logits, size=(96, 96), mode="bilinear", align_corners=False))
        # The OCR decoder really consumes prev_logits: other stage-0 logits, other output.
        other = model.classifier(model.decoder(features, prev.flip(1)))
        assert not torch.allclose(other, logits)


def _mmseg_hrnet_forward(backbone: HRNet, images: torch.Tensor) -> list[torch.Tensor]:
    """HRNet's forward written out as mmseg 0.30's ``HRNet.forward`` / ``HRModule.forward`` (an
    independent reading; tests/parity checks against mmseg itself): in each fuse, ``y = 0`` plus
    branch ``i`` itself, the higher-resolution branches downsampled by stride-2 convs, and the
    lower-resolution ones upsampled by ``2**(j-i)`` and always resized to branch ``i``'s size."""
    x = backbone.act1(backbone.bn1(backbone.conv1(images)))
    x = backbone.act2(backbone.bn2(backbone.conv2(x)))
    xs = [backbone.layer1(x)]
    for t, stage in ((backbone.transition1, backbone.stage2), (backbone.transition2, backbone.stage3),
                     (backbone.transition3, backbone.stage4)):
        # mmseg: branches that exist keep their input (None transition); the new one comes from the last.
        xs = [xs[i] if isinstance(t[i], nn.Identity) else t[i](xs[min(i, len(xs) - 1)]) for i in range(len(t))]
        for module in stage:
            xs = [module.branches[i](xs[i]) for i in range(module.num_branches)]
            fused = []
            for i in range(len(module.fuse_layers)):
                y = 0
                for j in range(module.num_branches):
                    if i == j:
                        y += xs[j]
                    elif j > i:
                        y = y + F.interpolate(module.fuse_layers[i][j](xs[j]), size=xs[i].shape[2:],
                                              mode="bilinear", align_corners=False)
                    else:
                        y += module.fuse_layers[i][j](xs[j])
                fused.append(F.relu(y))
            xs = fused
    return xs


@pytest.mark.parametrize("size", [(100, 164), (64, 96), (33, 47)])
def test_hrnet_runs_at_any_size_like_mmseg(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    backbone = HRNet("hrnet_w18_small").eval()
    for m in backbone.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    images = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = backbone(images)
        expected = _mmseg_hrnet_forward(backbone, images)
    shape = [(s + 1) // 2 for s in size]  # the stem's first stride-2 conv
    for feat, ref in zip(out, expected):
        shape = [(s + 1) // 2 for s in shape]  # every stride-2 conv rounds up
        assert list(feat.shape[-2:]) == shape
        torch.testing.assert_close(feat, ref, rtol=1e-5, atol=1e-5)


def test_hrnet_is_timm_at_multiples_of_32() -> None:
    """At sides that are multiples of 32 the added resize is skipped: the output is bit-identical to
    timm's module (with the same bilinear upsampling)."""
    torch.manual_seed(0)
    backbone = HRNet("hrnet_w18_small").eval()
    timm_model = HighResolutionNetFeatures(cfg_cls["hrnet_w18_small"], feature_location="", out_indices=(1, 2, 3, 4))
    for m in timm_model.modules():
        if isinstance(m, nn.Upsample):
            m.mode, m.align_corners = "bilinear", False
    timm_model.load_state_dict(backbone.state_dict())
    timm_model.eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for ours, theirs in zip(backbone(images), timm_model(images)):
            assert torch.equal(ours, theirs)


def test_ocrnet_evaluates_at_a_non_square_non_multiple_size(w18_ssa: nn.Module) -> None:
    model = w18_ssa.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 100, 164))
    assert out.shape == (1, K, 100, 164) and torch.isfinite(out).all()


def test_spatial_gather_is_softmax_weighted_sum() -> None:
    feats, probs = torch.randn(2, 5, 3, 4), torch.randn(2, 7, 3, 4)
    context = SpatialGatherModule()(feats, probs)
    weights = probs.flatten(2).softmax(-1)  # over positions
    expected = torch.einsum("bkn,bcn->bck", weights, feats.flatten(2))[..., None]
    torch.testing.assert_close(context, expected)


def test_ocr_decoder_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="scale=1"):
        OCRDecoder([8, 8], 16, 8, scale=2)
    decoder = OCRDecoder([8, 8], 16, 8)
    with pytest.raises(ValueError, match="prev_logits"):
        decoder([torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)], torch.randn(1, 3, 4, 4))


def test_load_official_hrnet_imagenet_checkpoint(tmp_path) -> None:
    """An official HRNet-ImageNet file (classification head, no num_batches_tracked) loads strictly."""
    torch.manual_seed(0)
    official = HighResolutionNet(cfg_cls["hrnet_w18_small"], num_classes=10)  # official key layout
    state = {k: v for k, v in official.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert any(k.startswith("incre_modules.") for k in state) and any(k.startswith("classifier.") for k in state)
    path = tmp_path / "hrnet_w18_small_imagenet.pth"
    torch.save(state, path)

    backbone = HRNet("hrnet_w18_small")
    load_weights(backbone, path, "hrnet")
    loaded = backbone.state_dict()
    for key, value in checkpoint_filter_fn(state).items():
        torch.testing.assert_close(loaded[key], value, msg=key)

    broken = dict(state)
    broken.pop("stage2.0.fuse_layers.0.1.0.weight")
    torch.save(broken, path)
    expected = r"(?s)hrnet_w18_small_imagenet\.pth.*missing stage2\.0\.fuse_layers\.0\.1\.0\.weight"
    with pytest.raises(ValueError, match=expected):
        load_weights(HRNet("hrnet_w18_small"), path, "hrnet")


def test_load_official_ocrnet_checkpoint(tmp_path, w18_ssa: nn.Module) -> None:
    """An official cascade checkpoint (decode_head.0 = FCN, decode_head.1 = OCR + SSA) maps by prefix."""
    to_official = {v: k for k, v in SSA_PARAMETER_NAMES.items()}

    def official_key(key: str) -> str:
        if key.startswith("aux_heads.0."):
            return "decode_head.0." + key.split(".", 3)[3]
        if key.startswith("decoder."):
            return "decode_head.1." + key[len("decoder."):]
        if key.startswith("classifier."):
            first, _, rest = key[len("classifier."):].partition(".")
            return f"decode_head.1.{to_official[first]}.{rest}"
        return key

    state = {official_key(k): v + 1 if v.is_floating_point() else v for k, v in w18_ssa.state_dict().items()}
    path = tmp_path / "ocrnet_hr18_ssa.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    model = create_model("ocrnet_hrnet_w18", K, classifier="ssa")
    load_checkpoint(model, path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[official_key(key)], msg=key)
