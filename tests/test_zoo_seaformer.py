"""SeaFormer-B/L + LightHead: levels and their rounding, parameter counts, weights (builds, training
and eval of every model: test_model_contract.py)."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssaseg import count_parameters, create_model, list_models
from ssaseg.backbones.seaformer import SeaAttention, SeaFormer
from ssaseg.checkpoints import load_checkpoint
from ssaseg.decoders.light_head import LightHead
from ssaseg.weights import load_weights

K = 11
#: (backbone out_channels, strides, decoder channels) per variant.
EXPECTED = {
    "seaformer_b": ([64, 192, 256], [8, 32, 64], 160),
    "seaformer_l": ([128, 192, 256, 320], [8, 16, 32, 64], 192),
}
#: Exact parameter counts at K=150: (linear baseline, SSA train, SSA deploy), paper figure (M).
COUNTS = {
    "seaformer_b": ((8_605_654, 8_836_694, 8_733_974), 8.8),
    "seaformer_l": ((13_951_510, 14_277_910, 14_130_070), 14.2),
}
#: A small SeaFormer for loader tests (same code paths, few parameters).
TINY = dict(
    cfgs=[[[3, 1, 8, 1], [3, 2, 8, 2]], [[3, 2, 16, 2]], [[3, 2, 16, 2]], [[3, 2, 24, 2]], [[3, 2, 32, 2]]],
    channels=[8, 8, 16, 16, 24, 32],
    emb_dims=[24, 32],
    key_dims=[4, 4],
    depths=[1, 1],
    num_heads=2,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The machine is shared by several test runs; one thread avoids oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: create_model(name, K, classifier="ssa") for name in EXPECTED}


def test_registered() -> None:
    assert {"seaformer_b", "seaformer_l"} <= set(list_models("seaformer_*"))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name: str) -> None:
    """Baseline = the published SeaFormer seg models (B 8.6 M, L 14.0 M); the SSA add-on is
    4C²+12C+KC at inference (+4C²+2C train-only teacher), C = 160 / 192.

    README: B 8.8 M, L 14.2 M, said to be baseline + inference SSA (docs/algorithm.md §15.4 item 5). Exact:
    B 8.73 M (8.84 M with the teacher), L 14.13 M (14.28 M); both within 0.1 M of the README,
    which evidently rounded the baseline before adding (14.0 + 0.18).
    """
    (linear_n, ssa_n, deploy_n), paper = COUNTS[name]
    with torch.device("meta"):
        linear = create_model(name, 150, classifier="linear")
        ssa = create_model(name, 150, classifier="ssa")
    c = EXPECTED[name][2]
    assert count_parameters(linear) == linear_n
    assert count_parameters(ssa) == ssa_n == linear_n + 8 * c * c + 14 * c + 150 * c
    ssa.deploy()
    assert count_parameters(ssa) == deploy_n == linear_n + 4 * c * c + 12 * c + 150 * c
    assert abs(deploy_n / 1e6 - paper) <= 0.1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_shapes(name: str, models: dict[str, nn.Module]) -> None:
    size = 96
    model = models[name].eval()
    channels, strides, width = EXPECTED[name]
    assert model.backbone.out_channels == channels and model.backbone.strides == strides
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        features = model.backbone(images)
        # Stride-2 convs round up (padding k//2): 96 px -> 1/64 level of 2x2.
        expected = [(c, -(-size // s), -(-size // s)) for c, s in zip(channels, strides)]
        assert [tuple(f.shape[1:]) for f in features] == expected
        feat = model.decoder(features)
        assert feat.shape == (1, width, size // 8, size // 8)
        assert model(images).shape == (1, K, size, size)


def test_sea_attention_axial_embedding_resizes() -> None:
    attn = SeaAttention(dim=16, key_dim=4, num_heads=2).eval()
    assert attn.pos_emb_rowq.pos_embed.shape == (1, 8, 16)
    for h, w in [(1, 1), (3, 5), (20, 7)]:
        assert attn(torch.randn(2, 16, h, w)).shape == (2, 16, h, w)
    # The embedding is linearly interpolated (align_corners False) to the squeezed length.
    x = torch.zeros(1, 8, 5)
    expected = F.interpolate(attn.pos_emb_rowq.pos_embed, size=5, mode="linear", align_corners=False)
    torch.testing.assert_close(attn.pos_emb_rowq(x), expected)


def test_light_head_validation() -> None:
    with pytest.raises(ValueError, match="embed_dims\\[-1\\]"):
        LightHead([8, 16], 32, [16])
    with pytest.raises(ValueError, match="len\\(embed_dims\\) \\+ 1"):
        LightHead([8, 16, 24], 16, [16])
    head = LightHead([8, 16], 16, [16])
    assert head.linear_fuse.conv.groups == 16  # depthwise (is_dw)
    assert head([torch.randn(1, 8, 6, 6), torch.randn(1, 16, 2, 2)]).shape == (1, 16, 6, 6)


def test_load_classification_checkpoint_prefers_ema(tmp_path) -> None:
    """timm-style checkpoint: state_dict + state_dict_ema + pickled argparse args + classifier."""
    torch.manual_seed(0)
    source = SeaFormer(**TINY)
    plain = {k: torch.zeros_like(v) for k, v in source.state_dict().items()}
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    head = {"linear.weight": torch.randn(1000, 32), "linear.bias": torch.randn(1000)}
    path = tmp_path / "SeaFormer_tiny_cls.pth"
    torch.save(
        {"epoch": 3, "arch": "SeaFormer_T", "args": argparse.Namespace(lr=0.1, model="SeaFormer_T"),
         "state_dict": {**plain, **head}, "state_dict_ema": {**ema, **head}},
        path,
    )
    target = SeaFormer(**TINY)
    load_weights(target, path, "seaformer")
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, ema[key], msg=key)

    ema.pop("trans1.transformer_blocks.0.attn.pos_emb_rowq.pos_embed")
    torch.save({"state_dict_ema": ema}, path)
    expected = r"(?s)SeaFormer_tiny_cls\.pth.*missing trans1\.transformer_blocks\.0\.attn\.pos_emb_rowq"
    with pytest.raises(ValueError, match=expected):
        load_weights(SeaFormer(**TINY), path, "seaformer")


def test_backbone_key_layout() -> None:
    """The original SeaFormer module names, so that ImageNet files load without renaming."""
    with torch.device("meta"):
        keys = list(create_model("seaformer_b", K, classifier="linear").backbone.state_dict())
    assert keys[0].startswith("smb1.stem_block.0.c.")
    assert any(k.startswith("trans2.transformer_blocks.3.mlp.fc2.bn.") for k in keys)


def test_load_official_segmentation_checkpoint(tmp_path) -> None:
    """mmseg layout (backbone.*, decode_head.* incl. conv_seg) maps onto ssaseg by prefix."""
    model = create_model("seaformer_l", K, classifier="linear")
    official = {}
    for key, value in model.state_dict().items():
        value = value + 1 if value.is_floating_point() else value
        if key.startswith("decoder."):
            key = "decode_head." + key[len("decoder."):]
        elif key.startswith("classifier."):
            key = "decode_head." + key[len("classifier."):]
        official[key] = value
    assert "decode_head.fuse3.global_act.conv.weight" in official and "decode_head.linear_fuse.bn.weight" in official
    path = tmp_path / "seaformer_large.pth"
    torch.save({"state_dict": official}, path)
    load_checkpoint(model, path)
    torch.testing.assert_close(model.classifier.conv_seg.weight, official["decode_head.conv_seg.weight"])
    torch.testing.assert_close(
        model.decoder.fuse1.local_embedding.conv.weight, official["decode_head.fuse1.local_embedding.conv.weight"]
    )
