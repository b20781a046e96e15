"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, as used by ViT-Adapter.

No compiled op: sampling is ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``),
which is what the reference CUDA kernel computes. Parameter names and initialisation follow
the ViT-Adapter ``MSDeformAttn`` (with its ``ratio`` that shrinks the value width).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_sample(
    value: Tensor, shapes: Sequence[tuple[int, int]], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Attention-weighted bilinear samples of a multi-level value map.

    Args:
        value: ``(B, sum_l h_l*w_l, M, D)`` per-head values, levels concatenated row-major.
        shapes: ``[(h_l, w_l)]`` for the L levels (Python ints: no host sync).
        sampling_locations: ``(B, Lq, M, L, P, 2)`` normalised (x, y) in [0, 1].
        attention_weights: ``(B, Lq, M, L, P)`` (softmax over L*P already applied).
    Returns:
        ``(B, Lq, M*D)``.

    The levels have different sizes, so each is sampled by one ``grid_sample`` call over all
    batch items, heads, queries and points; the weighted sum is accumulated level by level
    instead of stacking all samples, which keeps the peak memory at one level's samples.
    """
    b, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    if len(shapes) != num_levels:
        raise ValueError(f"{len(shapes)} level shapes for {num_levels} sampling levels")
    if sum(h * w for h, w in shapes) != value.shape[1]:
        raise ValueError(f"level shapes {list(shapes)} do not cover the {value.shape[1]} value tokens")
    # Reference points are built in float32; grid_sample needs the grid in the values' dtype (half models).
    grids = (2 * sampling_locations - 1).to(value.dtype)
    values = value.split([h * w for h, w in shapes], dim=1)
    weights = attention_weights.transpose(1, 2).reshape(b * m, lq, num_levels, num_points)
    out = value.new_zeros(b * m, d, lq)
    for level, (h, w) in enumerate(shapes):
        v = values[level].flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*M, D, Lq, P)
        out = out + torch.einsum("ndqp,nqp->ndq", sampled, weights[:, :, level])
    return out.reshape(b, m * d, lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention.

    Args:
        d_model: query/feature width C.
        n_levels: L, levels of the value map.
        n_heads: M.
        n_points: P, sampling points per head and level.
        ratio: the value/output projections work at ``int(C * ratio)`` channels (ViT-Adapter's
            ``deform_ratio``).

    ``forward(query (B, Lq, C), reference_points (B|1, Lq, L|1, 2), feat (B, Lin, C), shapes)
    -> (B, Lq, C)``; reference points are normalised (x, y) in [0, 1].
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, ratio: float = 1.0) -> None:
        super().__init__()
        value_dim = int(d_model * ratio)
        if value_dim % n_heads:
            raise ValueError(f"d_model * ratio = {value_dim} must be divisible by n_heads = {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points, self.ratio = d_model, n_levels, n_heads, n_points, ratio
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dim)
        self.output_proj = nn.Linear(value_dim, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Deformable DETR init: zero offset weights, biases pointing each head in its own direction
        # at distances 1..P; uniform attention; Xavier projections.
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, feat: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        b, lq, _ = query.shape
        m, num_levels, num_points = self.n_heads, self.n_levels, self.n_points
        if len(shapes) != num_levels:
            raise ValueError(f"MSDeformAttn built for {num_levels} levels got {len(shapes)} level shapes")
        value = self.value_proj(feat).view(b, feat.shape[1], m, -1)
        offsets = self.sampling_offsets(query).view(b, lq, m, num_levels, num_points, 2)
        weights = self.attention_weights(query).view(b, lq, m, num_levels * num_points).softmax(-1)
        weights = weights.view(b, lq, m, num_levels, num_points)
        # Offsets are in pixels of each level: normalise by (w_l, h_l).
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_sample(value, shapes, locations, weights))
