"""upsampled_stats (the banded upsample + log-sum-exp / sigmoid sums) against plain autograd
through ``F.interpolate``, and the label checks of the shared loss path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssaseg.classifiers import losses
from ssaseg.classifiers.losses import Scored, check_target, pixel_labels, reduce_cross_entropy, upsampled_stats


def _reference(logits, target, align_corners, mask_ignore):
    """The statistics from the materialised upsampling: per-image Σ_valid CE, per-class Σ sigmoid
    (for the classes present in the image, 0 for the others), per-class Σ_valid sigmoid of the
    own class, per-class valid counts."""
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=align_corners)
    num_classes = logits.shape[1]
    valid = target != 255
    index = torch.where(valid, target, 0)
    ce_sum = (F.cross_entropy(up, index, reduction="none") * valid).sum((1, 2))
    prob = torch.sigmoid(up)
    onehot = F.one_hot(index, num_classes).permute(0, 3, 1, 2) * valid[:, None]
    label_prob_sum = (prob * onehot).sum((2, 3))
    if mask_ignore:
        prob = prob * valid[:, None]
    count = onehot.sum((2, 3))
    return ce_sum, prob.sum((2, 3)) * (count > 0), label_prob_sum, count.to(logits.dtype)


def _labels(logits, target):
    return pixel_labels(target, logits.shape[1], 255, logits.dtype)


def _stats(logits, target, align_corners=False, with_prob_sum=False, mask_ignore=False, logit_bound=None):
    """upsampled_stats of one logits tensor."""
    labels = _labels(logits, target)
    return upsampled_stats([Scored(logits, with_prob_sum, logit_bound)], labels, align_corners, mask_ignore)[0]


def _outputs(stats):
    return stats.ce_sum, stats.prob_sum, stats.label_prob_sum, stats.class_count


@pytest.mark.parametrize("band_elements", [1, 1 << 30])  # one label row per band / one band
@pytest.mark.parametrize("logit_bound", [None, 12.0, 100.0])  # measured, given, max shift
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("mask_ignore", [False, True])
@pytest.mark.parametrize("size", [(19, 23), (3, 4)])  # upsampling, and rows/columns downsampled
@pytest.mark.parametrize("few_classes", [False, True])  # every class present / 2 and 3 of 7 (a subset)
def test_values_and_gradients_match_autograd(
    monkeypatch, band_elements, logit_bound, align_corners, mask_ignore, size, few_classes
):
    monkeypatch.setitem(losses._BAND_ELEMENTS, "cpu", band_elements)
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 7, 5, 6, generator=gen, dtype=torch.float64)).clamp(-12, 12).requires_grad_(True)
    target = torch.randint(0, 7, (2, *size), generator=gen)
    if few_classes:
        target[0] = torch.tensor([1, 4])[torch.randint(0, 2, size, generator=gen)]
        target[1] = torch.tensor([0, 2, 6])[torch.randint(0, 3, size, generator=gen)]
    target[0, :2] = 255
    weights = (
        torch.randn(2, generator=gen, dtype=torch.float64),
        torch.randn(2, 7, generator=gen, dtype=torch.float64),
        torch.randn(2, 7, generator=gen, dtype=torch.float64),
    )

    fast = _stats(logits, target, align_corners, True, mask_ignore, logit_bound)
    ref = _reference(logits, target, align_corners, mask_ignore)
    for got, want in zip(_outputs(fast), ref):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert fast.num_pixels == target.numel()

    def objective(ce_sum, prob_sum, label_prob_sum, _count):  # an arbitrary combination of the outputs
        return (ce_sum * weights[0]).sum() + (prob_sum * weights[1]).sum() + (label_prob_sum * weights[2]).sum()

    (grad_fast,) = torch.autograd.grad(objective(*_outputs(fast)), logits)
    (grad_ref,) = torch.autograd.grad(objective(*ref), logits)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shift", [False, True])
def test_several_logits_in_one_pass_match_each_alone(monkeypatch, shift):
    """SSA's use: a CE-only logits tensor and two with sigmoid sums against the same labels;
    each matches its own materialised reference."""
    monkeypatch.setitem(losses._BAND_ELEMENTS, "cpu", 200)
    gen = torch.Generator().manual_seed(7)
    make = lambda scale: (scale * torch.randn(2, 5, 6, 4, generator=gen, dtype=torch.float64)).requires_grad_(True)
    coarse, student, teacher = make(4.0), make(2.0), make(3.0)
    target = torch.randint(0, 5, (2, 17, 13), generator=gen)
    target[1, :, 5:8] = 255
    bound = 100.0 if shift else 15.0  # a bound above 60 forces the max shift
    scored = [Scored(coarse, logit_bound=bound), Scored(student, True, bound), Scored(teacher, True, bound)]
    got = upsampled_stats(scored, _labels(coarse, target), align_corners=True)
    weights = [torch.randn(2, 5, generator=gen, dtype=torch.float64) for _ in range(6)]
    objective_fast, objective_ref = 0.0, 0.0
    for item, stats, (w_prob, w_label) in zip(scored, got, zip(weights[::2], weights[1::2])):
        ref = _reference(item.logits, target, True, False)
        torch.testing.assert_close(stats.ce_sum, ref[0], rtol=1e-12, atol=1e-12)
        objective_fast = objective_fast + stats.ce_sum.sum()
        objective_ref = objective_ref + ref[0].sum()
        if item.with_prob_sum:
            for a, b in zip(_outputs(stats)[1:], ref[1:]):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            objective_fast = objective_fast + (stats.prob_sum * w_prob).sum() + (stats.label_prob_sum * w_label).sum()
            objective_ref = objective_ref + (ref[1] * w_prob).sum() + (ref[2] * w_label).sum()
        else:
            assert stats.prob_sum.numel() == 0 and stats.label_prob_sum.numel() == 0
    grads_fast = torch.autograd.grad(objective_fast, [coarse, student, teacher])
    grads_ref = torch.autograd.grad(objective_ref, [coarse, student, teacher])
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sigmoid_sums_of_absent_classes_are_zero_when_every_class_is_computed():
    """One image holds every class, so all K are computed (as on an accelerator); the other
    image's absent classes still read 0, with no gradient, like the reference."""
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 12, 10), generator=gen)
    target[0, :2, :4] = torch.arange(4).repeat(2, 1)  # image 0 holds all 4 classes
    target[1] = torch.where(target[1] < 2, 1, 3)  # image 1 only classes 1 and 3
    got = _stats(logits, target, with_prob_sum=True)
    ref = _reference(logits, target, False, False)
    assert (got.prob_sum[1, [0, 2]] == 0).all()
    torch.testing.assert_close(got.prob_sum, ref[1], rtol=1e-12, atol=1e-12)
    weight = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    (grad_fast,) = torch.autograd.grad((got.prob_sum * weight).sum(), logits)
    (grad_ref,) = torch.autograd.grad((ref[1] * weight).sum(), logits)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-10, atol=1e-12)


