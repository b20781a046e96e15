"""The SSA classifier: semantic and spatial prototype adaptation with online multi-domain
distillation (SSA-Seg, NeurIPS 2024). docs/algorithm.md §2-§6; official parameter names in
:data:`ssaseg.checkpoints.SSA_PARAMETER_NAMES`.

Shapes: B images, C channels, K classes, feature map h x w (N = h·w), labels H x W.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boundary import boundary_mask
from .linear import cls_seg
from .losses import Scored, check_target, pixel_labels, reduce_cross_entropy, upsampled_stats
from .ssa_losses import dice_loss, response_distillation, semantic_distillation, spatial_distillation

#: Weights of the loss terms (docs/algorithm.md §5 step 13, §6.6, §6.7).
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "ce": 1.0,
    "ce_coarse": 1.0,
    "ce_teacher": 1.0,
    "kd_response": 1.0,
    "dice": 1.0,
    "dice_teacher": 1.0,
    "kd_semantic": 10.0,
    "kd_spatial": 0.4,
}
_TEACHER_MODULES = ("teacher_semantic_proj", "teacher_spatial_proj", "teacher_center_proj")


class PixelEmbedding(NamedTuple):
    """The pixel tensors both the student and the teacher read, computed once per forward."""

    position: Tensor  # P_f (B,C,N): the depthwise-conv position encoding of F
    pixels: Tensor  # X = F + P_f (B,C,N): what the cosine classifier scores
    norms: Tensor  # ‖X‖ + ε (B,1,N)


def prototype_mlp(channels: int) -> nn.Sequential:
    """φ: Linear(2C -> C/2, no bias) -> ReLU -> Linear(C/2 -> C)."""
    return nn.Sequential(
        nn.Linear(2 * channels, channels // 2, bias=False), nn.ReLU(inplace=True), nn.Linear(channels // 2, channels)
    )


def l2_norm(x: Tensor, dim: int) -> Tensor:
    """‖x‖₂ along ``dim`` (kept). ``pow-sum-sqrt`` is ~10x faster than ``linalg.vector_norm`` over a
    strided channel axis on CPU; the clamp keeps the gradient of an all-zero vector at 0 (as
    ``vector_norm`` defines it) instead of NaN, and is far below the ε added to every norm."""
    return x.pow(2).sum(dim, keepdim=True).clamp_min(1e-30).sqrt()


def pixel_norms(pixels: Tensor, eps: float) -> Tensor:
    """‖X‖ + ε of pixels X (B,C,N) over the channels -> (B,1,N): the student and the teacher
    score the same pixels, so they share it."""
    return l2_norm(pixels, dim=1) + eps


def cosine_logits(pixels: Tensor, centers: Tensor, tau: float, eps: float, norms: Tensor) -> Tensor:
    """τ·cos: pixels X (B,C,N) with ``norms`` = :func:`pixel_norms` (B,1,N), centers Z (B,K,C)
    or (K,C) -> (B,K,N).

    Equal to τ · (Z/(‖Z‖+ε)) @ (X/(‖X‖+ε)), but the pixel norms divide the (B,K,N) product
    instead of the larger (B,C,N) input, and τ is folded into the (B,K,C) centers. |result| <= |τ|.
    """
    z = centers * (tau / (l2_norm(centers, dim=-1) + eps))
    return (z @ pixels) / norms


def _full_precision(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def call_in_full_precision(module: nn.Module, feat: Tensor, target: Tensor | None):
    """``module(feat, target)`` of a classifier cast to fp16/bf16 (``model.half()``): its maths run
    on fp32 copies of the parameters (docs/algorithm.md Q5: the ε's and the squared norms do not fit fp16);
    logits come back in the module's dtype, losses in fp32."""
    dtype = module.conv_seg.weight.dtype
    params = {name: p.float() for name, p in module.named_parameters()}
    out = torch.func.functional_call(module, params, (feat.float(), target))
    if module.training:
        return out[0].to(dtype), out[1]
    return out.to(dtype)


def legacy_nearest_downsample(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """PyTorch's legacy ``nearest`` (source index floor(dst·in/out)). (B,H,W) long -> (B,h,w) long."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def class_weighted_sums(pixels: Tensor, weights: Tensor) -> Tensor:
    """Σ_n weights[b,k,n] · pixels[b,:,n]: pixels (B,C,N), weights (B,K,N) -> (B,K,C).

    Computed as (pixels @ weightsᵀ)ᵀ, so the gradient w.r.t. the pixels comes out (B,C,N)
    contiguous (``weights @ pixelsᵀ`` gives it transposed, which costs a copy in the
    convolution backward it flows into and strided adds where gradients accumulate)."""
    return (pixels @ weights.transpose(1, 2)).transpose(1, 2)


def soft_class_centers(feat_flat: Tensor, coarse_flat: Tensor, eps: float) -> Tensor:
    """Per-image soft class centres (SEPA, docs/algorithm.md §3): softmax over classes of the coarse logits
    M (B,K,N), then the probability-weighted mean of the pixel features F (B,C,N) -> (B,K,C)."""
    class_prob = F.softmax(coarse_flat, dim=1)
    return class_weighted_sums(feat_flat, class_prob) / (class_prob.sum(-1, keepdim=True) + eps)


def class_onehot(labels: Tensor, num_classes: int, ignore_index: int, dtype: torch.dtype) -> Tensor:
    """One-hot of labels (B,h,w) -> (B,K,N); ignored pixels are all zero."""
    batch = labels.shape[0]
    index = torch.where(labels == ignore_index, num_classes, labels).flatten(1)  # (B,N), ignore -> K
    onehot = torch.zeros(batch, num_classes + 1, index.shape[1], dtype=dtype, device=labels.device)
    return onehot.scatter_(1, index[:, None], 1.0)[:, :num_classes]


def pooled_class_centers(feat_flat: Tensor, onehot: Tensor, fallback: Tensor, eps: float) -> Tensor:
    """Ground-truth class centres pooled over the whole per-device batch (docs/algorithm.md §4, Q11): the mean
    feature of each class present in ``onehot`` (B,K,N); absent classes take their row of
    ``fallback`` (K,C). F (B,C,N) -> (K,C)."""
    count = onehot.sum((0, 2))[:, None]
    feat_sums = class_weighted_sums(feat_flat, onehot).sum(0)
    return torch.where(count > 0, feat_sums / (count + eps), fallback)


class SSAClassifier(nn.Module):
    """Semantic and spatial adaptive pixel classifier.

    Args:
        in_channels: C, channels of the decoder feature map F (even).
        num_classes: K.
        dropout: Dropout2d before the coarse 1x1 classifier (0 disables it).
        ignore_index: label value that carries no loss.
        tau: scale of the cosine classifier and of the relation softmax (15).
        eps: added to norms and denominators, never clamped (1e-12).
        smoothness: teacher share of the response-distillation soft target (0.5: ½ teacher
            probability + ½ ground truth).
        border: width of the boundary-mask frame that is zeroed (6).
        dilation: side of the boundary dilation kernel (3).
        loss_weights: overrides of :data:`DEFAULT_LOSS_WEIGHTS`.
        main_ce_all_pixels: normalise the main CE by all pixels, as mmseg 0.30 (faithful); False
            averages over valid pixels like the other two CEs (docs/algorithm.md Q7).
        loss_align_corners: ``align_corners`` of the bilinear upsampling of logits to the label
            size in the losses (True in the reference; inference uses False, docs/algorithm.md Q8).
        dice_mask_ignore: leave ignored pixels out of the dice (docs/algorithm.md Q9 fix); False is faithful.

    Eval: ``forward(feat (B,C,h,w)) -> logits (B,K,h,w)``, the student's τ-scaled cosines.
    Train: ``forward(feat, target (B,H,W) long) -> (logits, losses)``; ``losses`` holds the
    weighted terms ``ce, ce_coarse, ce_teacher, kd_response, dice, dice_teacher, kd_semantic,
    kd_spatial``, whose sum is the objective. All SSA maths runs in fp32 under autocast.

    An all-ignore batch gives finite losses: the three CEs, ``kd_response`` and the dice terms
    are 0; ``kd_semantic`` and ``kd_spatial`` are still computed (they need no label).
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
        border: int = 6,
        dilation: int = 3,
        loss_weights: dict[str, float] | None = None,
        main_ce_all_pixels: bool = True,
        loss_align_corners: bool = True,
        dice_mask_ignore: bool = False,
    ) -> None:
        super().__init__()
        if in_channels % 2:
            raise ValueError(f"SSAClassifier needs an even in_channels (the MLPs halve it), got {in_channels}")
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; expected keys {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.tau = tau
        self.eps = eps
        self.smoothness = smoothness
        self.border = border
        self.dilation = dilation
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.main_ce_all_pixels = main_ce_all_pixels
        self.loss_align_corners = loss_align_corners
        self.dice_mask_ignore = dice_mask_ignore

        c = in_channels
        # Fixed prototypes S = conv_seg.weight (mmseg's head init).
        self.dropout, self.conv_seg = cls_seg(c, num_classes, dropout)
        # The remaining modules keep PyTorch's default init: it is part of the recipe (Q26).
        self.position_encoder = nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c)
        self.class_position = nn.Embedding(num_classes, c)
        self.semantic_proj = prototype_mlp(c)
        self.spatial_proj = prototype_mlp(c)
        self.center_proj = nn.Linear(c, c, bias=False)
        self.teacher_semantic_proj = prototype_mlp(c)
        self.teacher_spatial_proj = prototype_mlp(c)
        self.teacher_center_proj = nn.Linear(c, c, bias=False)
        self.has_teacher = True

    # ------------------------------------------------------------------ building blocks
    def embed_pixels(self, feat: Tensor) -> PixelEmbedding:
        """P_f, X = F + P_f and ‖X‖ + ε of F (B,C,h,w) (docs/algorithm.md §3)."""
        position = self.position_encoder(feat).flatten(2)
        pixels = feat.flatten(2) + position
        return PixelEmbedding(position, pixels, pixel_norms(pixels, self.eps))

    def student(self, feat: Tensor, coarse: Tensor, embedding: PixelEmbedding) -> tuple[Tensor, Tensor, Tensor]:
        """SEPA + SPPA (docs/algorithm.md §3).

        Args:
            feat: F (B,C,h,w). coarse: M (B,K,h,w), the coarse logits conv_seg(dropout(F)).
            embedding: :meth:`embed_pixels` of ``feat``.
        Returns:
            logits O (B,K,h,w), semantic prototypes S_p (B,K,C), spatial prototypes P_p (B,K,C).
        """
        batch, _, h, w = feat.shape
        mask = coarse.flatten(2)
        # SPPA: softmax over positions gathers one spatial center per class.
        spatial_center = class_weighted_sums(embedding.position, F.softmax(mask, dim=-1))
        class_pos = self.class_position.weight.expand(batch, -1, -1)
        spatial_proto = self.spatial_proj(torch.cat([class_pos, spatial_center], dim=-1))
        # SEPA: softmax over classes, then a probability-weighted mean of the pixel features.
        semantic_center = soft_class_centers(feat.flatten(2), mask, self.eps)
        prototypes = self.conv_seg.weight.flatten(1).expand(batch, -1, -1)
        semantic_proto = self.semantic_proj(torch.cat([semantic_center, prototypes], dim=-1))
        centers = self.center_proj(semantic_proto + spatial_proto)
        logits = cosine_logits(embedding.pixels, centers, self.tau, self.eps, embedding.norms).unflatten(-1, (h, w))
        return logits, semantic_proto, spatial_proto

    def teacher(self, feat: Tensor, embedding: PixelEmbedding, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """GT-guided teacher (docs/algorithm.md §4), vectorised with a one-hot matmul.

        Args:
            feat: F (B,C,h,w). embedding: :meth:`embed_pixels` of ``feat``.
            labels: (B,h,w) long at feature resolution.
        Returns:
            logits Ô (B,K,h,w), semantic prototypes Ŝ_p (K,C) (shared by the batch), spatial
            prototypes P̂_p (B,K,C).
        """
        if not self.has_teacher:
            raise RuntimeError("the teacher was removed by deploy(); training needs a model that was not deployed")
        batch, _, h, w = feat.shape
        k = self.num_classes
        onehot = class_onehot(labels, k, self.ignore_index, feat.dtype)
        count_per_image = onehot.sum(-1)  # (B,K)
        prototypes = self.conv_seg.weight.flatten(1)
        class_pos = self.class_position.weight
        # Semantic centers are pooled over the whole per-device batch (faithful, docs/algorithm.md Q11).
        semantic_center = pooled_class_centers(feat.flatten(2), onehot, prototypes.detach(), self.eps)
        semantic_proto = self.teacher_semantic_proj(torch.cat([semantic_center, prototypes], dim=-1))
        # Spatial centers are per image.
        pos_sums = class_weighted_sums(embedding.position, onehot)
        spatial_center = torch.where(
            count_per_image[..., None] > 0, pos_sums / (count_per_image[..., None] + self.eps), class_pos.detach()
        )
        spatial_proto = self.teacher_spatial_proj(torch.cat([spatial_center, class_pos.expand(batch, -1, -1)], dim=-1))
        centers = self.teacher_center_proj(semantic_proto + spatial_proto)
        logits = cosine_logits(embedding.pixels, centers, self.tau, self.eps, embedding.norms).unflatten(-1, (h, w))
        return logits, semantic_proto, spatial_proto

    # ------------------------------------------------------------------ forward
    def forward(self, feat: Tensor, target: Tensor | None = None):
        if self.conv_seg.weight.dtype in (torch.float16, torch.bfloat16):
            return call_in_full_precision(self, feat, target)
        if self.training:
            if target is None:
                raise ValueError("SSAClassifier in train mode needs target (B, H, W); call .eval() for inference")
            if target.dim() != 3:
                raise ValueError(f"target must be (B, H, W) long, got shape {tuple(target.shape)}")
            check_target(target, self.num_classes, self.ignore_index)
        # SSA maths in full precision even under autocast (docs/algorithm.md Q5).
        guard = torch.autocast(feat.device.type, enabled=False) if torch.is_autocast_enabled(feat.device.type) else nullcontext()
        with guard:
            feat = _full_precision(feat)
            coarse = self.conv_seg(self.dropout(feat))
            embedding = self.embed_pixels(feat)
            logits, semantic_proto, spatial_proto = self.student(feat, coarse, embedding)
            if not self.training:
                return logits
            losses = self._losses(feat, embedding, coarse, logits, semantic_proto, spatial_proto, target.long())
        return logits, losses

    def _losses(
        self,
        feat: Tensor,
        embedding: PixelEmbedding,
        coarse: Tensor,
        logits: Tensor,
        semantic_proto: Tensor,
        spatial_proto: Tensor,
        target: Tensor,
    ) -> dict[str, Tensor]:
        """The eight weighted loss terms of docs/algorithm.md §5 (steps 5-13)."""
        small = legacy_nearest_downsample(target, feat.shape[-2:])
        teacher_logits, teacher_semantic, teacher_spatial = self.teacher(feat, embedding, small)
        boundary = boundary_mask(small, self.border, self.dilation)

        labels = pixel_labels(target, self.num_classes, self.ignore_index, feat.dtype)
        # Student and teacher logits are τ-scaled cosines, so |logits| <= |τ|.
        student, teacher, coarse_stats = upsampled_stats(
            [Scored(logits, True, self.tau), Scored(teacher_logits, True, self.tau), Scored(coarse)],
            labels,
            self.loss_align_corners,
            self.dice_mask_ignore,
        )
        raw = {
            "ce": reduce_cross_entropy(student, all_pixels=self.main_ce_all_pixels),
            "ce_coarse": reduce_cross_entropy(coarse_stats, all_pixels=False),
            "ce_teacher": reduce_cross_entropy(teacher, all_pixels=False),
            "kd_response": response_distillation(
                logits, teacher_logits.detach(), small, boundary, self.smoothness, self.ignore_index, self.eps
            ),
            "dice": dice_loss(student),
            "dice_teacher": dice_loss(teacher),
            "kd_semantic": semantic_distillation(semantic_proto, teacher_semantic.detach(), self.tau, self.eps),
            "kd_spatial": spatial_distillation(spatial_proto, teacher_spatial.detach()),
        }
        return {name: self.loss_weights[name] * value for name, value in raw.items()}

    def deploy(self) -> "SSAClassifier":
        """Drop the train-only teacher: -(4C² + 2C) parameters. Inference is unchanged."""
        for name in _TEACHER_MODULES:
            if hasattr(self, name):
                delattr(self, name)
        self.has_teacher = False
        return self

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, tau={self.tau}, teacher={self.has_teacher}"
