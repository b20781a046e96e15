"""Cross-entropy at label resolution with the normalisations the reference mixes (spec §6.1-6.3,
Q6, Q7), computed from per-pixel statistics of bilinearly upsampled logits.

Upsampled logits are (B, K, H, W) — 78.6 M floats for B = 2, K = 150 at 512² — and on CPU every
fresh tensor of that size costs a full pass of page faults. :class:`_UpsampledPixelStats`
therefore returns only what the losses need — the log-sum-exp and the target logit per pixel,
and optionally the per-class sum of sigmoids for the dice — allocating one full-size buffer
(two with the dice), where autograd through ``interpolate -> log_softmax -> nll`` (+ ``sigmoid``)
allocates four (eight).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def _upsampled_buffers(logits, index, valid, align_corners, with_prob_sum, mask_ignore):
    """Upsample and derive the full-size buffers: (own logit, peak, exp(up - peak), Σ exp, σ(up) or None).

    ``up`` itself becomes ``exp(up - peak)`` in place, so the cross-entropy needs one full-size
    tensor and the dice one more (the sigmoid).
    """
    up = F.interpolate(logits, size=index.shape[-2:], mode="bilinear", align_corners=align_corners)
    own = up.gather(1, index[:, None])[:, 0]
    peak = up.amax(dim=1, keepdim=True)
    prob = None
    if with_prob_sum:
        prob = torch.sigmoid(up)
        if mask_ignore:
            prob.mul_(valid[:, None])
    shifted_exp = up.sub_(peak).exp_()
    exp_sum = shifted_exp.sum(dim=1, keepdim=True)
    return own, peak, shifted_exp, exp_sum, prob


class _UpsampledPixelStats(torch.autograd.Function):
    """logits (B,K,h,w) -> up = bilinear(logits, size); returns
    lse (B,H,W) = logsumexp_k up, own (B,H,W) = up[target], prob_sum (B,K) = Σ_p sigmoid(up)
    (masked to valid pixels when ``mask_ignore``; empty when not ``with_prob_sum``).

    Full-size tensors are allocated only in the forward: ``up``, turned in place into
    ``exp(up - max)`` (the backward turns it into the softmax in place), and, for the dice, the
    sigmoid (the backward turns it into σ(1-σ) in place). The first backward consumes them; a
    further backward through a retained graph (e.g. one gradient per loss term) recomputes them
    from the saved logits.
    """

    @staticmethod
    def forward(ctx, logits, index, valid, align_corners, with_prob_sum, mask_ignore):
        own, peak, shifted_exp, exp_sum, prob = _upsampled_buffers(
            logits, index, valid, align_corners, with_prob_sum, mask_ignore
        )
        lse = (peak + exp_sum.log())[:, 0]
        prob_sum = prob.sum((2, 3)) if with_prob_sum else lse.new_zeros(0)
        ctx.save_for_backward(logits, index, valid)
        ctx.buffers = (shifted_exp, exp_sum, prob)
        ctx.options = (align_corners, with_prob_sum, mask_ignore)
        return lse, own, prob_sum

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse, grad_own, grad_prob_sum):
        logits, index, valid = ctx.saved_tensors
        if ctx.buffers is None:  # consumed by an earlier backward through a retained graph
            ctx.buffers = _upsampled_buffers(logits, index, valid, *ctx.options)[2:]
        shifted_exp, exp_sum, prob = ctx.buffers
        ctx.buffers = None
        # d lse / d up = softmax(up); d own / d up = one-hot(target); d Σσ / d up = σ(1-σ).
        grad = shifted_exp.div_(exp_sum).mul_(grad_lse[:, None])
        if prob is not None:
            grad.add_(prob.addcmul_(prob, prob, value=-1.0).mul_(grad_prob_sum[:, :, None, None]))
        grad.scatter_add_(1, index[:, None], grad_own[:, None])
        grad_logits = torch.ops.aten.upsample_bilinear2d_backward(
            grad, list(grad.shape[-2:]), list(logits.shape), ctx.options[0]
        )
        return grad_logits, None, None, None, None, None


class PixelStats(NamedTuple):
    """Per-pixel statistics of logits upsampled to the label size (see :func:`upsampled_pixel_stats`)."""

    nll: Tensor  # (B,H,W) cross-entropy of every pixel, 0 where ignored
    own_logit: Tensor  # (B,H,W) upsampled logit of the pixel's own class (class 0 where ignored)
    prob_sum: Tensor  # (B,K) Σ over pixels of sigmoid(upsampled logits), or empty
    valid: Tensor  # (B,H,W) bool, label != ignore_index


def upsampled_pixel_stats(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = 255,
    align_corners: bool = False,
    with_prob_sum: bool = False,
    mask_ignore: bool = False,
) -> PixelStats:
    """Statistics of ``bilinear(logits (B,K,h,w), size of target (B,H,W))`` for CE and dice.

    Equal (up to float summation order) to computing them on ``F.interpolate(logits, ...)`` with
    autograd, without keeping the full-resolution intermediates.
    """
    valid = target != ignore_index
    index = torch.where(valid, target, 0)
    lse, own, prob_sum = _UpsampledPixelStats.apply(
        logits, index, valid, align_corners, with_prob_sum, mask_ignore
    )
    return PixelStats((lse - own) * valid, own, prob_sum, valid)


def cross_entropy_all_pixels(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """mmseg 0.30 CE: ignored pixels give 0 loss but stay in the denominator (divide by B*H*W).

    logits: (B, K, H, W) at label resolution; target: (B, H, W) long. Returns a scalar.
    """
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / target.numel()


def reduce_cross_entropy(stats: PixelStats, all_pixels: bool) -> Tensor:
    """Mean CE from :class:`PixelStats`: over all B*H*W pixels (mmseg 0.30, ``all_pixels``) or over
    the valid ones, 0 (not NaN) when there are none (spec Q6 fix)."""
    if all_pixels:
        return stats.nll.sum() / stats.nll.numel()
    return stats.nll.sum() / stats.valid.sum().clamp_min(1)
