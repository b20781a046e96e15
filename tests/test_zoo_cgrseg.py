"""CGRSeg-B/L (EfficientFormerV2 + CGR head): structure, parameter counts, the two-stage baseline
classifier's gradients, attention-bias tables, and weight conversion (snap, timm, official).
Builds, training and eval of every model: test_model_contract.py."""
from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ssaseg import count_parameters, create_model, list_models
from ssaseg.backbones.efficientformer_v2 import (
    KEEP_INITIAL,
    Attention4D,
    EfficientFormerV2,
    _bias_offsets,
    checkpoint_filter_fn,
    efficientformerv2_s2_feat,
)
from ssaseg.checkpoints import SSA_PARAMETER_NAMES, load_checkpoint
from ssaseg.classifiers import CGRClassifier
from ssaseg.decoders.cgr import CGRDecoder
from ssaseg.weights import load_state_dict_checked, load_weights

pytestmark = pytest.mark.usefixtures("single_thread")

K = 7
#: Exact parameter counts at K=150: two-stage linear baseline, SSA (train), SSA (deploy).
COUNTS = {
    "cgrseg_b": (19_114_871, 19_548_790, 19_286_134),
    "cgrseg_l": (35_677_703, 36_111_622, 35_848_966),
}
#: SSA README (+SSA, inference) figures in millions.
PAPER = {"cgrseg_b": 19.3, "cgrseg_l": 35.8}
LGC_PARAMS = 132_353  # the baseline's dynamic-prototype block (256 -> 256 GC-style gate)
_OFFICIAL_SSA_NAMES = {ours: theirs for theirs, ours in SSA_PARAMETER_NAMES.items()}
#: A small EfficientFormerV2 with every block type (FFN, strided AttnFFN, AttnFFN, attention downsample).
TINY = dict(widths=(16, 16, 32, 32), depths=(1, 1, 2, 2), expansion_ratios=((2,), (2,), (2, 2), (2, 2)), vit_num=1)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    out = {c: create_model("cgrseg_b", K, classifier=c) for c in ("linear", "ssa")}
    # The official init zeroes the last conv of the lgc gate, which blocks the gradient of
    # everything before it at step 0; make it non-zero so the test sees every path.
    nn.init.normal_(out["linear"].classifier.lgc.channel_mul_conv[-1].weight, std=0.02)
    return out


def test_registered() -> None:
    assert {"cgrseg_b", "cgrseg_l"} <= set(list_models("cgrseg_*"))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        linear = create_model(name, 150, classifier="linear")
        ssa = create_model(name, 150, classifier="ssa")
    linear_count, train_count, deploy_count = COUNTS[name]
    assert count_parameters(linear) == linear_count
    assert count_parameters(ssa) == train_count
    ssa.deploy()
    assert count_parameters(ssa) == deploy_count
    assert round(deploy_count / 1e6, 1) == PAPER[name]
    assert linear.backbone.out_channels == {"cgrseg_b": [32, 64, 144, 288], "cgrseg_l": [40, 80, 192, 384]}[name]
    # SSA drops the second stage (lgc) and adds 4C^2 + 12C + KC at inference (C=256, K=150).
    assert count_parameters(linear.classifier.lgc) == LGC_PARAMS
    assert deploy_count - linear_count == 4 * 256**2 + 12 * 256 + 150 * 256 - LGC_PARAMS


def test_cgrseg_b_paper_baseline_is_next_repeat_5() -> None:
    """The CGRSeg README's 18.1 M for CGRSeg-B is one RCM fewer than its released config."""
    with torch.device("meta"):
        model = create_model("cgrseg_b", 150, classifier="linear", next_repeat=5)
    assert round(count_parameters(model) / 1e6, 1) == 18.1


def test_variant_structure(models: dict[str, nn.Module]) -> None:
    linear, ssa = models["linear"], models["ssa"]
    assert isinstance(linear.classifier, CGRClassifier) and linear.decoder.linear_fuse is None
    assert isinstance(ssa.decoder, CGRDecoder) and ssa.decoder.linear_fuse is not None
    assert not hasattr(ssa.classifier, "lgc")
    assert linear.backbone.out_channels == [32, 64, 144, 288]
    assert linear.decoder.in_channels == [64, 144, 288]


