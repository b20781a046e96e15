"""upsampled_pixel_stats (the fused upsample + CE / dice statistics) against plain autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssaseg.classifiers.losses import reduce_cross_entropy, upsampled_pixel_stats


def _reference(logits, target, align_corners, mask_ignore):
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=align_corners)
    valid = target != 255
    index = torch.where(valid, target, 0)
    lse = torch.logsumexp(up, dim=1)
    own = up.gather(1, index[:, None])[:, 0]
    prob = torch.sigmoid(up)
    if mask_ignore:
        prob = prob * valid[:, None]
    return lse, own, prob.sum((2, 3))


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("mask_ignore", [False, True])
def test_values_and_gradients_match_autograd(align_corners, mask_ignore):
    gen = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(2, 7, 5, 6, generator=gen, dtype=torch.float64)).requires_grad_(True)
    target = torch.randint(0, 7, (2, 19, 23), generator=gen)
    target[0, :4] = 255
    weights = [torch.randn(2, 19, 23, generator=gen, dtype=torch.float64) for _ in range(2)]
    weights.append(torch.randn(2, 7, generator=gen, dtype=torch.float64))

    fast = upsampled_pixel_stats(logits, target, 255, align_corners, with_prob_sum=True, mask_ignore=mask_ignore)
    ref = _reference(logits, target, align_corners, mask_ignore)
    lse_fast = fast.nll + fast.own_logit  # nll = (lse - own)·valid, so this is lse on valid pixels
    for got, want in zip((fast.own_logit, fast.prob_sum), ref[1:]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse_fast[fast.valid], ref[0][fast.valid], rtol=1e-12, atol=1e-12)

    # Gradient of an arbitrary combination of the three outputs.
    def objective(lse, own, prob_sum):
        return (lse * weights[0]).sum() + (own * weights[1]).sum() + (prob_sum * weights[2]).sum()

    valid = fast.valid
    (grad_fast,) = torch.autograd.grad(objective(fast.nll + fast.own_logit * valid, fast.own_logit, fast.prob_sum), logits)
    lse, own, prob_sum = ref
    (grad_ref,) = torch.autograd.grad(objective(lse * valid, own, prob_sum), logits)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-10, atol=1e-12)


def test_cross_entropy_normalisations_and_all_ignore():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    target = torch.randint(0, 4, (2, 32, 32), generator=gen)
    target[:, :8] = 255
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, target, ignore_index=255, reduction="none")
    stats = upsampled_pixel_stats(logits, target)
    torch.testing.assert_close(reduce_cross_entropy(stats, all_pixels=True), per_pixel.sum() / target.numel())
    torch.testing.assert_close(reduce_cross_entropy(stats, all_pixels=False), F.cross_entropy(up, target, ignore_index=255))
    empty = upsampled_pixel_stats(logits, torch.full_like(target, 255))
    loss = reduce_cross_entropy(empty, all_pixels=False)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_retained_graph_gives_the_same_gradient_twice():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 5, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (1, 16, 16), generator=gen)
    stats = upsampled_pixel_stats(logits, target, with_prob_sum=True)
    loss = reduce_cross_entropy(stats, all_pixels=True) + stats.prob_sum.sum()
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
