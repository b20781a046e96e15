"""The vectorised SSAClassifier against the plain loop reference (tests/ssa_reference.py).

Compared: student logits, every (weighted) loss term, and the gradient of the total objective
with respect to every parameter and to the input feature map. Everything runs in float64 so
the tolerances can stay tight (rtol 1e-5); dropout is 0 so the coarse logits are deterministic.
Spec: docs/algorithm.md §2-§6, §14, §16.
"""
from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from ssa_reference import legacy_nearest_downsample, reference_eval_forward, reference_forward, voronoi_labels
from torch import Tensor

from ssaseg.classifiers import SSAClassifier
from ssaseg.classifiers.linear import LinearClassifier

pytestmark = pytest.mark.usefixtures("single_thread")

IGNORE = 255
LOSS_KEYS = {"ce", "ce_coarse", "ce_teacher", "kd_response", "dice", "dice_teacher", "kd_semantic", "kd_spatial"}
RTOL = 1e-5
ATOL = 1e-10  # float64 throughout: the two implementations differ only in summation order


def make_classifier(
    channels: int, num_classes: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> SSAClassifier:
    """A train-mode SSAClassifier without dropout.

    The N(0, 0.01) init of conv_seg makes every softmax over the coarse logits nearly uniform;
    larger prototypes and a non-zero bias make the gating by M (and the bias path) matter.
    """
    torch.manual_seed(seed)
    clf = SSAClassifier(channels, num_classes, dropout=0.0)
    with torch.no_grad():
        clf.conv_seg.weight.normal_(0.0, 0.3)
        clf.conv_seg.bias.normal_(0.0, 0.5)
    return clf.to(dtype).train()


def run_fast(clf: SSAClassifier, feat: Tensor, target: Tensor):
    """Logits, detached losses and gradients (of the sum of the losses) of the module under test."""
    feat = feat.detach().clone().requires_grad_(True)
    clf.zero_grad(set_to_none=True)
    logits, losses = clf(feat, target)
    sum(losses.values()).backward()
    grads = {name: p.grad for name, p in clf.named_parameters()}
    grads["feat"] = feat.grad
    return logits.detach(), {k: v.detach() for k, v in losses.items()}, grads


def run_reference(clf: SSAClassifier, feat: Tensor, target: Tensor):
    """The same triple from the loop reference, on a deep copy of the module."""
    ref = copy.deepcopy(clf)
    ref.zero_grad(set_to_none=True)
    feat = feat.detach().clone().requires_grad_(True)
    logits, losses = reference_forward(ref, feat, target)
    sum(losses.values()).backward()
    grads = {name: p.grad for name, p in ref.named_parameters()}
    grads["feat"] = feat.grad
    return logits.detach(), {k: v.detach() for k, v in losses.items()}, grads


def assert_matches_reference(
    clf: SSAClassifier, feat: Tensor, target: Tensor, rtol: float = RTOL, atol: float = ATOL
) -> dict[str, Tensor]:
    """Compare logits, the eight loss terms and all gradients; returns the fast losses."""
    logits, losses, grads = run_fast(clf, feat, target)
    ref_logits, ref_losses, ref_grads = run_reference(clf, feat, target)
    assert set(losses) == LOSS_KEYS
    torch.testing.assert_close(logits, ref_logits, rtol=rtol, atol=atol, msg=lambda m: f"student logits: {m}")
    for key in sorted(LOSS_KEYS):
        assert losses[key].dim() == 0 and torch.isfinite(losses[key]), f"{key} = {losses[key]}"
        want = ref_losses[key].to(losses[key].dtype)
        torch.testing.assert_close(losses[key], want, rtol=rtol, atol=atol, msg=lambda m, k=key: f"loss {k}: {m}")
    assert set(grads) == set(ref_grads)
    for name in sorted(grads):
        got, want = grads[name], ref_grads[name]
        if want is None or got is None:
            # a parameter the reference never touches must not get a gradient either, and v.v.
            other = got if want is None else want
            assert other is None or not other.any(), f"grad of {name}: one side is None, the other non-zero"
            continue
        assert torch.isfinite(got).all(), f"grad of {name} is not finite"
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m, n=name: f"grad of {n}: {m}")
    return losses


