"""The vectorised CACClassifier against the plain loop reference (tests/cac_reference.py).

Compared in float64: student logits, the four loss terms, and the gradient of their sum with
respect to every parameter and the input feature map (docs/algorithm.md §18). Dropout is 0 so the coarse
logits are deterministic.
"""
from __future__ import annotations

import copy

import pytest
import torch
from cac_reference import legacy_nearest, oracle_logits, reference_eval_forward, reference_forward
from ssa_reference import voronoi_labels
from torch import Tensor

from ssaseg.classifiers import CACClassifier, LinearClassifier, build_classifier
from ssaseg.classifiers.ssa_losses import response_distillation

pytestmark = pytest.mark.usefixtures("single_thread")

IGNORE = 255
LOSS_KEYS = {"ce", "ce_coarse", "ce_teacher", "kd_response"}
RTOL, ATOL = 1e-5, 1e-10


def make_classifier(channels: int, num_classes: int, seed: int = 0) -> CACClassifier:
    """A float64 train-mode CACClassifier without dropout, with prototypes and bias large enough
    for the gating by the coarse mask to matter (N(0, 0.01) makes every softmax nearly uniform)."""
    torch.manual_seed(seed)
    clf = CACClassifier(channels, num_classes, dropout=0.0)
    with torch.no_grad():
        clf.conv_seg.weight.normal_(0.0, 0.3)
        clf.conv_seg.bias.normal_(0.0, 0.5)
    return clf.double().train()


def run(clf: CACClassifier, feat: Tensor, target: Tensor, reference: bool):
    module = copy.deepcopy(clf)
    feat = feat.detach().clone().requires_grad_(True)
    if reference:
        logits, losses = reference_forward(module, feat, target)
    else:
        logits, losses = module(feat, target)
    sum(losses.values()).backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads["feat"] = feat.grad
    return logits.detach(), {k: v.detach() for k, v in losses.items()}, grads


def assert_matches_reference(clf: CACClassifier, feat: Tensor, target: Tensor) -> dict[str, Tensor]:
    logits, losses, grads = run(clf, feat, target, reference=False)
    ref_logits, ref_losses, ref_grads = run(clf, feat, target, reference=True)
    assert set(losses) == LOSS_KEYS
    torch.testing.assert_close(logits, ref_logits, rtol=RTOL, atol=ATOL)
    for key in sorted(LOSS_KEYS):
        assert losses[key].dim() == 0 and torch.isfinite(losses[key]), f"{key} = {losses[key]}"
        torch.testing.assert_close(losses[key], ref_losses[key], rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{k}: {m}")
    for name in sorted(grads):
        got, want = grads[name], ref_grads[name]
        if want is None or got is None:
            other = got if want is None else want
            assert other is None or not other.any(), f"grad of {name}: one side is None, the other non-zero"
            continue
        assert torch.isfinite(got).all(), f"grad of {name} is not finite"
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"grad of {n}: {m}")
    return losses


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_matches_reference_shared_and_single_image_classes() -> None:
    """B=2, K=12, 255 regions, class 7 only in image 1, class 9 lost by the nearest downsample."""
    g = _gen(1)
    clf = make_classifier(16, 12, seed=1)
    feat = torch.randn(2, 16, 16, 16, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (64, 64), [[0, 1, 2, 3], [1, 2, 7]], g)
    target[0, 21:23, 37:40] = 9  # off the sampling grid (rows/cols 0, 4, 8, ...)
    assert (target == 9).any() and not (legacy_nearest(target, (16, 16)) == 9).any()
    assert_matches_reference(clf, feat, target)


def test_matches_reference_many_classes_few_present() -> None:
    """K=150 with two classes present: the distillation averages exactly those two terms."""
    g = _gen(2)
    clf = make_classifier(32, 150, seed=2)
    feat = torch.randn(2, 32, 8, 8, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (32, 32), [[3, 140], [140]], g)
    losses = assert_matches_reference(clf, feat, target)
    # Adding absent classes changes nothing in the distillation (same logits, K bigger).
    small = legacy_nearest(target, (8, 8))
    student, teacher = torch.randn(2, 150, 8, 8, dtype=torch.float64), torch.randn(2, 150, 8, 8, dtype=torch.float64)
    wider = [torch.cat([x, torch.full((2, 50, 8, 8), -30.0, dtype=torch.float64)], 1) for x in (student, teacher)]
    narrow_kd = response_distillation(student, teacher, small, None)
    wide_kd = response_distillation(*wider, small, None)
    assert losses["kd_response"] > 0
    torch.testing.assert_close(narrow_kd, wide_kd, rtol=1e-9, atol=1e-12)


def test_all_ignore_batch_is_finite_and_zero() -> None:
    """No valid pixel: CEs and distillation are 0 (reference NaN for two CEs, fix C5); the
    oracle falls back to φ̂([sg S ; S]) for every class; gradients stay finite."""
    g = _gen(3)
    clf = make_classifier(16, 6, seed=3)
    feat = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    target = torch.full((2, 32, 32), IGNORE)
    losses = assert_matches_reference(clf, feat, target)
    assert all(float(v) == 0.0 for v in losses.values())


