"""The CAC classifier: context-aware class prototypes (Tian et al., "Learning Context-aware
Classifier for Semantic Segmentation", AAAI 2023), the adaptive classifier SSA-Seg extends.

CAC is SSA's semantic branch on its own: per-image soft class centres from the coarse mask, an
MLP that mixes each centre with the fixed 1x1 prototype, a cosine classifier, and a ground-truth
oracle that distils into it. It has no spatial branch, no centre projection, no boundary split,
no dice and no prototype distillation (docs/algorithm.md §18). Every piece of maths is SSA's building block.

Shapes: B images, C channels, K classes, feature map h x w (N = h·w), labels H x W.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from .linear import cls_seg
from .losses import (
    PixelLabels,
    Scored,
    UpsampledStats,
    check_target,
    pixel_labels,
    reduce_cross_entropy,
    upsampled_stats,
)
from .ssa import (
    _full_precision,
    call_in_full_precision,
    class_onehot,
    cosine_logits,
    pixel_norms,
    legacy_nearest_downsample,
    pooled_class_centers,
    prototype_mlp,
    soft_class_centers,
)
from .ssa_losses import response_distillation

#: Weights of the loss terms (docs/algorithm.md §18: all 1).
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {"ce": 1.0, "ce_coarse": 1.0, "ce_teacher": 1.0, "kd_response": 1.0}


class CACClassifier(nn.Module):
    """Context-aware pixel classifier (CAC).

    Args:
        in_channels: C, channels of the decoder feature map F (even).
        num_classes: K.
        dropout: Dropout2d before the coarse 1x1 classifier (0 disables it; OCRNet's head has none).
        ignore_index: label value that carries no loss.
        tau: scale of the cosine classifier (15).
        eps: added to norms and denominators (1e-12).
        smoothness: teacher share of the distillation soft target (0.5).
        loss_weights: overrides of :data:`DEFAULT_LOSS_WEIGHTS`.
        main_ce_all_pixels: normalise the main CE by all pixels, as mmseg (faithful); False
            averages over valid pixels like the other two CEs.
        main_align_corners: ``align_corners`` of the upsampling before the main CE (False: the
            mmseg head resize, docs/algorithm.md C7).
        loss_align_corners: ``align_corners`` of the upsampling before the coarse and oracle CEs
            (True in the reference).

    Eval: ``forward(feat (B,C,h,w)) -> logits (B,K,h,w)``, τ-scaled cosines in [-τ, τ].
    Train: ``forward(feat, target (B,H,W) long) -> (logits, losses)`` with the weighted terms
    ``ce, ce_coarse, ce_teacher, kd_response``. The maths runs in fp32 under autocast.
    ``deploy()`` drops the train-only oracle MLP: -(1.5C² + C) parameters. Parameters over the
    linear classifier: 3C² + 2C in training, 1.5C² + C after ``deploy()``, independent of K.

    Module names map the official checkpoints: ``conv_seg`` = ``conv_seg``, ``semantic_proj`` =
    ``proj``, ``teacher_semantic_proj`` = ``apd_proj``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.1,
        ignore_index: int = 255,
        tau: float = 15.0,
        eps: float = 1e-12,
        smoothness: float = 0.5,
        loss_weights: dict[str, float] | None = None,
        main_ce_all_pixels: bool = True,
        main_align_corners: bool = False,
        loss_align_corners: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % 2:
            raise ValueError(f"CACClassifier needs an even in_channels (the MLPs halve it), got {in_channels}")
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; expected keys {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.tau = tau
        self.eps = eps
        self.smoothness = smoothness
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.main_ce_all_pixels = main_ce_all_pixels
        self.main_align_corners = main_align_corners
        self.loss_align_corners = loss_align_corners

        # Fixed prototypes S = conv_seg.weight (mmseg's head init).
        self.dropout, self.conv_seg = cls_seg(in_channels, num_classes, dropout)
        # The MLPs keep PyTorch's default init, as the reference.
        self.semantic_proj = prototype_mlp(in_channels)
        self.teacher_semantic_proj = prototype_mlp(in_channels)
        self.has_teacher = True

    def student(self, feat: Tensor, coarse: Tensor, norms: Tensor | None = None) -> Tensor:
        """Context-aware logits (docs/algorithm.md §18). feat: F (B,C,h,w); coarse: M (B,K,h,w) -> O (B,K,h,w).
        ``norms``: :func:`pixel_norms` of F, when already computed."""
        batch, _, h, w = feat.shape
        feat_flat = feat.flatten(2)
        norms = pixel_norms(feat_flat, self.eps) if norms is None else norms
        centers = soft_class_centers(feat_flat, coarse.flatten(2), self.eps)
        prototypes = self.conv_seg.weight.flatten(1).expand(batch, -1, -1)
        proto = self.semantic_proj(torch.cat([centers, prototypes], dim=-1))
        return cosine_logits(feat_flat, proto, self.tau, self.eps, norms).unflatten(-1, (h, w))

    def teacher(self, feat: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        """Oracle logits from ground-truth class centres pooled over the batch (docs/algorithm.md §18).

        feat: F (B,C,h,w); labels: (B,h,w) long at feature resolution -> Ô (B,K,h,w). ``norms``:
        :func:`pixel_norms` of F, when already computed.
        """
        if not self.has_teacher:
            raise RuntimeError("the oracle was removed by deploy(); training needs a model that was not deployed")
        _, _, h, w = feat.shape
        feat_flat = feat.flatten(2)
        onehot = class_onehot(labels, self.num_classes, self.ignore_index, feat.dtype)
        prototypes = self.conv_seg.weight.flatten(1)
        centers = pooled_class_centers(feat_flat, onehot, prototypes.detach(), self.eps)
        proto = self.teacher_semantic_proj(torch.cat([centers, prototypes], dim=-1))
        norms = pixel_norms(feat_flat, self.eps) if norms is None else norms
        return cosine_logits(feat_flat, proto, self.tau, self.eps, norms).unflatten(-1, (h, w))

    def forward(self, feat: Tensor, target: Tensor | None = None):
        if self.conv_seg.weight.dtype in (torch.float16, torch.bfloat16):
            return call_in_full_precision(self, feat, target)
        if self.training and target is not None and target.dim() == 3:
            check_target(target, self.num_classes, self.ignore_index)
        # CAC maths in full precision even under autocast (docs/algorithm.md C11).
        guard = torch.autocast(feat.device.type, enabled=False) if torch.is_autocast_enabled(feat.device.type) else nullcontext()
        with guard:
            feat = _full_precision(feat)
            coarse = self.conv_seg(self.dropout(feat))
            norms = pixel_norms(feat.flatten(2), self.eps)
            logits = self.student(feat, coarse, norms)
            if not self.training:
                return logits
            if target is None:
                raise ValueError("CACClassifier in train mode needs target (B, H, W); call .eval() for inference")
            if target.dim() != 3:
                raise ValueError(f"target must be (B, H, W) long, got shape {tuple(target.shape)}")
            losses = self._losses(feat, coarse, logits, target.long(), norms)
        return logits, losses

    def _losses(self, feat: Tensor, coarse: Tensor, logits: Tensor, target: Tensor, norms: Tensor) -> dict[str, Tensor]:
        """The four weighted loss terms of docs/algorithm.md §18"""
        small = legacy_nearest_downsample(target, feat.shape[-2:])
        teacher_logits = self.teacher(feat, small, norms)

        labels = pixel_labels(target, self.num_classes, self.ignore_index, feat.dtype)
        # Student and oracle logits are τ-scaled cosines (|logits| <= |τ|); the coarse ones are not.
        student, teacher, coarse_stats = self._upsampled_stats(logits, teacher_logits, coarse, labels)
        raw = {
            "ce": reduce_cross_entropy(student, all_pixels=self.main_ce_all_pixels),
            "ce_coarse": reduce_cross_entropy(coarse_stats, all_pixels=False),
            "ce_teacher": reduce_cross_entropy(teacher, all_pixels=False),
            "kd_response": response_distillation(
                logits, teacher_logits.detach(), small, None, self.smoothness, self.ignore_index, self.eps
            ),
        }
        return {name: self.loss_weights[name] * value for name, value in raw.items()}

    def _upsampled_stats(
        self, logits: Tensor, teacher_logits: Tensor, coarse: Tensor, labels: PixelLabels
    ) -> list[UpsampledStats]:
        """CE statistics of the student, oracle and coarse logits: one interpolation plan and one set
        of label tables serve all three when the student's loss interpolates like the others."""
        student, teacher = Scored(logits, logit_bound=self.tau), Scored(teacher_logits, logit_bound=self.tau)
        if self.main_align_corners == self.loss_align_corners:
            return upsampled_stats([student, teacher, Scored(coarse)], labels, self.loss_align_corners)
        (main,) = upsampled_stats([student], labels, self.main_align_corners)
        return [main, *upsampled_stats([teacher, Scored(coarse)], labels, self.loss_align_corners)]

    def deploy(self) -> "CACClassifier":
        """Drop the train-only oracle MLP: -(1.5C² + C) parameters. Inference is unchanged."""
        if hasattr(self, "teacher_semantic_proj"):
            del self.teacher_semantic_proj
        self.has_teacher = False
        return self

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, tau={self.tau}, teacher={self.has_teacher}"
