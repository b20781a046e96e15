"""Cross-entropy and sigmoid statistics of logits bilinearly upsampled to the label size
(docs/algorithm.md §6.1-6.3, §6.5, §6.11, Q6, Q7), without ever building the (B, K, H, W) upsampled logits.

Upsampled logits are (B, K, H, W) — 78.6 M floats for B = 2, K = 150 at 512². Every loss that
needs them is a sum over pixels, so the losses only need:

* the log-sum-exp of every pixel, summed over the valid pixels of each image (B,);
* the sigmoid of every (pixel, class), summed over the pixels of each image (B, K) (dice);
* the upsampled logit of each pixel's own class (B, H, W), which is a 4-corner gather.

Bilinear upsampling is separable with two non-zeros per output row and column. The columns are
upsampled once to ``(h, B, W, K)`` (classes last, so the reductions over K are contiguous); then,
band by band over the label rows, a band's logits are formed by a thin (rows x 2..3) matmul, and
the log-sum-exp, the sigmoid sums *and their gradients* are computed while the band is in
cache. The gradients are scattered back to low-resolution rows at once, so the backward is one
multiply-add of two low-resolution tensors: nothing is recomputed and autograd saves only
``(B, K, h, w)`` tensors. The gradient is exact for any incoming gradient because both sums are
linear in per-image (B,) or per-(image, class) (B, K) coefficients.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Elements (rows x B x W x K) per band. On CPU 2^21 (8 MB in fp32, ~13 label rows at B = 2,
#: K = 150, 512²) stays in the last-level cache while keeping the op count low: every op is an
#: OpenMP region, and on a busy machine each region can cost a scheduler slice (measured ~6 ms per
#: 1-row op under load; single-thread CPU time was flat from 4 to 16 rows). On a GPU 2^24 keeps
#: launches few and buffers small.
_BAND_ELEMENTS = {"cpu": 1 << 21}
_DEFAULT_BAND_ELEMENTS = 1 << 24
#: Below this bound on |logits|, exp() needs no max shift in fp32 (e^60 · K stays far from
#: overflow, e^-60 far from underflow), which saves a max and a subtraction per element.
_SHIFT_FREE_BOUND = 60.0


def _axis_tables(out_size: int, in_size: int, align_corners: bool) -> tuple[Tensor, Tensor, Tensor]:
    """PyTorch's bilinear source indices and weights along one axis (float64, on the host).

    Returns i0, i1 (out,) long and the weight of i1 (out,): out[d] = (1-λ)·in[i0] + λ·in[i1].
    """
    dst = torch.arange(out_size, dtype=torch.float64)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    return i0, i1, src - i0


def _dense(i0: Tensor, i1: Tensor, lam: Tensor, in_size: int) -> Tensor:
    """The (out, in) interpolation matrix with two non-zeros per row."""
    rows = torch.arange(len(i0))
    matrix = torch.zeros(len(i0), in_size, dtype=torch.float64)
    matrix.index_put_((rows, i0), 1.0 - lam, accumulate=True)
    matrix.index_put_((rows, i1), lam, accumulate=True)
    return matrix


@dataclass(frozen=True)
class BilinearPlan:
    """Everything needed to upsample (h, w) -> (H, W) bilinearly, on one device and dtype.

    rows (H, h) and cols (W, w) are the dense interpolation matrices; row_index/col_index (2, H)
    and (2, W) and row_weight/col_weight are the two taps per output row/column (for gathers);
    bands holds, per band of output rows, (first row, end row, first input row, end input row)
    as host integers, so slicing needs no device round-trip.
    """

    rows: Tensor
    cols: Tensor
    row_index: Tensor
    row_weight: Tensor
    col_index: Tensor
    col_weight: Tensor
    bands: tuple[tuple[int, int, int, int], ...]


@functools.lru_cache(maxsize=32)
def bilinear_plan(
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    align_corners: bool,
    device: torch.device,
    dtype: torch.dtype,
    band_rows: int,
) -> BilinearPlan:
    """Cached :class:`BilinearPlan` (built on the host once per configuration, then copied)."""
    (h, w), (big_h, big_w) = in_size, out_size
    r0, r1, rl = _axis_tables(big_h, h, align_corners)
    c0, c1, cl = _axis_tables(big_w, w, align_corners)
    bands = []
    for start in range(0, big_h, band_rows):
        end = min(start + band_rows, big_h)
        bands.append((start, end, int(r0[start]), int(r1[end - 1]) + 1))

    def dev(x: Tensor) -> Tensor:
        return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)

    return BilinearPlan(
        rows=dev(_dense(r0, r1, rl, h)),
        cols=dev(_dense(c0, c1, cl, w)),
        row_index=dev(torch.stack([r0, r1])),
        row_weight=dev(torch.stack([1.0 - rl, rl])),
        col_index=dev(torch.stack([c0, c1])),
        col_weight=dev(torch.stack([1.0 - cl, cl])),
        bands=tuple(bands),
    )


def plan_for(logits: Tensor, out_size: tuple[int, int], align_corners: bool) -> BilinearPlan:
    """The plan for ``logits (B,K,h,w)`` and a label size, with the device's band height."""
    batch, classes = logits.shape[:2]
    budget = _BAND_ELEMENTS.get(logits.device.type, _DEFAULT_BAND_ELEMENTS)
    band_rows = max(1, budget // (batch * classes * out_size[1]))
    return bilinear_plan(
        tuple(logits.shape[-2:]), tuple(out_size), align_corners, logits.device, logits.dtype, band_rows
    )


def upsampled_own_logit(logits: Tensor, index: Tensor, plan: BilinearPlan) -> Tensor:
    """``bilinear(logits)[b, index[b,p], p]`` as a 4-corner gather (differentiable by autograd).

    logits (B,K,h,w), index (B,H,W) long in [0, K) -> (B,H,W).
    """
    image = torch.arange(logits.shape[0], device=logits.device)[:, None, None]
    out = None
    for row_tap in range(2):
        row = plan.row_index[row_tap][None, :, None]
        row_weight = plan.row_weight[row_tap][None, :, None]
        for col_tap in range(2):
            col = plan.col_index[col_tap][None, None, :]
            term = logits[image, index, row, col] * (row_weight * plan.col_weight[col_tap][None, None, :])
            out = term if out is None else out + term
    return out


class _UpsampledSums(torch.autograd.Function):
    """logits (B,K,h,w) -> with up = bilinear(logits) at the plan's label size:
    lse_sum (B,) = Σ_p pixel_weight[b,p] · logsumexp_k up[b,:,p], and, ``with_sigmoid``,
    prob_sum (B,K) = Σ_p sigmoid_mask[b,p] · sigmoid(up[b,k,p]) (all pixels when the mask is None;
    empty without sigmoid).

    The gradients of both outputs w.r.t. the logits are accumulated in the forward, band by band,
    as two (B,K,h,w) tensors; the backward only scales them by the incoming gradients.
    """

    @staticmethod
    def forward(ctx, logits, plan, pixel_weight, with_sigmoid, sigmoid_mask, shift_free):
        batch, classes, h, _ = logits.shape
        big_w = plan.cols.shape[0]
        need_grad = ctx.needs_input_grad[0]
        # Columns once, label rows outermost and classes contiguous: (h,B,w,K) -> (h,B,W,K), so
        # a band of rows is one 2-D matmul and its gradient one 2-D addmm into a contiguous slice.
        columns = torch.matmul(plan.cols, logits.permute(2, 0, 3, 1)).reshape(h, batch * big_w * classes)
        row_weight = pixel_weight.transpose(0, 1)  # (H,B,W)
        row_mask = sigmoid_mask.transpose(0, 1) if sigmoid_mask is not None else None
        lse = logits.new_empty(pixel_weight.shape[1], batch, big_w, 1)  # per-pixel log-sum-exp (H,B,W,1)
        band_prob_sums = logits.new_empty(len(plan.bands), batch, classes) if with_sigmoid else None
        grad_lse = torch.zeros_like(columns) if need_grad else None
        grad_prob = torch.zeros_like(columns) if need_grad and with_sigmoid else None
        buffers: dict[int, tuple[Tensor, Tensor]] = {}
        for band, (start, end, lo, hi) in enumerate(plan.bands):
            rows = end - start
            if rows not in buffers:  # reused across bands: fresh allocations cost page faults on CPU
                buffers[rows] = (columns.new_empty(rows, columns.shape[1]), columns.new_empty(rows, columns.shape[1]))
            up, sig = buffers[rows]
            band_rows = plan.rows[start:end, lo:hi]
            torch.mm(band_rows, columns[lo:hi], out=up)
            up4 = up.view(rows, batch, big_w, classes)
            sig4 = sig.view(rows, batch, big_w, classes)
            weight = row_weight[start:end, :, :, None]
            if with_sigmoid and not shift_free:
                torch.sigmoid(up, out=sig)
            if shift_free:  # |up| <= 60: exp(up) neither overflows nor underflows in fp32
                up.exp_()
                total = up4.sum(-1, keepdim=True)
                torch.log(total, out=lse[start:end])
                if with_sigmoid:  # sigmoid = e / (1 + e), cheaper than torch.sigmoid on CPU
                    torch.add(up, 1.0, out=sig)
                    torch.div(up, sig, out=sig)
            else:
                peak = up4.amax(-1, keepdim=True)
                up4.sub_(peak)
                up.exp_()
                total = up4.sum(-1, keepdim=True)
                torch.log(total, out=lse[start:end]).add_(peak)
            if with_sigmoid:
                if row_mask is not None:
                    sig4.mul_(row_mask[start:end, :, :, None])
                torch.sum(sig4, (0, 2), out=band_prob_sums[band])
                if need_grad:  # d sigmoid = s(1-s); masked pixels stay 0
                    sig.addcmul_(sig, sig, value=-1.0)
                    grad_prob[lo:hi].addmm_(band_rows.t(), sig)
            if need_grad:  # d lse = softmax
                up4.mul_(weight / total)
                grad_lse[lo:hi].addmm_(band_rows.t(), up)
        if need_grad:
            # Column transpose once: (h,B,W,K) -> (h,B,w,K) -> (B,K,h,w).
            def to_logits(grad: Tensor) -> Tensor:
                low = torch.matmul(plan.cols.t(), grad.view(h, batch, big_w, classes))
                return low.permute(1, 3, 0, 2).contiguous()

            ctx.save_for_backward(to_logits(grad_lse), to_logits(grad_prob) if with_sigmoid else None)
        lse_sum = (lse[..., 0] * row_weight).sum((0, 2))
        return lse_sum, band_prob_sums.sum(0) if with_sigmoid else logits.new_zeros(0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse_sum, grad_prob_sum):
        unit_lse, unit_prob = ctx.saved_tensors
        grad = unit_lse * grad_lse_sum[:, None, None, None]
        if unit_prob is not None and grad_prob_sum is not None:
            grad.addcmul_(unit_prob, grad_prob_sum[:, :, None, None])
        return grad, None, None, None, None, None


class UpsampledStats(NamedTuple):
    """Statistics of logits upsampled to the label size (see :func:`upsampled_stats`)."""

    lse_sum: Tensor  # (B,) Σ over valid pixels of logsumexp_k of the upsampled logits
    own_logit: Tensor  # (B,H,W) upsampled logit of the pixel's own class (class 0 where ignored)
    prob_sum: Tensor  # (B,K) Σ over pixels of sigmoid(upsampled logits), or empty
    valid: Tensor  # (B,H,W) bool, label != ignore_index


def check_target(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Reject labels that are not integer, or outside [0, K) other than ``ignore_index``.

    The dtype check is free. The range check reads the labels once: on CPU it runs eagerly and
    raises a ValueError naming the offending value (the CPU is synchronous, so this costs one
    pass over B·H·W integers and no wait). On an accelerator an eager check would stall the
    host every step, so it is an asynchronous device assertion instead (reported by the next
    synchronising call, as a device-side assert with the same message).
    """
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices (e.g. torch.long), got dtype {target.dtype}")
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if target.device.type == "cpu":
        if bad.any():
            value = int(target[bad][0])
            raise ValueError(
                f"target holds label {value}, outside [0, {num_classes}) for K = {num_classes} classes "
                f"(and not the ignore index {ignore_index})"
            )
    else:
        torch._assert_async(~bad.any(), f"target labels must lie in [0, {num_classes}) or equal {ignore_index}")


def upsampled_stats(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = 255,
    align_corners: bool = False,
    with_prob_sum: bool = False,
    mask_ignore: bool = False,
    logit_bound: float | None = None,
) -> UpsampledStats:
    """Statistics of ``bilinear(logits (B,K,h,w), size of target (B,H,W))`` for CE and dice.

    Equal (up to float summation order) to computing them on ``F.interpolate(logits, ...)`` with
    autograd, without building the upsampled logits. ``logit_bound``: a bound on |logits|
    known to the caller (SSA's τ-scaled cosines); below 60 it lets exp() skip the max shift.
    Labels must be integer (checked) and in [0, K) or ``ignore_index`` (see :func:`check_target`).
    """
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices (e.g. torch.long), got dtype {target.dtype}")
    target = target.long()
    valid = target != ignore_index
    index = torch.where(valid, target, 0)
    plan = plan_for(logits, tuple(target.shape[-2:]), align_corners)
    pixel_weight = valid.to(logits.dtype)
    sigmoid_mask = pixel_weight if mask_ignore else None
    shift_free = logit_bound is not None and abs(logit_bound) <= _SHIFT_FREE_BOUND
    with torch.autocast(logits.device.type, enabled=False):  # the logits' precision, not autocast's
        lse_sum, prob_sum = _UpsampledSums.apply(logits, plan, pixel_weight, with_prob_sum, sigmoid_mask, shift_free)
        own = upsampled_own_logit(logits, index, plan)
    return UpsampledStats(lse_sum, own, prob_sum, valid)


def reduce_cross_entropy(stats: UpsampledStats, all_pixels: bool) -> Tensor:
    """Mean CE from :class:`UpsampledStats`: over all B*H*W pixels (mmseg 0.30, ``all_pixels``) or
    over the valid ones, 0 (not NaN) when there are none (docs/algorithm.md Q6 fix)."""
    total = stats.lse_sum.sum() - (stats.own_logit * stats.valid).sum()
    if all_pixels:
        return total / stats.valid.numel()
    return total / stats.valid.sum().clamp_min(1)
