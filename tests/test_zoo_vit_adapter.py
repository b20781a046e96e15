"""Pure-PyTorch multi-scale deformable attention, the ViT-Adapter backbone, upernet_vit_adapter_l."""
from __future__ import annotations

import itertools

import pytest
import timm
import torch

from ssaseg.backbones.ms_deform_attn import MSDeformAttn, ms_deform_attn_sample
from ssaseg.backbones.vit_adapter import ViTAdapter, convert_reference_keys
from ssaseg.models import create_model
from ssaseg.weights import load_weights
from test_zoo_upernet import SSA_INFERENCE_ADDON_512, meta_count

TINY = dict(embed_dim=64, depth=4, num_heads=4, deform_num_heads=4, conv_inplane=16, pretrain_size=64,
            interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], drop_path_rate=0.1)
TINY_HEAD = dict(channels=32, aux_channels=16)


def _bilinear_zero_pad(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Sample ``img (D, h, w)`` at normalised (x, y) like the reference CUDA kernel: pixel
    centres at (i + 0.5) / size, zero outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    out = torch.zeros(d)
    for xi, yi in itertools.product((x0, x0 + 1), (y0, y0 + 1)):
        if 0 <= xi < w and 0 <= yi < h:
            out += img[:, yi, xi] * (1 - abs(px - xi)) * (1 - abs(py - yi))
    return out


def test_ms_deform_attn_sample_matches_pointwise_bilinear():
    torch.manual_seed(0)
    shapes = [(4, 5), (2, 3)]
    b, lq, m, d, p = 2, 3, 2, 3, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), m, d)
    loc = torch.rand(b, lq, m, len(shapes), p, 2) * 1.2 - 0.1  # some samples fall outside
    weights = torch.rand(b, lq, m, len(shapes), p)
    out = ms_deform_attn_sample(value, shapes, loc, weights)
    assert out.shape == (b, lq, m * d)
    levels = value.split([h * w for h, w in shapes], dim=1)
    expected = torch.zeros(b, lq, m, d)
    for bi, qi, mi, li, pi in itertools.product(range(b), range(lq), range(m), range(len(shapes)), range(p)):
        h, w = shapes[li]
        img = levels[li][bi, :, mi].T.reshape(d, h, w)
        x, y = loc[bi, qi, mi, li, pi].tolist()
        expected[bi, qi, mi] += weights[bi, qi, mi, li, pi] * _bilinear_zero_pad(img, x, y)
    torch.testing.assert_close(out, expected.reshape(b, lq, m * d), atol=1e-5, rtol=1e-5)


def test_ms_deform_attn_module_shapes_and_init():
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2, ratio=0.5)
    assert attn.value_proj.out_features == 16 and attn.output_proj.in_features == 16
    assert attn.sampling_offsets.out_features == 4 * 3 * 2 * 2
    # Deformable-DETR init: head 0 points along +x at distances 1, 2.
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    shapes = [(4, 4), (2, 2), (1, 1)]
    query, feat = torch.randn(2, 5, 32), torch.randn(2, 21, 32)
    assert attn(query, torch.rand(1, 5, 1, 2), feat, shapes).shape == (2, 5, 32)
    with pytest.raises(ValueError, match="levels"):
        attn(query, torch.rand(1, 5, 1, 2), feat, shapes[:2])


def test_vit_adapter_shapes_and_input_checks():
    model = ViTAdapter(**TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 96, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 24, 16), (1, 64, 12, 8), (1, 64, 6, 4), (1, 64, 3, 2)]
    assert model.out_channels == [64] * 4 and model.strides == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="interaction_indexes"):
        ViTAdapter(**{**TINY, "interaction_indexes": [[0, 1], [3, 3]]})
    with pytest.raises(ValueError, match="4 interaction blocks"):
        ViTAdapter(**{**TINY, "interaction_indexes": [[0, 1], [2, 3]]})
    two = ViTAdapter(**{**TINY, "interaction_indexes": [[0, 1], [2, 3]], "add_vit_feature": False}).eval()
    with torch.no_grad():
        assert two(torch.randn(1, 3, 64, 64))[0].shape == (1, 64, 16, 16)


def test_vit_adapter_pos_embed_at_pretrain_size_is_the_stored_grid():
    model = ViTAdapter(**TINY)
    torch.testing.assert_close(model._pos_embed(4, 4), model.pos_embed[:, 1:], atol=1e-6, rtol=1e-6)
    assert model._pos_embed(6, 2).shape == (1, 12, 64)


def test_vit_adapter_with_cp_is_numerically_identical():
    torch.manual_seed(0)
    plain = ViTAdapter(**{**TINY, "drop_path_rate": 0.0, "init_values": 0.1})
    ckpt = ViTAdapter(**{**TINY, "drop_path_rate": 0.0, "init_values": 0.1, "with_cp": True})
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    grads = []
    for model in (plain, ckpt):
        x.grad = None
        sum(o.square().mean() for o in model(x)).backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_vit_adapter_loads_timm_vit_weights(tmp_path):
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=64, depth=4, num_heads=4, num_classes=10
    )
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    model = ViTAdapter(**TINY)
    kept = load_weights(model, tmp_path / "vit.pth", "vit").kept_initial
    assert "level_embed" in kept and any(k.startswith("interactions.") for k in kept)
    assert not any(k.startswith(("blocks.", "patch_embed.", "pos_embed")) and ".ls" not in k for k in kept)
    assert torch.equal(model.blocks[3].mlp.fc2.weight, vit.blocks[3].mlp.fc2.weight)
    assert torch.equal(model.pos_embed, vit.pos_embed)
    # The file has no layer scale: the gammas keep their initial 1 (the reference loads non-strictly).
    assert "blocks.0.ls1.gamma" in kept and torch.equal(model.blocks[0].ls2.gamma, torch.ones(64))
    other = ViTAdapter(**{**TINY, "pretrain_size": 96})  # pos_embed grid 6x6 vs the file's 4x4
    with pytest.raises(ValueError, match="vit.pth"):
        load_weights(other, tmp_path / "vit.pth", "vit")


