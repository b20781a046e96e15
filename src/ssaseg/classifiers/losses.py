"""Cross-entropy and sigmoid statistics of logits bilinearly upsampled to the label size
(docs/algorithm.md §6.1-6.3, §6.5, §6.11, Q6, Q7), without ever building the (B, K, H, W) upsampled logits.

Upsampled logits are (B, K, H, W) — 78.6 M floats for B = 2, K = 150 at 512². Every loss that
needs them is a sum over pixels, so the losses only need, per image:

* the cross-entropy summed over the valid pixels (B,);
* the sigmoid of every (pixel, class) summed over the pixels (B, K), for the classes present in
  the image: the dice reads no other (dice);
* the sigmoid of each valid pixel's own class summed per class (B, K) (the dice intersection).

Bilinear upsampling is separable with two non-zeros per output row and column. The label rows are
processed in bands of a few MB. The low-resolution input rows the bands read go through a sliding
window: each is upsampled along the columns once (PyTorch's own 1-D bilinear kernel); a band's rows
are then a thin (rows x 2..3) matmul of the window, and the log-sum-exp, the sigmoid sums *and their
gradients* are computed on the band. The band's gradient goes back through its rows into the
window, and each window row through the transposed column upsampling
(``upsample_bilinear2d_backward``) once no later band reads it, into a low-resolution accumulator.
So the backward is one multiply-add of low-resolution tensors: nothing is recomputed, nothing much
larger than a band is allocated, and autograd saves only ``(B, K, h, w)`` tensors. The gradient is
exact for any incoming gradient because every output is a sum with per-image (B,) or
per-(image, class) (B, K) coefficients. The own-class logit is linear in the logits, so its part of
the cross-entropy and of its gradient is one low-resolution tensor shared by every logits tensor
scored against the same labels.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Elements (rows x B x W x K) per band. On CPU 2^21 (8 MB in fp32, 13 label rows at B = 2,
#: K = 150, 512²) measured fastest: at 2^19 and 2^20 the per-band op dispatch cost more than the
#: smaller bands saved in cache, at 2^22 the ops slowed down (benchmarks/train_step.py). On a GPU
#: 2^24 keeps launches few and buffers small.
_BAND_ELEMENTS = {"cpu": 1 << 21}
_DEFAULT_BAND_ELEMENTS = 1 << 24
#: Below this bound on |logits|, exp() needs no max shift in fp32 (e^60 · K stays far from
#: overflow, e^-60 far from underflow), which saves a max and a subtraction per element.
_SHIFT_FREE_BOUND = 60.0
#: Input rows the sliding window holds beyond what one band reads.
_WINDOW_SLACK = 8


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


@dataclass(frozen=True)
class BilinearPlan:
    """Everything needed to upsample (h, w) -> (H, W) bilinearly, on one device and dtype.

    row_index/col_index (2, H) and (2, W) and row_weight/col_weight hold the two taps per output
    row/column; bands holds, per band of output rows, (first row, end row, first input row, end
    input row) as host integers, so slicing needs no device round-trip, and band_rows the band's
    block of the row-interpolation matrix, contiguous, with its transpose.
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    align_corners: bool
    row_index: Tensor
    row_weight: Tensor
    col_index: Tensor
    col_weight: Tensor
    bands: tuple[tuple[int, int, int, int], ...]
    band_rows: tuple[tuple[Tensor, Tensor], ...]


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
    rows = torch.zeros(big_h, h, dtype=torch.float64)  # two non-zeros per row
    rows.index_put_((torch.arange(big_h), r0), 1.0 - rl, accumulate=True)
    rows.index_put_((torch.arange(big_h), r1), rl, accumulate=True)
    bands = []
    for start in range(0, big_h, band_rows):
        end = min(start + band_rows, big_h)
        bands.append((start, end, int(r0[start]), int(r1[end - 1]) + 1))

    def dev(x: Tensor) -> Tensor:
        return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)

    return BilinearPlan(
        in_size=(h, w),
        out_size=(big_h, big_w),
        align_corners=align_corners,
        row_index=dev(torch.stack([r0, r1])),
        row_weight=dev(torch.stack([1.0 - rl, rl])),
        col_index=dev(torch.stack([c0, c1])),
        col_weight=dev(torch.stack([1.0 - cl, cl])),
        bands=tuple(bands),
        band_rows=tuple(
            (dev(rows[start:end, lo:hi]).contiguous(), dev(rows[start:end, lo:hi].t()).contiguous())
            for start, end, lo, hi in bands
        ),
    )


