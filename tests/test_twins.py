"""Converters against independent implementations ("twins").

Each test builds the twin (timm, HF transformers, segmentation_models_pytorch) with random
weights, perturbs every parameter and norm statistic so that any mis-mapped tensor changes the
output, saves it in the twin's own file layout, loads that file into the ssaseg backbone through
the registered converter (``ssaseg.weights.load_weights``: the path ``backbone_weights`` takes),
strictly, and compares the feature maps in float64 to 1e-9 (so that the tolerance measures the
mapping, not float32 rounding of differently ordered sums).

Layouts and what the papers' checkpoints use:

* MiT: the SSA configs load mmseg's ``mit_b*_20220624-*.pth`` (ssaseg's own layout); the NVlabs
  original (= smp's encoder) and HF ``nvidia/mit-b*`` files are the other published layouts.
* Swin: the configs load mmseg's converted files; timm's layout (= Microsoft's, with the
  downsample moved to the next stage) is the other published one.
* HRNet: the configs load ``hrnetv2_w*-*.pth``, the official HRNet-ImageNet layout, which is
  timm's ``hrnet_w*`` layout.
* EfficientFormerV2: CGRSeg loads snap-research's ``eformer_*_450.pth``; timm's layout is its own
  remap of those weights (not the snap layout), also accepted.
* ViT (ViT-Adapter-L): the configs load the AugReg ViT-L/16 in timm layout. Only the ViT trunk
  has a twin; the adapter modules are new (kept at their initial values).
"""
from __future__ import annotations

from pathlib import Path

import re

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ssaseg.backbones.efficientformer_v2 import EfficientFormerV2
from ssaseg.backbones.hrnet import HRNet
from ssaseg.backbones.mit import EfficientMultiheadAttention, MixVisionTransformer, PatchEmbed
from ssaseg.backbones.swin import SwinTransformer
from ssaseg.backbones.vit_adapter import ViTAdapter
from ssaseg.weights import load_weights

ATOL = 1e-9

pytestmark = pytest.mark.usefixtures("single_thread")


def _perturb(module: nn.Module, seed: int = 0) -> None:
    """Random non-trivial values for every parameter and BatchNorm statistic."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def _save_safetensors(module: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def _assert_features_equal(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m: f"level {i}: {m}")


# ---------------------------------------------------------------------------------------------
# MiT


TINY_MIT = dict(embed_dims=8, num_layers=(1, 2, 1, 1), num_heads=(1, 2, 3, 4), sr_ratios=(8, 4, 2, 1))


@pytest.mark.parametrize("hf_class", ["SegformerModel", "SegformerForImageClassification"])
def test_hf_segformer_to_mit(tmp_path, hf_class):
    """HF transformers' SegFormer encoder (``save_pretrained`` = the ``nvidia/mit-b*`` layout)."""
    import transformers

    config = transformers.SegformerConfig(
        hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 3, 4], depths=[1, 2, 1, 1],
        sr_ratios=[8, 4, 2, 1], num_labels=5,
    )
    torch.manual_seed(0)
    twin = getattr(transformers, hf_class)(config).eval()
    _perturb(twin)
    twin.save_pretrained(tmp_path / "hf")
    model = MixVisionTransformer(**TINY_MIT).eval()
    assert load_weights(model, tmp_path / "hf" / "model.safetensors", "mit").kept_initial == []
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    encoder = (twin if hf_class == "SegformerModel" else twin.segformer).double()
    model.double()
    # HF builds every LayerNorm with torch's default eps 1e-5; NVlabs' blocks and mmseg's MiT
    # (ssaseg) use 1e-6. Use HF's eps for this comparison so that only the weight mapping counts.
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-5
    with torch.no_grad():
        theirs = list(encoder(images, output_hidden_states=True).hidden_states)
        ours = model(images)
    _assert_features_equal(ours, theirs)


def test_smp_mit_encoder_to_mit(tmp_path):
    """smp's MiT encoder (the original NVlabs layout: ``patch_embed1``, ``block1.0.attn.q/kv``)."""
    torch.manual_seed(0)
    twin = smp.encoders.get_encoder("mit_b0", weights=None).eval()
    _perturb(twin)
    torch.save(twin.state_dict(), tmp_path / "mit_b0.pth")
    model = MixVisionTransformer(32, (2, 2, 2, 2)).eval()
    load_weights(model, tmp_path / "mit_b0.pth", "mit")
    # NVlabs (and smp) build the patch-embedding and spatial-reduction LayerNorms with torch's
    # default eps 1e-5, the block and stage norms with 1e-6; mmseg (ssaseg) uses 1e-6 for all.
    # Use NVlabs' eps for this comparison so that only the weight mapping counts.
    for module in model.modules():
        if isinstance(module, (PatchEmbed, EfficientMultiheadAttention)) and hasattr(module, "norm"):
            module.norm.eps = 1e-5
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    model.double(), twin.double()
    with torch.no_grad():
        theirs = twin(images)[2:]  # [image, empty stride-2 placeholder, 4 stages]
        ours = model(images)
    _assert_features_equal(ours, theirs)


