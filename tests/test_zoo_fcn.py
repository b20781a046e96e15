"""Dilated ResNetV1c backbone (mmseg ``-d8``) and fcn_r101_d8."""
from __future__ import annotations

import pytest
import torch

from ssaseg.backbones.resnet import _STEM_MAP, ResNetV1c, convert_resnet_mmseg
from ssaseg.checkpoints import convert_official_state_dict
import ssaseg.zoo.fcn_resnet  # noqa: F401  (registers the "fcn_resnet" checkpoint key rule)
from ssaseg.models import create_model
from ssaseg.weights import load_weights
from test_zoo_upernet import SSA_INFERENCE_ADDON_512, meta_count


def test_resnet_v1c_d8_structure():
    with torch.device("meta"):
        net = ResNetV1c(101, output_stride=8)
    # Deep stem 3x3 convs 3->32 (s2) -> 32 -> 64, no avg-pool shortcut.
    stem = [m for m in net.conv1 if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in stem] == [
        (3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    assert isinstance(net.layer2[0].downsample[0], torch.nn.Conv2d)
    # strides (1,2,1,1), dilations (1,1,2,4), contract_dilation: first dilated block uses half.
    assert [len(l) for l in (net.layer1, net.layer2, net.layer3, net.layer4)] == [3, 4, 23, 3]
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer3[0].conv2.stride == (1, 1)
    assert net.layer3[0].conv2.dilation == (1, 1) and net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[2].conv2.dilation == (4, 4)
    assert net.layer4[0].downsample[0].stride == (1, 1)
    assert net.out_channels == [256, 512, 1024, 2048] and net.strides == [4, 8, 8, 8]


def test_resnet_forward_shapes_and_checks():
    net = ResNetV1c(50, output_stride=8).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 8, 12), (1, 2048, 8, 12)]
    with pytest.raises(ValueError, match="depth"):
        ResNetV1c(34)
    with pytest.raises(ValueError, match="expects images"):
        net(torch.randn(3, 64, 64))


def convert_resnet_to_mmseg(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Test-side inverse of ``convert_resnet_mmseg`` (timm stem names -> mmseg ``stem.*``)."""
    inverse = {v: k for k, v in _STEM_MAP.items()}
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[f"stem.{inverse[module]}.{param}" if module in inverse else key] = value
    return out


def test_resnet_mmseg_layout_roundtrip_and_load(tmp_path):
    src = ResNetV1c(50)
    mmseg = convert_resnet_to_mmseg(src.state_dict())
    assert "stem.7.running_var" in mmseg and "stem.6.weight" in mmseg and "conv1.0.weight" not in mmseg
    back = convert_resnet_mmseg(mmseg)
    assert set(back) == set(src.state_dict()) and all(torch.equal(back[k], v) for k, v in src.state_dict().items())
    mmseg = {k: v for k, v in mmseg.items() if not k.endswith("num_batches_tracked")}
    mmseg["fc.weight"] = torch.zeros(1000, 2048)
    torch.save({"state_dict": mmseg}, tmp_path / "r50_v1c.pth")
    dst = ResNetV1c(50)
    kept = load_weights(dst, tmp_path / "r50_v1c.pth", "resnet_v1c").kept_initial
    assert kept and all(k.endswith("num_batches_tracked") for k in kept)
    assert torch.equal(dst.bn1.weight, src.bn1.weight) and torch.equal(dst.layer4[2].conv3.weight, src.layer4[2].conv3.weight)
    with pytest.raises(ValueError, match="r50_v1c.pth"):
        load_weights(ResNetV1c(101), tmp_path / "r50_v1c.pth", "resnet_v1c")


def test_fcn_official_checkpoint_stem_rule():
    state = {"backbone.stem.7.weight": torch.ones(64), "backbone.layer1.0.conv1.weight": torch.ones(1),
             "decode_head.conv_cat.conv.weight": torch.ones(1), "decode_head.conv_seg.weight": torch.ones(1)}
    out = convert_official_state_dict(state, arch="fcn_resnet")
    assert set(out) == {"backbone.bn1.weight", "backbone.layer1.0.conv1.weight", "decoder.conv_cat.conv.weight",
                        "classifier.conv_seg.weight"}


def test_fcn_heads():
    with torch.device("meta"):
        model = create_model("fcn_r101_d8", 5, classifier="linear")
    dec = model.decoder
    assert len(dec.convs) == 2 and dec.conv_cat is not None and dec.in_index == 3 and dec.channels == 512
    assert model.aux_heads[0].decoder.in_index == 2 and model.aux_heads[0].classifier.loss_weight == 0.4


# K = 150: all parameters of mmseg's fcn_r101-d8 (incl. the aux head) = 68.59 M.
FCN_R101_D8_LINEAR = 68_590_732


def test_fcn_r101_d8_parameter_count():
    linear, _ = meta_count("fcn_r101_d8", "linear")
    assert linear == FCN_R101_D8_LINEAR
    total, without_teacher = meta_count("fcn_r101_d8", "ssa")
    assert total == linear + 8 * 512**2 + 14 * 512 + 150 * 512
    assert without_teacher == linear + SSA_INFERENCE_ADDON_512 + 150 * 512