# --------------------------------------------------------------------------------------------
# cases: each builds (classifier, feat (B,C,h,w), target (B,H,W))
# --------------------------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def case_absent_classes():
    """K=8, only classes 0..4 appear (5..7 absent everywhere -> detached fallbacks); 255 blocks."""
    g = _gen(1)
    clf = make_classifier(16, 8, seed=1)
    feat = torch.randn(2, 16, 16, 16, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (64, 64), [[0, 1, 2, 3], [1, 2, 4]], g)
    return clf, feat, target


def case_all_ignore_image():
    """The middle image of three is entirely 255: its spatial centers all fall back, no dice masks."""
    g = _gen(2)
    clf = make_classifier(16, 6, seed=2)
    feat = torch.randn(3, 16, 16, 16, generator=g, dtype=torch.float64)
    target = voronoi_labels(3, (64, 64), [[0, 1, 2], [3], [2, 4, 5]], g)
    target[1] = IGNORE
    return clf, feat, target


def case_full_resolution_only_class():
    """Class 5 occupies a 2x3 patch off the nearest-sampling grid (rows/cols 0, 4, 8, ...): it
    is in the label (CE, dice) but absent from the downsampled label (teacher centers, L_rd)."""
    g = _gen(3)
    clf = make_classifier(16, 6, seed=3)
    feat = torch.randn(2, 16, 16, 16, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (64, 64), [[0, 1, 2], [2, 3, 4]], g)
    target[1, 21:23, 37:40] = 5
    downsampled = legacy_nearest_downsample(target, (16, 16))
    assert (target == 5).any() and not (downsampled == 5).any()
    return clf, feat, target


def case_many_classes():
    """K=150, 12 classes per image (4 shared between the images), 255 regions; C=32, 32x32 -> 128x128."""
    g = _gen(4)
    clf = make_classifier(32, 150, seed=4)
    feat = torch.randn(2, 32, 32, 32, generator=g, dtype=torch.float64)
    perm = torch.randperm(150, generator=g).tolist()
    classes = [perm[:12], perm[8:20]]
    target = voronoi_labels(2, (128, 128), classes, g, ignore_rects=2)
    return clf, feat, target


def case_non_square():
    """Non-square feature map and label (16x24 -> 64x96)."""
    g = _gen(5)
    clf = make_classifier(16, 7, seed=5)
    feat = torch.randn(2, 16, 16, 24, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (64, 96), [[0, 3, 6], [1, 3, 5, 6]], g)
    return clf, feat, target


def case_non_integer_ratio():
    """Label size not a multiple of the feature size (17x15 -> 64x64): legacy nearest with
    src = floor(dst * in / out) and bilinear align_corners=True still define everything."""
    g = _gen(6)
    clf = make_classifier(16, 5, seed=6)
    feat = torch.randn(2, 16, 17, 15, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (64, 64), [[0, 1, 2], [1, 3]], g)
    return clf, feat, target


CASES: dict[str, Callable] = {
    "absent_classes": case_absent_classes,
    "all_ignore_image": case_all_ignore_image,
    "full_resolution_only_class": case_full_resolution_only_class,
    "many_classes_K150": case_many_classes,
    "non_square": case_non_square,
    "non_integer_ratio": case_non_integer_ratio,
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case: str) -> None:
    clf, feat, target = CASES[case]()
    assert_matches_reference(clf, feat, target)


def test_all_ignore_batch() -> None:
    """A batch without a single valid pixel: every term is finite and

    * ce = 0            (no valid pixel; mmseg CE divides 0 by B*H*W)
    * ce_coarse = 0, ce_teacher = 0   (valid-pixel CE with 0 valid pixels -> 0, not NaN: Q6 fix)
    * kd_response = 0   (no class in the downsampled label, |K| = 0)
    * dice = 0, dice_teacher = 0      (no (b, k) mask; n = max(1, 0) = 1)
    * kd_semantic >= 0  still computed: the teacher's semantic centers are all sg(S)
    * kd_spatial > 0    still computed: the teacher's spatial centers are all sg(E); a cross
                        entropy between channel softmaxes is at least the teacher's entropy.
    """
    g = _gen(7)
    clf = make_classifier(16, 6, seed=7)
    feat = torch.randn(2, 16, 16, 16, generator=g, dtype=torch.float64)
    target = torch.full((2, 64, 64), IGNORE, dtype=torch.long)
    losses = assert_matches_reference(clf, feat, target)
    for key in ("ce", "ce_coarse", "ce_teacher", "kd_response", "dice", "dice_teacher"):
        assert losses[key].item() == 0.0, f"{key} = {losses[key].item()} on an all-ignore batch"
    assert losses["kd_semantic"].item() >= 0.0
    assert losses["kd_spatial"].item() > 0.0