def plan_for(logits: Tensor, out_size: tuple[int, int], align_corners: bool) -> BilinearPlan:
    """The plan for ``logits (B,K,h,w)`` and a label size, with the device's band height."""
    batch, classes = logits.shape[:2]
    budget = _BAND_ELEMENTS.get(logits.device.type, _DEFAULT_BAND_ELEMENTS)
    band_rows = max(1, budget // (batch * classes * out_size[1]))
    return bilinear_plan(
        tuple(logits.shape[-2:]), tuple(out_size), align_corners, logits.device, logits.dtype, band_rows
    )


class PixelLabels(NamedTuple):
    """Labels (B,H,W) in the layout the banded losses read (label rows outermost), built once by
    :func:`pixel_labels` and shared by every logits tensor scored against them."""

    index: Tensor  # (H,B,W) long: the pixel's class, 0 where ignored
    slot: Tensor  # (H,B,W) long: b·K + the pixel's class, the flat (image, class) index
    weight: Tensor  # (H,B,W) float: 1 for valid pixels, 0 for ignored ones
    class_count: Tensor  # (B,K) float: valid pixels per class
    num_pixels: int  # B·H·W, ignored pixels included


def _check_integer(target: Tensor) -> None:
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices (e.g. torch.long), got dtype {target.dtype}")


def pixel_labels(
    target: Tensor, num_classes: int, ignore_index: int = 255, dtype: torch.dtype = torch.float32
) -> PixelLabels:
    """:class:`PixelLabels` of ``target`` (B,H,W) integer, labels in [0, K) or ``ignore_index``
    (the range is the caller's to check, see :func:`check_target`)."""
    _check_integer(target)
    batch = target.shape[0]
    rows_first = target.transpose(0, 1).contiguous()
    valid = rows_first != ignore_index
    index = torch.where(valid, rows_first, 0).long()
    weight = valid.to(dtype)
    slot = torch.arange(batch, device=target.device)[None, :, None] * num_classes + index
    class_count = torch.zeros(batch * num_classes, dtype=dtype, device=target.device)
    class_count.index_add_(0, slot.flatten(), weight.flatten())
    return PixelLabels(index, slot, weight, class_count.view(batch, num_classes), target.numel())


class _LabelBands(NamedTuple):
    """What every logits tensor scored against the same labels and plan shares, built once."""

    index: tuple[Tensor, ...]  # per band, (rows·B·W, 1) long: the pixels' classes (0 where ignored)
    weight: tuple[Tensor, ...]  # per band, (rows·B·W, 1): 1 for valid pixels, 0 for ignored ones
    corner_index: Tensor  # (4·H·B·W,) long: flat index into (B,K,h,w) of each pixel's own class at
    # its 4 bilinear corners
    corner_weight: Tensor  # (4·H·B·W,): the corners' bilinear weights times the pixel's validity
    own_unit: Tensor  # (B,K,h,w): gradient of Σ_valid p up[b,t_p,p] (per image b) w.r.t. the logits
    present: Tensor  # (B,K): 1 for the classes with valid pixels in the image (the dice's masks), else 0
    selected: Tensor | None  # (B,S) long: per image, the classes whose sigmoid sums are computed
    # (the present ones, padded with K); None: all K classes


def _label_bands(labels: PixelLabels, plan: BilinearPlan, shape: torch.Size) -> _LabelBands:
    """:class:`_LabelBands` of ``labels`` for logits of ``shape`` (B,K,h,w)."""
    _, classes, h, w = shape
    pixels_per_row = labels.index[0].numel()
    sizes = [(stop - start) * pixels_per_row for start, stop, _, _ in plan.bands]
    base = labels.slot * (h * w)  # (H,B,W)
    row_offset = (plan.row_index * w)[:, :, None, None]  # (2,H,1,1)
    col_offset = plan.col_index[:, None, None, :]  # (2,1,1,W)
    corner_index = (base + row_offset[:, None] + col_offset[None]).flatten()  # (2,2,H,B,W)
    corner_weight = plan.row_weight[:, None, :, None, None] * plan.col_weight[None, :, None, None, :]
    corner_weight = (corner_weight * labels.weight).flatten()
    own_unit = labels.weight.new_zeros(shape.numel()).index_add_(0, corner_index, corner_weight).view(shape)
    present = labels.class_count > 0
    selected = None
    if labels.index.device.type == "cpu":  # reading the class counts costs no device wait on CPU
        width = max(int(present.sum(1).max()), 1)
        if width < classes:
            order = torch.argsort((~present).to(torch.uint8), dim=1, stable=True)[:, :width]  # present classes first
            slot = torch.arange(width, device=present.device)
            selected = torch.where(slot < present.sum(1, keepdim=True), order, classes)
    return _LabelBands(
        labels.index.view(-1, 1).split(sizes),
        labels.weight.view(-1, 1).split(sizes),
        corner_index,
        corner_weight,
        own_unit,
        present.to(labels.weight.dtype),
        selected,
    )


class _UpsampledSums(torch.autograd.Function):
    """logits (B,K,h,w) -> with up = bilinear(logits) at the plan's label size and t the labels:

    * ce_sum (B,) = Σ_valid p [logsumexp_k up[b,:,p] - up[b,t_p,p]];
    * with ``with_sigmoid``: prob_sum (B,K) = Σ_p mask[b,p] · sigmoid(up[b,k,p]) (all pixels
      when the mask is None) for the classes k present in image b, 0 for the others (the dice
      only reads present (image, class) masks), and label_prob_sum (B,K) = Σ_valid p with t_p = k
      sigmoid(up[b,k,p]); empty tensors otherwise.

    The gradients of every output w.r.t. the logits are accumulated in the forward as (B,K,h,w)
    tensors; the backward only scales them by the incoming gradients. The own-class logit is
    linear in the logits, so its sum and gradient come from ``bands.own_unit`` at low resolution.
    On CPU the sigmoid work covers only each image's present classes (``bands.selected``).
    """

    @staticmethod
    def forward(ctx, logits, plan, labels, bands, sigmoid_mask, with_sigmoid, shift_free):
        batch, classes, h, w = logits.shape
        big_w = plan.out_size[1]
        need_grad = ctx.needs_input_grad[0]
        selected = bands.selected if with_sigmoid else None
        sig_classes = selected.shape[1] if selected is not None else classes  # S: sigmoid channels per pixel
        low = logits.detach().permute(2, 0, 3, 1).contiguous()  # (h,B,w,K)
        # The streams: the logits of all K classes (for the CE, then its gradient) and, with the
        # sigmoid sums, the logits of the S classes they cover (then the sigmoid gradient). The
        # classes are picked at low resolution, so the sigmoid stream is upsampled on its own.
        lows = [low]  # the sources of the streams with their own upsampling
        if selected is not None:  # per image, the selected classes (padding reads class K-1, dropped below)
            index = selected.clamp_max(classes - 1).view(1, batch, 1, sig_classes).expand(h, -1, w, -1)
            lows.append(torch.gather(low, 3, index))
        channels = [classes, sig_classes][: 2 if with_sigmoid else 1]
        lse = logits.new_empty(labels.index.shape)  # per-pixel log-sum-exp (H,B,W)
        own = logits.new_empty(labels.index.shape) if with_sigmoid else None  # per-pixel own-class logit
        lse_bands = lse.view(-1).split([len(i) for i in bands.index])
        own_bands = own.view(-1, 1).split([len(i) for i in bands.index]) if with_sigmoid else None
        max_rows = max(stop - start for start, stop, _, _ in plan.bands)
        ones_k = logits.new_ones(classes)
        ones_rows = logits.new_ones(1, max_rows)
        values = [logits.new_empty(max_rows, batch * big_w * c) for c in channels]
        prob_acc = logits.new_zeros(1, batch * big_w * sig_classes) if with_sigmoid else None
        # A sliding window over the input rows the bands read: each is upsampled along the
        # columns once, and its column-resolution gradient goes through the transposed column
        # upsampling once, when no later band reads it. The buffers hold a few rows more than a
        # band reads, so the window is moved to their front only every few rows.
        capacity = max(hi - lo for _, _, lo, hi in plan.bands) + _WINDOW_SLACK
        columns = [logits.new_empty(capacity, batch * big_w * x.shape[-1]) for x in lows]
        grad_columns = [logits.new_empty(capacity, batch * big_w * c) for c in channels] if need_grad else []
        grads = [logits.new_zeros(h, batch, w, c) for c in channels] if need_grad else []
        first = end = base = 0  # input rows [first, end) are held at positions [base, base + end - first)

        def retire(rows: int) -> None:
            """The window's first ``rows`` rows are complete: through the transposed column upsampling."""
            for stream, c in enumerate(channels):
                g = grad_columns[stream][base : base + rows].view(rows * batch, 1, big_w, c).permute(0, 3, 1, 2)
                out = grads[stream][first : first + rows].view(rows * batch, 1, w, c).permute(0, 3, 1, 2)
                torch.ops.aten.upsample_bilinear2d_backward.grad_input(
                    g, [1, big_w], [rows * batch, c, 1, w], plan.align_corners, None, None, grad_input=out
                )

        for band, ((start, stop, lo, hi), (band_rows, band_rows_t)) in enumerate(zip(plan.bands, plan.band_rows)):
            rows = stop - start
            if need_grad and min(lo, end) > first:
                retire(min(lo, end) - first)
            if lo >= end:  # nothing kept (rows that no band reads are skipped: their gradient stays 0)
                first = end = lo
                base = 0
            else:
                base += lo - first
                first = lo
            if hi > end:
                if base + hi - first > capacity:  # move the kept rows to the front (clone: the ranges may overlap)
                    kept = end - first
                    for buffer in columns + grad_columns:
                        buffer[:kept] = buffer[base : base + kept].clone()
                    base = 0
                a, b = base + end - first, base + hi - first  # upsample the columns of the new input rows
                for source, buffer, c in zip(lows, columns, channels):
                    x = source[end:hi].view((b - a) * batch, 1, w, c).permute(0, 3, 1, 2)
                    out = buffer[a:b].view((b - a) * batch, 1, big_w, c).permute(0, 3, 1, 2)
                    torch.ops.aten.upsample_bilinear2d.out(x, [1, big_w], plan.align_corners, None, None, out=out)
                for buffer in grad_columns:
                    buffer[a:b].zero_()
                end = hi
            for buffer, value in zip(columns, values):  # the band's rows
                torch.mm(band_rows, buffer[base : base + hi - lo], out=value[:rows])
            up = values[0][:rows]
            pixels = up.view(-1, classes)  # (rows·B·W, K)
            if with_sigmoid:
                sig = values[1][:rows]
                if selected is None:
                    torch.sigmoid(up, out=sig)
                else:
                    sig.sigmoid_()
                torch.gather(pixels, 1, bands.index[band], out=own_bands[band])
            if not shift_free:
                peak = pixels.amax(1, keepdim=True)
                pixels.sub_(peak)
            up.exp_()  # without the shift |up| <= 60: exp(up) neither overflows nor underflows in fp32
            total = torch.mv(pixels, ones_k)
            torch.log(total, out=lse_bands[band])
            if not shift_free:
                lse_bands[band].add_(peak[:, 0])
            if with_sigmoid:
                if sigmoid_mask is not None:
                    sig.view(-1, sig_classes).mul_(sigmoid_mask[start:stop].view(-1, 1))
                prob_acc.addmm_(ones_rows[:, :rows], sig)
                if need_grad:  # d sigmoid = s(1-s); masked pixels stay 0
                    sig.addcmul_(sig, sig, value=-1.0)
            if need_grad:  # d logsumexp = weight · softmax (the own-class part is bands.own_unit)
                pixels.mul_(bands.weight[band] / total[:, None])
                # The band's gradients back through its rows, into the window's column-resolution rows.
                for buffer, value in zip(grad_columns, values):
                    buffer[base : base + hi - lo].addmm_(band_rows_t, value[:rows])
        if need_grad and end > first:
            retire(end - first)

        ce_sum = (lse * labels.weight).sum((0, 2)) - (bands.own_unit * logits.detach()).sum((1, 2, 3))
        unit_ce = unit_prob = unit_label = None
        if need_grad:
            unit_ce = grads[0].permute(1, 3, 0, 2).contiguous().sub_(bands.own_unit)
        if not with_sigmoid:
            ctx.save_for_backward(unit_ce, None, None)
            empty = logits.new_zeros(0)
            return ce_sum, empty, empty
        prob_sum = prob_acc.view(batch, big_w, sig_classes).sum(1)
        if selected is not None:  # back to all K classes; padding goes to a dropped class K
            prob_sum = logits.new_zeros(batch, classes + 1).scatter_(1, selected, prob_sum)[:, :classes]
            if need_grad:
                unit_prob = logits.new_zeros(h, batch, w, classes + 1)
                unit_prob.scatter_(3, selected.view(1, batch, 1, -1).expand(h, -1, w, -1), grads[1])
                unit_prob = unit_prob[..., :classes]
        elif need_grad:
            unit_prob = grads[1]
        prob_sum = prob_sum * bands.present
        if need_grad:
            unit_prob = unit_prob.permute(1, 3, 0, 2).mul(bands.present[:, :, None, None]).contiguous()
        own_prob = torch.sigmoid(own)  # (H,B,W)
        valid_own_prob = own_prob * labels.weight
        label_prob_sum = logits.new_zeros(batch * classes)
        label_prob_sum.index_add_(0, labels.slot.flatten(), valid_own_prob.flatten())
        if need_grad:  # d label_prob_sum: the own class's sigmoid slope, scattered to its 4 corners
            slope = (valid_own_prob * (1.0 - own_prob)).view(1, -1)  # the same for the 4 corners
            corner_values = (bands.corner_weight.view(4, -1) * slope).flatten()
            unit_label = logits.new_zeros(logits.numel()).index_add_(0, bands.corner_index, corner_values)
            unit_label = unit_label.view_as(logits)
        ctx.save_for_backward(unit_ce, unit_prob, unit_label)
        return ce_sum, prob_sum, label_prob_sum.view(batch, classes)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ce_sum, grad_prob_sum, grad_label_prob_sum):
        unit_ce, unit_prob, unit_label = ctx.saved_tensors
        grad = unit_ce * grad_ce_sum[:, None, None, None]
        if unit_prob is not None:
            grad.addcmul_(unit_prob, grad_prob_sum[:, :, None, None])
            grad.addcmul_(unit_label, grad_label_prob_sum[:, :, None, None])
        return grad, None, None, None, None, None, None