def test_logits_of_different_shapes_are_refused():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 5)
    with pytest.raises(ValueError, match="one shape"):
        upsampled_stats([Scored(a), Scored(b)], _labels(a, target))


def test_cross_entropy_only_matches_autograd():
    gen = torch.Generator().manual_seed(6)
    logits = (5 * torch.randn(2, 6, 7, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    target = torch.randint(0, 6, (2, 30, 21), generator=gen)
    target[1, 3:9] = 255
    fast = _stats(logits, target, align_corners=True)
    ce_ref = _reference(logits, target, True, False)[0]
    torch.testing.assert_close(fast.ce_sum, ce_ref, rtol=1e-12, atol=1e-12)
    assert fast.prob_sum.numel() == 0 and fast.label_prob_sum.numel() == 0
    (grad_fast,) = torch.autograd.grad(fast.ce_sum.sum(), logits)
    (grad_ref,) = torch.autograd.grad(ce_ref.sum(), logits)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-10, atol=1e-12)


def test_large_logits_use_the_max_shift():
    """Logits far beyond exp()'s range: the unbounded path stays finite and exact in fp32."""
    gen = torch.Generator().manual_seed(3)
    logits = (200 * torch.randn(1, 4, 3, 3, generator=gen)).requires_grad_(True)
    target = torch.randint(0, 4, (1, 8, 8), generator=gen)
    fast = _stats(logits, target, align_corners=True)
    ref = _reference(logits.double(), target, True, False)[0].float()
    torch.testing.assert_close(fast.ce_sum, ref, rtol=1e-5, atol=1e-3)


def test_only_low_resolution_tensors_are_saved_for_backward():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    target = torch.randint(0, 5, (2, 32, 32))
    stats = _stats(logits, target, with_prob_sum=True)
    saved = stats.ce_sum.grad_fn.saved_tensors
    assert saved and all(t.shape == logits.shape for t in saved)


def test_no_grad_skips_the_gradient_and_matches():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 4, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 16, 16), generator=gen)
    with torch.no_grad():
        stats = _stats(logits, target, with_prob_sum=True)
    for got, want in zip(_outputs(stats), _reference(logits, target, False, False)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_cross_entropy_normalisations_and_all_ignore():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    target = torch.randint(0, 4, (2, 32, 32), generator=gen)
    target[:, :8] = 255
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, target, ignore_index=255, reduction="none")
    stats = _stats(logits, target)
    torch.testing.assert_close(reduce_cross_entropy(stats, all_pixels=True), per_pixel.sum() / target.numel())
    torch.testing.assert_close(reduce_cross_entropy(stats, all_pixels=False), F.cross_entropy(up, target, ignore_index=255))
    empty = _stats(logits, torch.full_like(target, 255))
    loss = reduce_cross_entropy(empty, all_pixels=False)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_retained_graph_gives_the_same_gradient_twice():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 5, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (1, 16, 16), generator=gen)
    stats = _stats(logits, target, with_prob_sum=True)
    loss = reduce_cross_entropy(stats, all_pixels=True) + stats.prob_sum.sum()
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bool])
def test_non_integer_targets_are_rejected_with_their_dtype(dtype):
    target = torch.zeros(1, 4, 4, dtype=dtype)
    with pytest.raises(ValueError, match=str(dtype)):
        check_target(target, 3, 255)
    with pytest.raises(ValueError, match=str(dtype)):
        pixel_labels(target, 3, 255)


@pytest.mark.parametrize("value", [-1, 3, 254])
def test_out_of_range_labels_are_rejected_with_value_and_k(value):
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1, 2] = value
    target[0, 0, 0] = 255  # the ignore index is fine
    with pytest.raises(ValueError, match=rf"label {value}\b.*K = 3"):
        check_target(target, 3, 255)
    target[0, 1, 2] = 2
    check_target(target, 3, 255)
    check_target(target.to(torch.uint8), 3, 255)


def test_autocast_does_not_lower_the_loss_precision():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 4, 3, 3, generator=gen, requires_grad=True)
    target = torch.randint(0, 4, (1, 12, 12), generator=gen)
    want = _stats(logits, target, with_prob_sum=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _stats(logits, target, with_prob_sum=True)
    for a, b in zip(_outputs(got), _outputs(want)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
