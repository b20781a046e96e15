"""SSA-Seg's distillation and dice losses, vectorised (docs/algorithm.md §6.4-6.7).

All functions expect fp32 (or fp64) inputs; the classifier disables autocast around them
(docs/algorithm.md Q5: eps = 1e-12 underflows and per-class pixel counts overflow in fp16).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .losses import UpsampledStats


def per_class_sums(values: Tensor, labels: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Sum ``values`` over the pixels of each class.

    Args:
        values: (V, B, *spatial) — V quantities summed at once.
        labels: (B, *spatial) long; ``ignore_index`` pixels are left out.
    Returns:
        (V, K) per-class sums over the whole batch.
    """
    index = torch.where(labels == ignore_index, num_classes, labels).flatten()
    flat = values.flatten(1)
    out = flat.new_zeros(flat.shape[0], num_classes + 1)
    out.scatter_add_(1, index.expand(flat.shape[0], -1), flat)
    return out[:, :num_classes]


def response_distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    boundary: Tensor | None,
    smoothness: float = 0.5,
    ignore_index: int = 255,
    eps: float = 1e-12,
) -> Tensor:
    """Boundary-aware, entropy-weighted, class-balanced soft-target CE (docs/algorithm.md §6.4; ``KLLoss``).

    Args:
        student_logits: O (B, K, h, w).
        teacher_logits: Ô (B, K, h, w), already detached by the caller.
        labels: (B, h, w) long at feature resolution.
        boundary: (B, h, w) bool boundary band of ``labels``, or None for one entropy-weighted
            group per class without the ½ (CAC's distillation, docs/algorithm.md §18).
    Returns:
        Scalar: mean over the classes present in ``labels`` of
        ½ (edge-normalised + interior-normalised) loss; 0 when no class is present.
    """
    num_classes = student_logits.shape[1]
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)
    log_student = F.log_softmax(student_logits, dim=1)
    teacher_prob = F.softmax(teacher_logits, dim=1)
    # q = s·p + (1-s)·onehot(t): split the soft-target CE into its two parts (no one-hot tensor).
    soft_part = -(teacher_prob * log_student).sum(1)
    hard_part = -log_student.gather(1, target[:, None])[:, 0]
    loss = smoothness * soft_part + (1.0 - smoothness) * hard_part
    entropy = -(teacher_prob * torch.log(teacher_prob + eps)).sum(1) * valid
    if boundary is None:
        stacked = torch.stack([loss * entropy, entropy, valid.to(loss.dtype)])
        num, den, count = per_class_sums(stacked, labels, num_classes, ignore_index)
        present = (count > 0).to(loss.dtype)
        return (num / (den + eps) * present).sum() / (present.sum() + eps)
    edge = boundary.to(loss.dtype)
    weight_edge = entropy * edge
    weight_inner = entropy * (1.0 - edge)
    stacked = torch.stack([loss * weight_edge, weight_edge, loss * weight_inner, weight_inner, valid.to(loss.dtype)])
    num_edge, den_edge, num_inner, den_inner, count = per_class_sums(stacked, labels, num_classes, ignore_index)
    per_class = 0.5 * (num_edge / (den_edge + eps) + num_inner / (den_inner + eps))
    present = (count > 0).to(loss.dtype)
    return (per_class * present).sum() / (present.sum() + eps)


def _distributed_mean_count(count: Tensor) -> Tensor:
    """DETR-style normaliser: the mask count averaged over ranks (all-reduced), at least 1."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        count = count.clone()
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp_min(1.0)


def dice_loss(stats: UpsampledStats) -> Tensor:
    """Sigmoid dice over the (image, class) masks present in the labels (docs/algorithm.md §6.5).

    Args:
        stats: :func:`~ssaseg.classifiers.losses.upsampled_stats` of the logits at label
            resolution, with ``prob_sum`` (ignored pixels counted as negatives, faithful, or left
            out with ``mask_ignore``, docs/algorithm.md Q9).
    Returns:
        Scalar: Σ_(b,k present) [1 - (2 Σ s·t + 1) / (Σ s + Σ t + 1)] / max(1, #masks).
    """
    # Σ s·t is the sigmoid of each valid pixel's own class, summed per (image, class).
    count = stats.class_count
    present = (count > 0).to(count.dtype)
    dice = 1.0 - (2.0 * stats.label_prob_sum + 1.0) / (stats.prob_sum + count + 1.0)
    return (dice * present).sum() / _distributed_mean_count(present.sum())


def semantic_distillation(student: Tensor, teacher: Tensor, tau: float = 15.0, eps: float = 1e-12) -> Tensor:
    """Relation distillation of semantic prototypes (docs/algorithm.md §6.6; ``disLoss`` before its x10).

    Args:
        student: S_p (B, K, C).
        teacher: Ŝ_p (K, C) or (B, K, C), already detached by the caller.
    Returns:
        Scalar: Σ relu((R - R̂) off the diagonal) / (B·K), where R = softmax(τ ū sg(ū)ᵀ) and
        R̂ = softmax(τ û ûᵀ) row-wise.
    """
    batch, num_classes = student.shape[:2]
    unit = student / (torch.linalg.vector_norm(student, dim=-1, keepdim=True) + eps)
    unit_teacher = teacher / (torch.linalg.vector_norm(teacher, dim=-1, keepdim=True) + eps)
    relation = F.softmax(tau * unit @ unit.detach().transpose(-1, -2), dim=-1)
    relation_teacher = F.softmax(tau * unit_teacher @ unit_teacher.transpose(-1, -2), dim=-1)
    off_diagonal = 1.0 - torch.eye(num_classes, device=student.device, dtype=student.dtype)
    return F.relu((relation - relation_teacher) * off_diagonal).sum() / (batch * num_classes)


def spatial_distillation(student: Tensor, teacher: Tensor) -> Tensor:
    """Channel-softmax CE between spatial prototypes (docs/algorithm.md §6.7; ``pos_disLoss`` before its x0.4).

    Args:
        student: P_p (B, K, C). teacher: P̂_p (B, K, C), already detached by the caller.
    Returns:
        Scalar mean over (B, K) of -Σ_c softmax(P̂_p) log_softmax(P_p).
    """
    batch, num_classes = student.shape[:2]
    return -(F.softmax(teacher, dim=-1) * F.log_softmax(student, dim=-1)).sum() / (batch * num_classes)
