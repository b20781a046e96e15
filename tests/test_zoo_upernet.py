"""UperNet decoder, mmseg-faithful Swin backbone and its converters, upernet_swin_{t,b,l} heads and
parameter counts (builds, training and eval of every model: test_model_contract.py)."""
from __future__ import annotations

import re

import pytest
import timm
import torch
import torch.nn.functional as F

from ssaseg.backbones.swin import SwinTransformer, convert_swin_official, shifted_window_mask
from ssaseg.checkpoints import convert_official_state_dict
from ssaseg.decoders.uper import UPerDecoder
import ssaseg.zoo.upernet_swin  # noqa: F401  (registers the "upernet_swin" checkpoint key rule)
from ssaseg.models import count_parameters, create_model
from ssaseg.weights import load_weights

TINY_SWIN = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), channels=32, aux_channels=16)
SSA_INFERENCE_ADDON_512 = 4 * 512**2 + 12 * 512  # + K*C, docs/algorithm.md §2


def convert_swin_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Test-side inverse of ``convert_swin_official``: ssaseg/mmseg names -> Microsoft layout (the
    out-norms ``norm{i}`` have no Microsoft counterpart and are dropped; PatchMerging parameters
    go from mmseg's Unfold order (h,w) = (0,0),(0,1),(1,0),(1,1) to Microsoft's (0,0),(1,0),(0,1),(1,1))."""
    out = {}
    for key, value in state.items():
        if re.match(r"^norm\d+\.", key) or key.endswith("relative_position_index"):
            continue
        if ".downsample." in key:
            lead, four_c = value.shape[:-1], value.shape[-1]
            value = value.reshape(*lead, four_c // 4, 4).transpose(-1, -2)[..., [0, 2, 1, 3], :].reshape(*lead, four_c)
        key = key.replace("patch_embed.projection.", "patch_embed.proj.")
        key = re.sub(r"^stages\.", "layers.", key).replace(".attn.w_msa.", ".attn.")
        out[key.replace(".ffn.layers.0.0.", ".mlp.fc1.").replace(".ffn.layers.1.", ".mlp.fc2.")] = value
    return out


def meta_count(name: str, classifier: str, num_classes: int = 150) -> tuple[int, int]:
    """(all parameters, parameters without the SSA teacher) of a real-size model built on meta."""
    with torch.device("meta"):
        model = create_model(name, num_classes, classifier=classifier)
    total = count_parameters(model)
    return total, total - count_parameters(model.classifier) + count_parameters(model.classifier.deploy())


# ---------------------------------------------------------------------------------------------
# UPerDecoder


def test_uper_decoder_shapes_and_mmseg_names():
    dec = UPerDecoder([8, 16, 24, 32], channels=16)
    feats = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([8, 16, 24, 32])]
    out = dec(feats)
    assert out.shape == (2, 16, 32, 32) and dec.channels == 16
    names = set(dec.state_dict())
    for key in ("psp_modules.3.1.conv.weight", "psp_modules.0.1.bn.running_mean", "bottleneck.conv.weight",
                "lateral_convs.2.conv.weight", "fpn_convs.2.bn.weight", "fpn_bottleneck.conv.weight"):
        assert key in names, key
    assert dec.bottleneck.conv.in_channels == 32 + 4 * 16
    assert dec.fpn_bottleneck.conv.in_channels == 4 * 16
    with pytest.raises(ValueError, match="reads levels"):
        dec(feats[:3])


# ---------------------------------------------------------------------------------------------
# Swin backbone


def _tiny_timm_swin() -> torch.nn.Module:
    torch.manual_seed(0)
    ref = timm.models.swin_transformer.SwinTransformer(
        img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=2,
        always_partition=True, num_classes=0, drop_path_rate=0.0,
    ).eval()
    with torch.no_grad():  # non-trivial norms/biases so that every permutation matters
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ref


def _timm_reference_features(ref, model, x):
    """timm stage outputs with ``model``'s out-norms applied (timm has no per-stage norms)."""
    feats = ref.forward_intermediates(x, intermediates_only=True)
    outs = []
    for i, f in enumerate(feats):
        norm = getattr(model, f"norm{i}")
        outs.append(F.layer_norm(f.permute(0, 2, 3, 1), (f.shape[1],), norm.weight, norm.bias).permute(0, 3, 1, 2))
    return outs


