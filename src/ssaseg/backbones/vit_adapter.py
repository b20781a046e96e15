"""ViT-Adapter (Chen et al., ICLR 2023) on a plain ViT, as used by the paper's UperNet ViT-Adapter-L.

Structure and parameter names follow the ViT-Adapter segmentation code (docs/algorithm.md §10.3):
``patch_embed.proj``, ``pos_embed`` (with the class-token slot, pretrained grid
``pretrain_size / 16``, bicubically resized to the input grid), ``blocks.{i}`` (timm ViT blocks),
``level_embed``, ``spm.*`` (SpatialPriorModule), ``interactions.{k}.{injector,extractor,
extra_extractors}.*`` (multi-scale deformable attention, pure PyTorch), ``up`` (ConvTranspose
1/8 -> 1/4) and ``norm1..norm4`` (BatchNorm; SyncBN in the reference, converted by the trainer).
The ViT part therefore loads timm-layout ViT checkpoints (the AugReg ViT-L/16 file of the
configs) by name.

The reference's ViT blocks carry layer scale (``blocks.{i}.gamma1`` / ``gamma2``, one weight per
channel, initialised to 1, multiplying the attention and MLP branches). Here they are timm's
``LayerScale`` (``Block(init_values=...)``, names ``blocks.{i}.ls1.gamma`` / ``ls2.gamma``);
:func:`convert_reference_keys` renames them. The AugReg file has no layer scale, so its gammas
keep their initial 1, as in the reference (which loads it non-strictly).
"""
from __future__ import annotations

import re
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath, PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from .ms_deform_attn import MSDeformAttn
from ..layers import init_weights_, map_to_tokens, tokens_to_map
from ..weights import StateDict, register_converter, strip_prefixes

_LayerNorm = partial(nn.LayerNorm, eps=1e-6)
_REFERENCE_LAYER_SCALE = re.compile(r"((?:^|\.)blocks\.\d+\.)gamma([12])$")


def convert_reference_keys(state_dict: StateDict) -> StateDict:
    """ViT-Adapter reference names -> :class:`ViTAdapter` names, with or without a ``backbone.`` prefix.

    The only difference is the ViT blocks' layer scale: ``blocks.{i}.gamma1`` / ``gamma2`` become
    timm's ``blocks.{i}.ls1.gamma`` / ``ls2.gamma`` (same shape ``(D,)``, same product with the
    branch output). The injectors' ``gamma`` is named alike in both. Tensors are shared, not copied.
    """
    return {_REFERENCE_LAYER_SCALE.sub(r"\1ls\2.gamma", k): v for k, v in state_dict.items()}


def reference_points(shapes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """Pixel-centre reference points of the given grids, ``(1, sum h*w, 1, 2)`` as (x, y) in (0, 1)."""
    points = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device) / h,
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device) / w,
            indexing="ij",
        )
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    return torch.cat(points, 0)[None, :, None]


def _maybe_checkpoint(fn, with_cp: bool, *args: Tensor) -> Tensor:
    if with_cp and any(a.requires_grad for a in args):
        return cp.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class DWConv(nn.Module):
    """3x3 depthwise conv applied to each of the three SPM levels of a token sequence.

    ``forward(x (B, N, C), h16, w16)`` where the sequence holds the 1/8 ``(2h16, 2w16)``, 1/16
    ``(h16, w16)`` and 1/32 ``(h16/2, w16/2)`` maps in that order.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        parts = x.split([h * w for h, w in shapes], dim=1)
        outs = [map_to_tokens(self.dwconv(tokens_to_map(p, hw))) for p, hw in zip(parts, shapes)]
        return torch.cat(outs, dim=1)


class ConvFFN(nn.Module):
    """fc1 -> depthwise 3x3 (per level) -> GELU -> dropout -> fc2 -> dropout on ``(B, N, C)``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), shapes)))
        return self.drop(self.fc2(x))