def test_float32_close_to_float64_reference() -> None:
    """The float32 module (the training dtype) against the float64 reference on the same weights.
    Tolerance reflects float32 rounding only (about 1e-7 relative per op)."""
    clf64, feat, target = case_absent_classes()
    clf32 = copy.deepcopy(clf64).float()
    logits, losses, grads = run_fast(clf32, feat.float(), target)
    ref_logits, ref_losses, ref_grads = run_reference(clf64, feat, target)
    torch.testing.assert_close(logits.double(), ref_logits, rtol=1e-4, atol=1e-5)
    for key in LOSS_KEYS:
        assert losses[key].dtype == torch.float32, f"{key} is {losses[key].dtype}, expected float32 (Q4)"
        torch.testing.assert_close(
            losses[key].double(), ref_losses[key], rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}"
        )
    for name, want in ref_grads.items():
        scale = want.abs().max().item()
        torch.testing.assert_close(
            grads[name].double(), want, rtol=1e-3, atol=1e-4 * scale, msg=lambda m, n=name: f"grad {n}: {m}"
        )


# --------------------------------------------------------------------------------------------
# eval path, deploy, parameter counts
# --------------------------------------------------------------------------------------------
def test_eval_forward_equals_train_student_logits() -> None:
    clf, feat, target = case_absent_classes()
    train_logits, _ = clf(feat, target)
    clf.eval()
    with torch.no_grad():
        eval_logits = clf(feat)
    assert eval_logits.shape == train_logits.shape == (2, 8, 16, 16)
    torch.testing.assert_close(eval_logits, train_logits.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(eval_logits, reference_eval_forward(clf, feat).detach(), rtol=RTOL, atol=ATOL)


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_deploy_drops_exactly_the_teacher() -> None:
    C, K = 16, 6
    clf, feat, _ = case_all_ignore_image()
    clf.eval()
    with torch.no_grad():
        before = clf(feat)
    count = _num_params(clf)
    clf.deploy()
    assert count - _num_params(clf) == 4 * C * C + 2 * C
    assert not [n for n, _ in clf.named_parameters() if n.startswith("teacher_")]
    with torch.no_grad():
        after = clf(feat)
    assert torch.equal(before, after)
    assert clf.conv_seg.weight.shape == (K, C, 1, 1)


# (C, K, total added, inference-only added): docs/algorithm.md §2 table
SPEC_PARAM_TABLE = [
    (512, 150, 2_181_120, 1_131_520),
    (512, 171, 2_191_872, 1_142_272),
    (512, 59, 2_134_528, 1_084_928),
    (256, 150, 566_272, 303_616),
    (160, 150, 231_040, 128_320),
    (192, 150, 326_400, 178_560),
    (1024, 150, 8_556_544, 4_360_192),
]


@pytest.mark.parametrize("channels, num_classes, total_added, inference_added", SPEC_PARAM_TABLE)
def test_parameter_count_matches_spec_table(
    channels: int, num_classes: int, total_added: int, inference_added: int
) -> None:
    C, K = channels, num_classes
    assert total_added == 8 * C * C + 14 * C + K * C
    assert inference_added == 4 * C * C + 12 * C + K * C
    baseline = _num_params(LinearClassifier(C, K))
    assert baseline == K * C + K
    clf = SSAClassifier(C, K)
    assert _num_params(clf) - baseline == total_added
    clf.deploy()
    assert _num_params(clf) - baseline == inference_added


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", ["absent_classes", "all_ignore_image"])
def test_matches_reference_on_cuda(case: str) -> None:
    clf, feat, target = CASES[case]()
    assert_matches_reference(clf.cuda(), feat.cuda(), target.cuda())