def test_eval_logits_match_reference_and_are_bounded() -> None:
    g = _gen(4)
    clf = make_classifier(16, 10, seed=4).eval()
    feat = torch.randn(3, 16, 8, 12, generator=g, dtype=torch.float64)
    feat[1, :, 2, 3] = 0.0  # a zero pixel vector: 0 logits, not NaN (fix C3)
    logits = clf(feat)
    torch.testing.assert_close(logits, reference_eval_forward(clf, feat), rtol=RTOL, atol=ATOL)
    assert logits.abs().max() <= 15.0
    assert torch.equal(logits[1, :, 2, 3], torch.zeros(10, dtype=torch.float64))


def test_oracle_pools_the_batch() -> None:
    """The oracle's centre of a class shared by two images is their pooled mean, so image 0's
    oracle logits differ between B=1 and B=2 (C8, faithful)."""
    g = _gen(5)
    clf = make_classifier(16, 5, seed=5)
    feat = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    small = voronoi_labels(2, (8, 8), [[0, 1], [1, 2]], g, ignore_rects=0)
    pair = clf.teacher(feat, small)
    single = clf.teacher(feat[:1], small[:1])
    torch.testing.assert_close(pair, oracle_logits(clf, feat, small), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(single, oracle_logits(clf, feat[:1], small[:1]), rtol=RTOL, atol=ATOL)
    assert not torch.allclose(pair[:1], single)


def test_distillation_is_twice_the_boundary_split_with_no_boundary() -> None:
    """CAC's KD = SSA's response distillation without the boundary split: with an all-False
    boundary SSA's form gives exactly half (the edge group is empty, the interior is halved)."""
    g = _gen(6)
    student = torch.randn(2, 7, 8, 8, generator=g, dtype=torch.float64)
    teacher = torch.randn(2, 7, 8, 8, generator=g, dtype=torch.float64) * 3
    teacher[:, 2] += 40.0  # class 2: a confident teacher, entropy ~0 -> weight ~0
    labels = voronoi_labels(2, (8, 8), [[0, 2, 4], [2, 5]], g)
    cac = response_distillation(student, teacher, labels, None)
    ssa_form = response_distillation(student, teacher, labels, torch.zeros_like(labels, dtype=torch.bool))
    torch.testing.assert_close(cac, 2.0 * ssa_form, rtol=1e-12, atol=0.0)


def test_gradient_routes() -> None:
    """Only ce_teacher reaches the oracle MLP; the coarse bias is trained through the gate Q."""
    g = _gen(7)
    clf = make_classifier(16, 6, seed=7)
    feat = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (32, 32), [[0, 1, 2], [2, 3]], g)
    _, losses = clf(feat, target)
    teacher_params = list(clf.teacher_semantic_proj.parameters())
    others = losses["ce"] + losses["kd_response"] + losses["ce_coarse"]
    grads = torch.autograd.grad(others, teacher_params, allow_unused=True, retain_graph=True)
    assert all(gr is None or not gr.any() for gr in grads)
    grads = torch.autograd.grad(losses["ce_teacher"], teacher_params, retain_graph=True)
    assert all(gr.abs().sum() > 0 for gr in grads)
    (bias_grad,) = torch.autograd.grad(losses["ce"], [clf.conv_seg.bias])
    assert bias_grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [64, 160, 256])
def test_parameter_counts_and_keys(channels: int) -> None:
    """Over the linear classifier: 3C² + 2C in training, 1.5C² + C after deploy(), any K."""
    for num_classes in (19, 150):
        linear = sum(p.numel() for p in LinearClassifier(channels, num_classes).parameters())
        cac = CACClassifier(channels, num_classes)
        assert sum(p.numel() for p in cac.parameters()) - linear == 3 * channels**2 + 2 * channels
        assert sum(p.numel() for p in cac.deploy().parameters()) - linear == 3 * channels**2 // 2 + channels
    keys = set(CACClassifier(channels, 4).state_dict())
    mlp = {"0.weight", "2.weight", "2.bias"}
    assert keys == {"conv_seg.weight", "conv_seg.bias"} | {f"{m}.{k}" for m in ("semantic_proj", "teacher_semantic_proj") for k in mlp}


def test_deploy_keeps_inference_and_forbids_training() -> None:
    g = _gen(8)
    clf = make_classifier(16, 5, seed=8).eval()
    feat = torch.randn(1, 16, 8, 8, generator=g, dtype=torch.float64)
    before = clf(feat)
    clf.deploy()
    torch.testing.assert_close(clf(feat), before, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="deploy"):
        clf.train()(feat, torch.zeros(1, 32, 32, dtype=torch.long))


def test_autocast_gives_fp32_losses_and_registry_builds_it() -> None:
    clf = build_classifier("cac", 32, 6)
    assert isinstance(clf, CACClassifier)
    feat = torch.randn(2, 32, 8, 8)
    target = torch.randint(0, 6, (2, 32, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, losses = clf.train()(feat.bfloat16(), target)
    assert logits.dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="even"):
        CACClassifier(15, 3)
    with pytest.raises(ValueError, match="dice"):
        CACClassifier(16, 3, loss_weights={"dice": 1.0})
    with pytest.raises(ValueError, match="target"):
        CACClassifier(16, 3).train()(torch.randn(1, 16, 4, 4))