def test_two_stage_classifier_gradients(models: dict[str, nn.Module]) -> None:
    model = models["linear"].train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 96)
    target = torch.randint(0, K, (2, 64, 96))
    target[:, :8] = 255
    losses = model(images, target)
    assert torch.isfinite(losses["loss"])
    assert set(losses) == {"ce", "loss"}  # only the final logits carry a loss (official)
    losses["loss"].backward()
    # The lgc mask is softmaxed over the classes, so its bias (a constant shift) gets a gradient
    # that is zero up to float rounding, as in the official head; every other parameter learns.
    shift_invariant = "classifier.lgc.conv_mask.bias"
    missing = [
        n
        for n, p in model.named_parameters()
        if n != shift_invariant and p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert missing == []
    mask = model.classifier.lgc.conv_mask
    assert mask.weight.grad.abs().max() > 0
    assert mask.bias.grad is None or mask.bias.grad.abs().max() <= 1e-3 * mask.weight.grad.abs().max()


def test_bias_offsets_match_reference_loop() -> None:
    """The vectorised offset table equals the snap / CGRSeg double loop (first-appearance order)."""
    for query_res, key_res in [(3, 3), (4, 7), (2, 4), (5, 5)]:
        step = math.ceil(key_res / query_res)
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in itertools.product(range(query_res), range(query_res)):
            for p2 in itertools.product(range(key_res), range(key_res)):
                off = (abs(p1[0] * step - p2[0]), abs(p1[1] * step - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        count, table = _bias_offsets(query_res, key_res)
        assert count == len(offsets)
        assert torch.equal(table, torch.tensor(idxs).view(query_res**2, key_res**2))


def test_attention_bias_resize() -> None:
    """At the 512-px grid the bias table is used as is; elsewhere it is resized bicubically."""
    attn = Attention4D(16, resolution=4)
    nn.init.normal_(attn.attention_biases_seg)
    table = attn.attention_biases_seg[:, attn.attention_bias_idxs_seg].unsqueeze(0)
    assert torch.equal(attn._bias(16, 16), table)
    expected = F.interpolate(table, size=(4, 4), mode="bicubic", align_corners=False)
    assert torch.allclose(attn._bias(4, 4), expected)
    with torch.no_grad():
        assert attn(torch.randn(1, 16, 2, 6)).shape == (1, 16, 2, 6)


def test_segmentation_bias_tables() -> None:
    """S2 at resolution 512: (8, 256) per attention block, (8, 1024) in the attention downsample."""
    with torch.device("meta"):
        backbone = efficientformerv2_s2_feat()
    shapes = {tuple(p.shape) for n, p in backbone.named_parameters() if n.endswith("attention_biases_seg")}
    assert shapes == {(8, 256), (8, 1024)}
    assert "network.5.attn.attention_biases_seg" in dict(backbone.named_parameters())


def test_snap_checkpoint(tmp_path) -> None:
    """A snap-layout ImageNet file (classifier, 224-px biases, ``model`` wrapper) loads strictly."""
    torch.manual_seed(0)
    source = EfficientFormerV2(**TINY, resolution=64)
    state = {k: v.clone() for k, v in source.state_dict().items() if not k.endswith("attention_biases_seg")}
    snap = dict(state)
    for key in source.state_dict():
        if key.endswith("attention_biases_seg"):
            base = key.removesuffix("_seg")
            snap[base] = torch.randn(8, 49)
            snap[base.replace("attention_biases", "attention_bias_idxs")] = torch.zeros(49, 49, dtype=torch.long)
    snap.update({"norm.weight": torch.ones(32), "head.weight": torch.zeros(10, 32), "dist_head.weight": torch.zeros(10, 32)})
    path = tmp_path / "eformer_tiny.pth"
    torch.save({"model": snap}, path)
    torch.manual_seed(1)
    target = EfficientFormerV2(**TINY, resolution=64)
    before = {k: v.clone() for k, v in target.state_dict().items() if k.endswith("attention_biases_seg")}
    assert not any(v.any() for v in before.values())  # constructed as zeros (CGRSeg)
    load_weights(target, path, "efficientformer_v2")
    for key, value in target.state_dict().items():
        if key in before:
            assert torch.equal(value, before[key]), key  # not in ImageNet files: kept
        else:
            assert torch.equal(value, state[key]), key


def test_matches_timm_efficientformer_v2() -> None:
    """timm's independent implementation (converted weights) gives the same feature maps."""
    torch.manual_seed(0)
    reference = timm.create_model("efficientformerv2_s0", img_size=64).eval()
    state = reference.state_dict()
    for key, value in state.items():  # non-trivial norms and layer scales; biases zero in both
        if key.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif key.endswith(("bn.weight", ".gamma")):
            value.uniform_(0.5, 1.5)
        elif key.endswith("attention_biases"):
            value.zero_()
    model = EfficientFormerV2(
        (32, 48, 96, 176), (2, 2, 6, 4), ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)), vit_num=2, resolution=64
    ).eval()
    kept = load_state_dict_checked(model, checkpoint_filter_fn(state), "timm", keep_initial=KEEP_INITIAL).kept_initial
    assert kept and all(k.endswith("attention_biases_seg") for k in kept)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(images)
        theirs = reference.forward_intermediates(images, intermediates_only=True)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def _to_official(state: dict[str, torch.Tensor], baseline: bool) -> dict[str, torch.Tensor]:
    """ssaseg keys -> the official CGRSeg / CGRSeg_ssa layout (mmseg), with its extra buffers."""
    out = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            first, _, rest = key[len("classifier."):].partition(".")
            name = first if baseline else _OFFICIAL_SSA_NAMES[first]
            out[f"decode_head.{name}.{rest}"] = value
        elif key.startswith("decoder."):
            out["decode_head." + key[len("decoder."):]] = value
        else:
            out[key] = value
        if key.endswith("attention_biases_seg"):
            base = key.removesuffix("_seg")
            out[base] = torch.zeros(8, 49)
            out[base.replace("attention_biases", "attention_bias_idxs")] = torch.ones(49, 49, dtype=torch.long)
            out[key.replace("attention_biases_seg", "attention_bias_idxs_seg")] = torch.zeros(4, 4, dtype=torch.long)
    return out


@pytest.mark.parametrize("classifier", ["linear", "ssa"])
def test_official_checkpoint(models: dict[str, nn.Module], classifier: str, tmp_path) -> None:
    model = models[classifier]
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    official = _to_official(state, baseline=classifier == "linear")
    if classifier == "ssa":
        official["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(K + 1)
    path = tmp_path / "official.pth"
    torch.save({"state_dict": official}, path)
    load_checkpoint(model, path)  # arch "cgrseg" from model.model_name
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