class Injector(nn.Module):
    """Spatial prior -> ViT: ``x + gamma * MSDeformAttn(LN(x), LN(c))`` (gamma starts at ``init_values``)."""

    def __init__(
        self, dim: int, num_heads: int, n_points: int, n_levels: int, deform_ratio: float, init_values: float, with_cp: bool
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = _LayerNorm(dim)
        self.feat_norm = _LayerNorm(dim)
        self.attn = MSDeformAttn(dim, n_levels, num_heads, n_points, ratio=deform_ratio)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, query: Tensor, ref: Tensor, feat: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        def inner(query: Tensor, feat: Tensor) -> Tensor:
            return query + self.gamma * self.attn(self.query_norm(query), ref, self.feat_norm(feat), shapes)

        return _maybe_checkpoint(inner, self.with_cp, query, feat)


class Extractor(nn.Module):
    """ViT -> spatial prior: ``c + MSDeformAttn(LN(c), LN(x))``, then ``+ DropPath(ConvFFN(LN(c)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_points: int,
        deform_ratio: float,
        with_cffn: bool,
        cffn_ratio: float,
        drop: float,
        drop_path: float,
        with_cp: bool,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = _LayerNorm(dim)
        self.feat_norm = _LayerNorm(dim)
        self.attn = MSDeformAttn(dim, 1, num_heads, n_points, ratio=deform_ratio)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio), drop)
            self.ffn_norm = _LayerNorm(dim)
            self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, query: Tensor, ref: Tensor, feat: Tensor, feat_shape: tuple[int, int], query_shapes: Sequence[tuple[int, int]]
    ) -> Tensor:
        def inner(query: Tensor, feat: Tensor) -> Tensor:
            query = query + self.attn(self.query_norm(query), ref, self.feat_norm(feat), [feat_shape])
            if self.with_cffn:
                query = query + self.drop_path(self.ffn(self.ffn_norm(query), query_shapes))
            return query

        return _maybe_checkpoint(inner, self.with_cp, query, feat)


class InteractionBlock(nn.Module):
    """Injector, a slice of ViT blocks, Extractor (and two extra Extractors in the last block)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_points: int,
        deform_ratio: float,
        with_cffn: bool,
        cffn_ratio: float,
        init_values: float,
        drop: float,
        drop_path: float,
        extra_extractor: bool,
        with_cp: bool,
    ) -> None:
        super().__init__()
        self.injector = Injector(dim, num_heads, n_points, 3, deform_ratio, init_values, with_cp)
        make = partial(Extractor, dim, num_heads, n_points, deform_ratio, with_cffn, cffn_ratio, drop, drop_path, with_cp)
        self.extractor = make()
        self.extra_extractors = nn.Sequential(make(), make()) if extra_extractor else None

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        blocks: Sequence[nn.Module],
        ref_x: Tensor,
        ref_c: Tensor,
        vit_shape: tuple[int, int],
        spm_shapes: Sequence[tuple[int, int]],
        with_cp: bool,
    ) -> tuple[Tensor, Tensor]:
        x = self.injector(x, ref_x, c, spm_shapes)
        for block in blocks:
            x = _maybe_checkpoint(block, with_cp, x)
        extractors = [self.extractor, *(self.extra_extractors or [])]
        for extractor in extractors:
            c = extractor(c, ref_c, x, vit_shape, spm_shapes)
        return x, c