@pytest.mark.parametrize("layout", ["timm", "microsoft"])
def test_swin_matches_timm_after_conversion(layout):
    # With window 2 on a 64 px input every stage is a window multiple, where mmseg's and timm's
    # pad/roll orders coincide, so the converted model must reproduce timm exactly.
    ref = _tiny_timm_swin()
    state = ref.state_dict()
    if layout == "microsoft":  # downsample at the end of stage i, classifier head.* , persistent buffers
        state = {re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k): v
                 for k, v in state.items()}
        state["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
        state["head.weight"] = torch.zeros(10, 128)
    model = SwinTransformer(16, (2, 2, 2, 2), (1, 2, 2, 4), window_size=2, drop_path_rate=0.0).eval()
    missing, unexpected = model.load_state_dict(convert_swin_official(state), strict=False)
    assert unexpected == [] and sorted(missing) == sorted(f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
        refs = _timm_reference_features(ref, model, x)
    for o, r in zip(outs, refs):
        torch.testing.assert_close(o, r, atol=2e-5, rtol=1e-5)


def test_swin_official_roundtrip_is_exact():
    model = SwinTransformer(16, (2, 2, 2, 2), (1, 2, 2, 4), window_size=2)
    own = model.state_dict()
    official = convert_swin_to_official(own)
    assert "layers.0.downsample.reduction.weight" in official and "patch_embed.proj.weight" in official
    assert not torch.equal(official["layers.0.downsample.reduction.weight"], own["stages.0.downsample.reduction.weight"])
    back = convert_swin_official(official)
    assert set(back) == {k for k in own if not k.startswith("norm")}
    assert all(torch.equal(back[k], own[k]) for k in back)


def test_shifted_window_mask_matches_mmseg_slicing():
    hp, wp, ws, s = 14, 21, 7, 3
    img = torch.zeros(1, hp, wp, 1)
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for w in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            img[:, h, w, :] = cnt
            cnt += 1
    win = img.view(1, hp // ws, ws, wp // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    expected = (win.unsqueeze(1) - win.unsqueeze(2)).ne(0).float() * -100.0
    torch.testing.assert_close(shifted_window_mask(hp, wp, ws, s, torch.device("cpu"), torch.float32), expected)


def test_swin_pads_non_window_multiples_and_checks_input():
    model = SwinTransformer(16, (2, 2, 2, 2), (1, 2, 2, 4), window_size=7).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 96, 160))  # stage 0: 24x40 tokens, padded to 28x42
    assert [tuple(o.shape) for o in outs] == [(1, 16, 24, 40), (1, 32, 12, 20), (1, 64, 6, 10), (1, 128, 3, 5)]
    assert model.out_channels == [16, 32, 64, 128] and model.strides == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="expects images"):
        model(torch.randn(1, 1, 64, 64))


def test_swin_weights_layouts(tmp_path):
    src = SwinTransformer(16, (2, 2, 2, 2), (1, 2, 2, 4), window_size=2)
    mmseg = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    mmseg["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    torch.save({"state_dict": mmseg}, tmp_path / "mmseg.pth")
    torch.save({"model": convert_swin_to_official(src.state_dict())}, tmp_path / "ms.pth")
    for name, kept in (("mmseg.pth", []), ("ms.pth", [f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")])):
        dst = SwinTransformer(16, (2, 2, 2, 2), (1, 2, 2, 4), window_size=2)
        assert sorted(load_weights(dst, tmp_path / name, "swin").kept_initial) == sorted(kept)
        assert torch.equal(dst.stages[1].downsample.reduction.weight, src.stages[1].downsample.reduction.weight)
    wrong = SwinTransformer(24, (2, 2, 2, 2), (1, 2, 2, 4), window_size=2)
    with pytest.raises(ValueError, match="mmseg.pth"):
        load_weights(wrong, tmp_path / "mmseg.pth", "swin")


def test_official_segmentor_checkpoint_loads_with_key_rule():
    model = create_model("upernet_swin_t", 5, classifier="linear", **TINY_SWIN, window_size=2)
    official = {}
    for k, v in model.state_dict().items():  # the official mmseg 0.30 segmentor layout
        k = re.sub(r"^aux_heads\.0\.(decoder|classifier)\.", "auxiliary_head.", k)
        official[re.sub(r"^(decoder|classifier)\.", "decode_head.", k)] = v
    official["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    converted = convert_official_state_dict(official, arch="upernet_swin")
    model.load_state_dict(converted, strict=True)


# ---------------------------------------------------------------------------------------------
# Segmentors


def test_upernet_swin_heads():
    with torch.device("meta"):
        model = create_model("upernet_swin_t", 7, classifier="linear")
    assert len(model.aux_heads) == 1 and model.aux_heads[0].decoder.in_index == 2
    assert model.aux_heads[0].decoder.channels == 256 and model.aux_heads[0].classifier.loss_weight == 0.4
    assert model.decoder.channels == 512 and model.decoder.in_channels == [96, 192, 384, 768]
    with torch.device("meta"):
        assert len(create_model("upernet_swin_t", 7, aux=False).aux_heads) == 0


# (model, linear total incl. aux head, SSA total incl. teacher); K = 150.
SWIN_COUNTS = {
    "upernet_swin_t": (59_941_862, 62_122_982),
    "upernet_swin_b": (121_279_716, 123_460_836),
    "upernet_swin_l": (233_759_936, 235_941_056),
}
# README: Swin-T 61.1 M, Swin-L 234.9 M = all parameters incl. the aux head + inference SSA modules.
PAPER_M = {"upernet_swin_t": 61.1, "upernet_swin_l": 234.9}


@pytest.mark.parametrize("name", sorted(SWIN_COUNTS))
def test_upernet_swin_parameter_counts(name):
    linear, ssa = SWIN_COUNTS[name]
    assert meta_count(name, "linear")[0] == linear
    total, without_teacher = meta_count(name, "ssa")
    assert total == ssa == linear + 8 * 512**2 + 14 * 512 + 150 * 512  # docs/algorithm.md §2: training add-on
    assert without_teacher == linear + SSA_INFERENCE_ADDON_512 + 150 * 512
    if name in PAPER_M:
        assert round(without_teacher / 1e6, 1) == PAPER_M[name]