def _reference_block(block: torch.nn.Module, gamma1: torch.Tensor, gamma2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The reference ViT-Adapter ``Block.forward`` with ``layer_scale=True`` (eval, no drop path):
    ``x + gamma1 * attn(norm1(x))``, then ``+ gamma2 * mlp(norm2(x))``, attention written out."""
    attn = block.attn
    b, n, c = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    weights = ((q @ k.transpose(-2, -1)) * (c // attn.num_heads) ** -0.5).softmax(dim=-1)
    x = x + gamma1 * attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))
    return x + gamma2 * block.mlp(block.norm2(x))


def test_vit_adapter_layer_scale_matches_the_reference_layout():
    """Reference blocks hold ``gamma1``/``gamma2`` (D values, init 1); a state dict in the reference
    layout loads strictly after ``convert_reference_keys`` and the gammas act as the reference's."""
    torch.manual_seed(0)
    model = ViTAdapter(**{**TINY, "drop_path_rate": 0.0}).eval()
    for i in range(4):
        assert torch.equal(model.blocks[i].ls1.gamma, torch.ones(64))
    assert sum(p.numel() for n, p in model.named_parameters() if ".ls" in n) == 4 * 2 * 64
    reference = {}
    for key, value in model.state_dict().items():  # the reference's names, perturbed values
        key = key.replace(".ls1.gamma", ".gamma1").replace(".ls2.gamma", ".gamma2")
        reference[f"backbone.{key}"] = value + 0.1 * torch.randn_like(value) if value.is_floating_point() else value
    assert "backbone.blocks.3.gamma2" in reference and "backbone.interactions.0.injector.gamma" in reference
    converted = convert_reference_keys(reference)
    assert "backbone.blocks.3.ls2.gamma" in converted and "backbone.interactions.0.injector.gamma" in converted
    model.load_state_dict({k.removeprefix("backbone."): v for k, v in converted.items()}, strict=True)
    x = torch.randn(2, 16, 64)
    with torch.no_grad():
        expected = _reference_block(model.blocks[1], reference["backbone.blocks.1.gamma1"],
                                    reference["backbone.blocks.1.gamma2"], x)
        torch.testing.assert_close(model.blocks[1](x), expected, rtol=1e-5, atol=1e-5)
    without = ViTAdapter(**{**TINY, "layer_scale_init_values": None})
    assert not any(".ls" in n and "gamma" in n for n, _ in without.named_parameters())


def _to_reference_layout(name: str) -> str:
    """ssaseg name -> the reference's (ViT-Adapter backbone in an mmseg 0.30 EncoderDecoder)."""
    name = name.replace(".ls1.gamma", ".gamma1").replace(".ls2.gamma", ".gamma2")
    for ours, theirs in (("aux_heads.0.decoder.", "auxiliary_head."), ("aux_heads.0.classifier.", "auxiliary_head."),
                         ("decoder.", "decode_head."), ("classifier.", "decode_head.")):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    return name


def test_upernet_vit_adapter_loads_a_reference_layout_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("upernet_vit_adapter_l", 6, classifier="linear", **TINY, **TINY_HEAD)
    ours = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    reference = {_to_reference_layout(k): v for k, v in ours.items()}
    assert "backbone.blocks.0.gamma1" in reference and "decode_head.conv_seg.weight" in reference
    torch.save({"state_dict": reference}, tmp_path / "reference.pth")
    loaded = create_model("upernet_vit_adapter_l", 6, classifier="linear", checkpoint=str(tmp_path / "reference.pth"),
                          **TINY, **TINY_HEAD)  # strict
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_upernet_vit_adapter_injectors_learn():
    # init_values > 0: with the reference's 0 the injectors' gamma is 0 and their attention
    # gets exactly-zero (but present) gradients at the first step.
    torch.manual_seed(0)
    model = create_model("upernet_vit_adapter_l", 6, classifier="linear", **TINY, **TINY_HEAD, init_values=0.1)
    assert model.aux_heads[0].decoder.in_index == 2 and model.decoder.in_channels == [64] * 4
    images, targets = torch.randn(2, 3, 64, 64), torch.randint(0, 6, (2, 64, 64))  # 2: BN on the 1x1 PPM cell
    model.train()(images, targets)["loss"].backward()
    assert model.backbone.interactions[0].injector.attn.value_proj.weight.grad.abs().sum() > 0


# K = 150: linear total incl. the aux head, and the SSA model without its teacher (README 364.9 M).
VIT_ADAPTER_L_LINEAR = 363_802_092  # 49,152 of them: layer scale, 24 blocks x 2 x 1024


def test_upernet_vit_adapter_l_parameter_count():
    linear, _ = meta_count("upernet_vit_adapter_l", "linear")
    assert linear == VIT_ADAPTER_L_LINEAR
    total, without_teacher = meta_count("upernet_vit_adapter_l", "ssa")
    assert total == linear + 8 * 512**2 + 14 * 512 + 150 * 512
    assert without_teacher == linear + SSA_INFERENCE_ADDON_512 + 150 * 512
    assert round(without_teacher / 1e6, 1) == 364.9


@pytest.mark.slow
def test_upernet_vit_adapter_l_real_size_forward():
    model = create_model("upernet_vit_adapter_l", 150, classifier="ssa").eval().deploy()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 150, 64, 64)