class Scored(NamedTuple):
    """One logits tensor for :func:`upsampled_stats`."""

    logits: Tensor  # (B,K,h,w)
    with_prob_sum: bool = False  # also the sigmoid sums of the dice
    logit_bound: float | None = None  # a known bound on |logits| (SSA's τ-scaled cosines: τ)


class UpsampledStats(NamedTuple):
    """Statistics of logits upsampled to the label size (see :func:`upsampled_stats`)."""

    ce_sum: Tensor  # (B,) Σ over valid pixels of the cross-entropy of the upsampled logits
    prob_sum: Tensor  # (B,K) Σ over pixels of sigmoid(upsampled logits), for the classes present in
    # the image (0 for the others), or empty
    label_prob_sum: Tensor  # (B,K) Σ over the valid pixels labelled k of sigmoid(upsampled logit k), or empty
    class_count: Tensor  # (B,K) valid pixels per class
    num_pixels: int  # B·H·W, ignored pixels included


def check_target(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Reject labels that are not integer, or outside [0, K) other than ``ignore_index``.

    The dtype check is free. The range check reads the labels once: on CPU it runs eagerly and
    raises a ValueError naming the offending value (the CPU is synchronous, so this costs one
    pass over B·H·W integers and no wait). On an accelerator an eager check would stall the
    host every step, so it is an asynchronous device assertion instead (reported by the next
    synchronising call, as a device-side assert with the same message).
    """
    _check_integer(target)
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
    scored: Sequence[Scored], labels: PixelLabels, align_corners: bool = False, mask_ignore: bool = False
) -> list[UpsampledStats]:
    """Statistics of ``bilinear(logits (B,K,h,w), label size)`` for CE and dice, for each of
    ``scored`` (same shape, dtype and device; they share the labels and the interpolation plan).

    Equal (up to float summation order) to computing them on ``F.interpolate(logits, ...)`` with
    autograd, without building the upsampled logits. ``mask_ignore`` leaves ignored pixels out of
    the sigmoid sums. Bounds on |logits| of at most 60 let exp() skip the max shift; on CPU, where
    reading a value costs no device wait, the bound of logits without one is measured.
    """
    first = scored[0].logits
    for item in scored:
        if item.logits.shape != first.shape or item.logits.dtype != first.dtype or item.logits.device != first.device:
            raise ValueError(
                f"upsampled_stats scores logits of one shape, dtype and device; got {tuple(first.shape)} "
                f"{first.dtype} {first.device} and {tuple(item.logits.shape)} {item.logits.dtype} {item.logits.device}"
            )
    batch, classes = first.shape[:2]
    if labels.class_count.shape != (batch, classes):
        raise ValueError(
            f"labels were built for {tuple(labels.class_count.shape)} (B, K), logits are {tuple(first.shape)}"
        )
    plan = plan_for(first, (labels.index.shape[0], labels.index.shape[2]), align_corners)
    labels = labels._replace(weight=labels.weight.to(first.dtype), class_count=labels.class_count.to(first.dtype))
    mask = labels.weight if mask_ignore else None
    bands = _label_bands(labels, plan, first.shape)
    stats = []
    for item in scored:
        bound = item.logit_bound
        if bound is None and first.device.type == "cpu":
            bound = float(item.logits.detach().abs().amax()) if item.logits.numel() else 0.0
        shift_free = bound is not None and abs(bound) <= _SHIFT_FREE_BOUND
        with torch.autocast(first.device.type, enabled=False):  # the logits' precision, not autocast's
            ce_sum, prob_sum, label_prob_sum = _UpsampledSums.apply(
                item.logits, plan, labels, bands, mask, item.with_prob_sum, shift_free
            )
        stats.append(UpsampledStats(ce_sum, prob_sum, label_prob_sum, labels.class_count, labels.num_pixels))
    return stats


def reduce_cross_entropy(stats: UpsampledStats, all_pixels: bool) -> Tensor:
    """Mean CE from :class:`UpsampledStats`: over all B*H*W pixels (mmseg 0.30, ``all_pixels``) or
    over the valid ones, 0 (not NaN) when there are none (docs/algorithm.md Q6 fix)."""
    total = stats.ce_sum.sum()
    if all_pixels:
        return total / stats.num_pixels
    return total / stats.class_count.sum().clamp_min(1)