# ---------------------------------------------------------------------------------------------
# Swin


def test_timm_swin_to_swin(tmp_path):
    # Window 2 on a 64-px input: every stage (16, 8, 4, 2 tokens) is a window multiple, where
    # mmseg's and timm's pad/shift orders coincide; always_partition stops timm from shrinking
    # the window (mmseg never does).
    twin = timm.models.swin_transformer.SwinTransformer(
        img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=2,
        always_partition=True, num_classes=10,
    ).eval()
    _perturb(twin)
    path = _save_safetensors(twin, tmp_path / "swin.safetensors")
    model = SwinTransformer(16, (2, 2, 2, 2), (1, 2, 2, 4), window_size=2).eval()
    kept = load_weights(model, path, "swin").kept_initial
    assert kept == sorted(f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias"))  # mmseg-only out-norms
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    model.double(), twin.double()
    with torch.no_grad():
        ours = model(images)
        stages = twin.forward_intermediates(images, intermediates_only=True)
    # ssaseg (mmseg) layer-normalises each returned stage; its out-norms are still 1 / 0.
    theirs = [F.layer_norm(f.permute(0, 2, 3, 1), (f.shape[1],), eps=getattr(model, f"norm{i}").eps).permute(0, 3, 1, 2)
              for i, f in enumerate(stages)]
    _assert_features_equal(ours, theirs)


# ---------------------------------------------------------------------------------------------
# HRNet


def test_timm_hrnet_to_hrnet(tmp_path):
    """timm's HRNet classification model (= the official HRNet-ImageNet layout, head included)."""
    torch.manual_seed(0)
    twin = timm.create_model("hrnet_w18_small", num_classes=10).eval()
    _perturb(twin)
    torch.save({"state_dict": twin.state_dict()}, tmp_path / "hrnet.pth")
    model = HRNet("hrnet_w18_small").eval()
    load_weights(model, tmp_path / "hrnet.pth", "hrnet")
    # mmseg's fuse layers upsample bilinearly (the classification code: nearest); give the twin
    # the same interpolation so that only the weights are compared.
    for module in twin.modules():
        if isinstance(module, nn.Upsample):
            module.mode, module.align_corners = "bilinear", False
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    model.double(), twin.double()
    with torch.no_grad():
        ours = model(images)
        stem = twin.act2(twin.bn2(twin.conv2(twin.act1(twin.bn1(twin.conv1(images))))))
        theirs = twin.stages(stem)
    _assert_features_equal(ours, list(theirs))


# ---------------------------------------------------------------------------------------------
# EfficientFormerV2


def test_timm_efficientformer_v2_to_efficientformer_v2(tmp_path):
    torch.manual_seed(0)
    twin = timm.create_model("efficientformerv2_s0", img_size=64).eval()
    _perturb(twin)
    with torch.no_grad():
        # The seg variant learns new ``attention_biases_seg`` from zero (CGRSeg) instead of the
        # ImageNet tables; zero the twin's so that both attentions use no bias.
        for name, p in twin.named_parameters():
            if name.endswith("attention_biases"):
                p.zero_()
    path = _save_safetensors(twin, tmp_path / "efficientformerv2_s0.safetensors")
    model = EfficientFormerV2(
        (32, 48, 96, 176), (2, 2, 6, 4), ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)), vit_num=2, resolution=64
    ).eval()
    kept = load_weights(model, path, "efficientformer_v2").kept_initial
    assert kept and all(k.endswith("attention_biases_seg") for k in kept)
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    model.double(), twin.double()
    with torch.no_grad():
        ours = model(images)
        theirs = twin.forward_intermediates(images, intermediates_only=True)
    _assert_features_equal(ours, theirs)


# ---------------------------------------------------------------------------------------------
# ViT (the trunk of ViT-Adapter)


def test_timm_vit_to_vit_adapter_trunk(tmp_path):
    torch.manual_seed(0)
    twin = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=64, depth=4, num_heads=4, num_classes=10
    ).eval()
    _perturb(twin)
    path = _save_safetensors(twin, tmp_path / "vit.safetensors")
    model = ViTAdapter(embed_dim=64, depth=4, num_heads=4, deform_num_heads=4, conv_inplane=16, pretrain_size=64,
                       interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]]).eval()
    kept = load_weights(model, path, "vit").kept_initial
    # Only the blocks' layer-scale gammas (absent from timm/AugReg files, initialised to 1) stay as built.
    trunk = [k for k in kept if k.startswith(("blocks.", "patch_embed.", "pos_embed"))]
    assert trunk and all(re.fullmatch(r"blocks\.\d+\.ls[12]\.gamma", k) for k in trunk)
    # ViT-Adapter runs the ViT without the class token: patch tokens + their position embeddings.
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    model.double(), twin.double()
    with torch.no_grad():
        ours = model.patch_embed(images) + model._pos_embed(4, 4)
        theirs = twin.patch_embed(images) + twin.pos_embed[:, 1:]
        for ours_block, their_block in zip(model.blocks, twin.blocks):
            ours, theirs = ours_block(ours), their_block(theirs)
    _assert_features_equal([ours], [theirs])