class SpatialPriorModule(nn.Module):
    """Conv stem producing the 1/4 map ``c1 (B, D, H/4, W/4)`` and the 1/8, 1/16, 1/32 token
    sequences ``c2, c3, c4 (B, N_l, D)`` (deep 3x3 stem + maxpool, then stride-2 3x3 convs,
    each level projected to the ViT width D by a 1x1 conv)."""

    def __init__(self, inplanes: int = 64, embed_dim: int = 384, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp

        def conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(
            *conv_bn_relu(3, inplanes, 2), *conv_bn_relu(inplanes, inplanes, 1), *conv_bn_relu(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*conv_bn_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dim, 1)

    def _inner(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        tokens = [map_to_tokens(fc(c)) for fc, c in ((self.fc2, c2), (self.fc3, c3), (self.fc4, c4))]
        return (self.fc1(c1), *tokens)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner, x, use_reentrant=False)
        return self._inner(x)


class ViTAdapter(nn.Module):
    """ViT + adapter returning four maps at strides 4, 8, 16, 32, all of width ``embed_dim``.

    Args:
        pretrain_size: image size of the pretrained ViT (its ``pos_embed`` grid is size/patch).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the ViT (L/16: 1024, 24, 16, 4).
        drop_rate, attn_drop_rate, drop_path_rate: ViT dropouts; ``drop_path_rate`` is also the
            (constant) DropPath of the Extractors' ConvFFN, as in the reference.
        conv_inplane: SPM width (64).
        n_points, deform_num_heads, deform_ratio: deformable attention (4, 16, 0.5).
        init_values: initial injector gamma (0 in the reference configs).
        layer_scale_init_values: initial layer-scale gamma of the ViT blocks (timm's
            ``init_values``; 1.0 as the reference's ``layer_scale=True``; None: no layer scale).
        interaction_indexes: inclusive ViT block ranges of the interaction blocks.
        with_cffn, cffn_ratio: ConvFFN in the Extractors (True, 0.25).
        add_vit_feature: add the resized ViT outputs to the adapter maps (True).
        use_extra_extractor: two more Extractors in the last interaction (True).
        with_cp: activation checkpointing of ViT blocks, injectors, extractors and the SPM.

    ``forward(images (B, 3, H, W)) -> [(B, D, H/4, W/4), (B, D, H/8, W/8), (B, D, H/16, W/16),
    (B, D, H/32, W/32)]``; H and W must be multiples of 32.
    """

    def __init__(
        self,
        pretrain_size: int = 384,
        patch_size: int = 16,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.4,
        conv_inplane: int = 64,
        n_points: int = 4,
        deform_num_heads: int = 16,
        deform_ratio: float = 0.5,
        init_values: float = 0.0,
        layer_scale_init_values: float | None = 1.0,
        interaction_indexes: Sequence[Sequence[int]] = ((0, 5), (6, 11), (12, 17), (18, 23)),
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        add_vit_feature: bool = True,
        use_extra_extractor: bool = True,
        with_cp: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if patch_size != 16:
            raise ValueError(f"ViTAdapter places the ViT tokens at stride 16; patch_size must be 16, got {patch_size}")
        indexes = [list(r) for r in interaction_indexes]
        flat = [i for r in indexes for i in range(r[0], r[-1] + 1)]
        if flat != list(range(depth)):
            raise ValueError(f"interaction_indexes {indexes} must cover blocks 0..{depth - 1} in order exactly once")
        if add_vit_feature and len(indexes) != 4:
            raise ValueError(
                f"add_vit_feature adds one ViT output per pyramid level, so it needs 4 interaction blocks, got {indexes}"
            )
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.pretrain_grid = pretrain_size // patch_size
        self.interaction_indexes = indexes
        self.add_vit_feature = add_vit_feature
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(pretrain_size, patch_size, in_channels, embed_dim, strict_img_size=False)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pretrain_grid**2 + 1, embed_dim))  # slot 0: class token
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(
            *[
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate, attn_drop=attn_drop_rate,
                      init_values=layer_scale_init_values, drop_path=dpr[i], norm_layer=_LayerNorm)
                for i in range(depth)
            ]
        )

        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.spm = SpatialPriorModule(conv_inplane, embed_dim, with_cp=with_cp)
        self.interactions = nn.Sequential(
            *[
                InteractionBlock(
                    embed_dim, deform_num_heads, n_points, deform_ratio, with_cffn, cffn_ratio, init_values, drop_rate,
                    drop_path_rate, extra_extractor=use_extra_extractor and k == len(indexes) - 1, with_cp=with_cp,
                )
                for k in range(len(indexes))
            ]
        )
        self.up = nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)
        self.norm1 = nn.BatchNorm2d(embed_dim)
        self.norm2 = nn.BatchNorm2d(embed_dim)
        self.norm3 = nn.BatchNorm2d(embed_dim)
        self.norm4 = nn.BatchNorm2d(embed_dim)
        self.out_channels = [embed_dim] * 4
        self.strides = [4, 8, 16, 32]
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference: timm ViT init for the ViT (overwritten by the pretrained file), its own
        # init for the adapter, Deformable-DETR init for the deformable attentions.
        trunc_normal_(self.pos_embed, std=0.02)
        self.blocks.apply(_init_linear)
        for module in (self.up, self.spm, self.interactions):
            module.apply(_init_adapter)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        nn.init.normal_(self.level_embed)

    def _pos_embed(self, h: int, w: int) -> Tensor:
        """Pretrained position grid (class slot dropped), bicubically resized: ``(1, h*w, D)``."""
        g = self.pretrain_grid
        grid = self.pos_embed[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return map_to_tokens(grid)

    def forward(self, images: Tensor) -> list[Tensor]:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"ViTAdapter expects images (B, {self.in_channels}, H, W), got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"ViTAdapter needs H and W divisible by 32, got {height}x{width}")
        h, w = height // 16, width // 16
        spm_shapes = [(2 * h, 2 * w), (h, w), (h // 2, w // 2)]
        ref_x = reference_points([(h, w)], images.device)  # ViT tokens query the SPM levels
        ref_c = reference_points(spm_shapes, images.device)  # SPM tokens query the ViT map

        c1, c2, c3, c4 = self.spm(images)
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1)

        x = self.pos_drop(self.patch_embed(images) + self._pos_embed(h, w))
        outs = []
        for interaction, (first, last) in zip(self.interactions, self.interaction_indexes):
            x, c = interaction(x, c, self.blocks[first:last + 1], ref_x, ref_c, (h, w), spm_shapes, self.with_cp)
            outs.append(tokens_to_map(x, (h, w)))

        c2, c3, c4 = c.split([sh * sw for sh, sw in spm_shapes], dim=1)
        c2, c3, c4 = (tokens_to_map(t, shape) for t, shape in zip((c2, c3, c4), spm_shapes))
        c1 = self.up(c2) + c1
        if self.add_vit_feature:
            x1, x2, x3, x4 = outs
            c1 = c1 + F.interpolate(x1, scale_factor=4, mode="bilinear", align_corners=False)
            c2 = c2 + F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False)
            c3 = c3 + x3
            c4 = c4 + F.interpolate(x4, scale_factor=0.5, mode="bilinear", align_corners=False)
        return [self.norm1(c1), self.norm2(c2), self.norm3(c3), self.norm4(c4)]

# The adapter modules are not in ViT checkpoints: they keep their initial values, and so do the
# blocks' layer-scale gammas, which the AugReg ViT file lacks (the reference initialises them to 1).
@register_converter(
    "vit", keep_initial=r"(level_embed|spm\..*|interactions\..*|up\..*|norm[1-4]\..*|blocks\.\d+\.ls[12]\.gamma)"
)
def checkpoint_filter_fn(state_dict: StateDict) -> StateDict:
    """A timm-layout ViT checkpoint (e.g. the AugReg ViT-L/16 384 file of the configs) -> the
    ViT part of :class:`ViTAdapter`: the class token, final norm and classifier are dropped, and
    reference-named layer scales (``blocks.{i}.gamma1/2``) are renamed. Every other ViT weight must
    then be present and fit (the ``pos_embed`` grid must be ``pretrain_size / 16``, class-token slot
    included)."""
    dropped = ("cls_token", "norm.", "head.", "fc_norm.", "pre_logits.")
    state = convert_reference_keys(strip_prefixes(state_dict))
    return {k: v for k, v in state.items() if not k.startswith(dropped)}


def _init_linear(m: nn.Module) -> None:
    """timm's ViT init: Linear and LayerNorm only (the patch-embedding conv keeps its default)."""
    init_weights_(m, convs=())


def _init_adapter(m: nn.Module) -> None:
    """The adapter's init: the shared rules plus BatchNorm 1/0 and transposed convs."""
    init_weights_(m, norms=(nn.LayerNorm, nn.BatchNorm2d), convs=(nn.Conv2d, nn.ConvTranspose2d))
