"""upsampled_stats (the banded upsample + log-sum-exp / sigmoid sums) against plain autograd
through ``F.interpolate``, and the label checks of the shared loss path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssaseg.classifiers import losses
from ssaseg.classifiers.losses import check_target, reduce_cross_entropy, upsampled_stats


def _reference(logits, target, align_corners, mask_ignore):
    """Per-image Σ_valid lse, the own logit and per-class Σ sigmoid from the materialised upsampling."""
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=align_corners)
    valid = target != 255
    index = torch.where(valid, target, 0)
    lse_sum = (torch.logsumexp(up, dim=1) * valid).sum((1, 2))
    own = up.gather(1, index[:, None])[:, 0]
    prob = torch.sigmoid(up)
    if mask_ignore:
        prob = prob * valid[:, None]
    return lse_sum, own, prob.sum((2, 3))


@pytest.mark.parametrize("band_elements", [1, 1 << 30])  # one label row per band / one band
@pytest.mark.parametrize("logit_bound", [None, 12.0])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("mask_ignore", [False, True])
def test_values_and_gradients_match_autograd(monkeypatch, band_elements, logit_bound, align_corners, mask_ignore):
    monkeypatch.setitem(losses._BAND_ELEMENTS, "cpu", band_elements)
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 7, 5, 6, generator=gen, dtype=torch.float64)).clamp(-12, 12).requires_grad_(True)
    target = torch.randint(0, 7, (2, 19, 23), generator=gen)
    target[0, :4] = 255
    weights = (
        torch.randn(2, generator=gen, dtype=torch.float64),
        torch.randn(2, 19, 23, generator=gen, dtype=torch.float64),
        torch.randn(2, 7, generator=gen, dtype=torch.float64),
    )

    fast = upsampled_stats(logits, target, 255, align_corners, True, mask_ignore, logit_bound)
    ref = _reference(logits, target, align_corners, mask_ignore)
    for got, want in zip((fast.lse_sum, fast.own_logit, fast.prob_sum), ref):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    def objective(lse_sum, own, prob_sum):  # an arbitrary combination of the three outputs
        return (lse_sum * weights[0]).sum() + (own * weights[1]).sum() + (prob_sum * weights[2]).sum()

    (grad_fast,) = torch.autograd.grad(objective(fast.lse_sum, fast.own_logit, fast.prob_sum), logits)
    (grad_ref,) = torch.autograd.grad(objective(*ref), logits)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-10, atol=1e-12)


def test_large_logits_use_the_max_shift():
    """Logits far beyond exp()'s range: the unbounded path stays finite and exact in fp32."""
    gen = torch.Generator().manual_seed(3)
    logits = (200 * torch.randn(1, 4, 3, 3, generator=gen)).requires_grad_(True)
    target = torch.randint(0, 4, (1, 8, 8), generator=gen)
    fast = upsampled_stats(logits, target, align_corners=True)
    ref = _reference(logits.double(), target, True, False)[0].float()
    torch.testing.assert_close(fast.lse_sum, ref, rtol=1e-5, atol=1e-3)


def test_only_low_resolution_tensors_are_saved_for_backward():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    target = torch.randint(0, 5, (2, 32, 32))
    stats = upsampled_stats(logits, target, with_prob_sum=True)
    saved = stats.lse_sum.grad_fn.saved_tensors
    assert saved and all(t.shape == logits.shape for t in saved)


def test_no_grad_skips_the_gradient_and_matches():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 4, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 16, 16), generator=gen)
    with torch.no_grad():
        stats = upsampled_stats(logits, target, with_prob_sum=True)
    for got, want in zip((stats.lse_sum, stats.own_logit, stats.prob_sum), _reference(logits, target, False, False)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_cross_entropy_normalisations_and_all_ignore():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    target = torch.randint(0, 4, (2, 32, 32), generator=gen)
    target[:, :8] = 255
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, target, ignore_index=255, reduction="none")
    stats = upsampled_stats(logits, target)
    torch.testing.assert_close(reduce_cross_entropy(stats, all_pixels=True), per_pixel.sum() / target.numel())
    torch.testing.assert_close(reduce_cross_entropy(stats, all_pixels=False), F.cross_entropy(up, target, ignore_index=255))
    empty = upsampled_stats(logits, torch.full_like(target, 255))
    loss = reduce_cross_entropy(empty, all_pixels=False)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_retained_graph_gives_the_same_gradient_twice():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 5, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (1, 16, 16), generator=gen)
    stats = upsampled_stats(logits, target, with_prob_sum=True)
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
        upsampled_stats(torch.randn(1, 3, 2, 2), target)


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
    want = upsampled_stats(logits, target, with_prob_sum=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = upsampled_stats(logits, target, with_prob_sum=True)
    for a, b in zip(got[:3], want[:3]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
