"""A deliberately plain reference of the CAC classifier's training step (docs/algorithm.md §18).

A test oracle written straight from docs/algorithm.md §18, not from ``ssaseg.classifiers``: it
reads the parameters of a ``CACClassifier`` by name and recomputes everything with explicit
loops over images and classes, in the inputs' dtype (use float64 for tight comparisons). It
follows the reference code's own formulation: the per-class masked loop for the oracle centres,
``F.normalize`` (clamp) in the oracle, the per-class loop of the distillation loss, and
``F.cross_entropy`` on explicitly upsampled logits. Nothing here should be imported by the package.

Name map (ssaseg name = reference name): ``conv_seg`` = ``conv_seg`` (S, b), ``semantic_proj``
= ``proj`` (φ), ``teacher_semantic_proj`` = ``apd_proj`` (φ̂).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = 255
TAU = 15.0
EPS = 1e-12


def mlp(seq: nn.Module, x: Tensor) -> Tensor:
    """φ(x) = Linear(2C -> C/2, no bias) -> ReLU -> Linear(C/2 -> C, bias), from the weights."""
    first, last = seq[0], seq[2]
    assert first.bias is None, "the first layer of the prototype MLP has no bias"
    return torch.relu(x @ first.weight.T) @ last.weight.T + last.bias


def legacy_nearest(target: Tensor, size: tuple[int, int]) -> Tensor:
    """y_h: label (B,H,W) -> (B,h,w), PyTorch's legacy ``nearest`` (docs/algorithm.md §18)."""
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


def student_logits(clf: nn.Module, feat: Tensor, coarse: Tensor) -> Tensor:
    """O (B,K,h,w) from F (B,C,h,w) and M (B,K,h,w), one image and one class at a time (§2)."""
    batch, channels, h, w = feat.shape
    num_classes = coarse.shape[1]
    weight = clf.conv_seg.weight.reshape(num_classes, channels)  # S
    out = []
    for b in range(batch):
        x = feat[b].reshape(channels, h * w)  # (C,N)
        q = torch.softmax(coarse[b].reshape(num_classes, h * w), dim=0)  # softmax over classes
        centers = []
        for k in range(num_classes):
            centers.append((q[k][None, :] * x).sum(1) / (q[k].sum() + EPS))
        centers = torch.stack(centers)  # (K,C)
        z = mlp(clf.semantic_proj, torch.cat([centers, weight], dim=1))
        z_unit = z / (z.norm(dim=1, keepdim=True) + EPS)
        x_unit = x / (x.norm(dim=0, keepdim=True) + EPS)
        out.append((TAU * z_unit @ x_unit).reshape(num_classes, h, w))
    return torch.stack(out)


def oracle_logits(clf: nn.Module, feat: Tensor, small: Tensor) -> Tensor:
    """Ô (B,K,h,w): the reference's loop over the classes present in the batch (§3.1)."""
    batch, channels, h, w = feat.shape
    weight = clf.conv_seg.weight.reshape(-1, channels)
    num_classes = weight.shape[0]
    present = {int(v) for v in small.unique().tolist()} - {IGNORE}
    rows = []
    for k in range(num_classes):
        if k in present:
            mask = (small == k).to(feat.dtype)[:, None]  # (B,1,h,w)
            rows.append((feat * mask).sum((0, 2, 3)) / (mask.sum() + EPS))
        else:
            rows.append(weight[k].detach())
    centers = torch.stack(rows)
    z = mlp(clf.teacher_semantic_proj, torch.cat([centers, weight], dim=1))
    conv = F.normalize(z, p=2, dim=1)[:, :, None, None]
    return TAU * F.conv2d(F.normalize(feat, p=2, dim=1), conv)


def distillation(student: Tensor, teacher: Tensor, small: Tensor) -> Tensor:
    """CAC's ``get_distill_loss`` (§3.4): entropy-weighted soft-target CE, one term per class."""
    num_classes = student.shape[1]
    p = torch.softmax(teacher, dim=1)
    t = torch.where(small == IGNORE, 0, small)
    onehot = F.one_hot(t, num_classes).permute(0, 3, 1, 2).to(student.dtype)
    q = 0.5 * p + 0.5 * onehot
    loss = -(q * torch.log_softmax(student, dim=1)).sum(1)
    entropy = -(p * torch.log(p + EPS)).sum(1) * (small != IGNORE)
    present = sorted({int(v) for v in small.unique().tolist()} - {IGNORE})
    if not present:
        return student.new_zeros(())
    terms = []
    for c in present:
        mask = (small == c).to(student.dtype)
        terms.append((loss * entropy * mask).sum() / ((entropy * mask).sum() + EPS))
    return sum(terms) / (len(present) + EPS)


def mean_valid_ce(logits: Tensor, target: Tensor) -> Tensor:
    """PyTorch mean CE over valid pixels; 0 when there is none (fix of the reference's NaN)."""
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=IGNORE)


def reference_forward(clf: nn.Module, feat: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Training step of a dropout-free CACClassifier: ``(O, {ce, ce_coarse, ce_teacher, kd_response})``."""
    size = target.shape[-2:]
    coarse = F.conv2d(feat, clf.conv_seg.weight, clf.conv_seg.bias)
    logits = student_logits(clf, feat, coarse)
    small = legacy_nearest(target, feat.shape[-2:])
    teacher = oracle_logits(clf, feat, small)
    up_main = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    ce_main = F.cross_entropy(up_main, target, ignore_index=IGNORE, reduction="sum") / target.numel()
    up = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=True)  # noqa: E731
    losses = {
        "ce": ce_main,
        "ce_coarse": mean_valid_ce(up(coarse), target),
        "ce_teacher": mean_valid_ce(up(teacher), target),
        "kd_response": distillation(logits, teacher.detach(), small),
    }
    return logits, losses


def reference_eval_forward(clf: nn.Module, feat: Tensor) -> Tensor:
    """Inference logits O of a CACClassifier (§2)."""
    coarse = F.conv2d(feat, clf.conv_seg.weight, clf.conv_seg.bias)
    return student_logits(clf, feat, coarse)
