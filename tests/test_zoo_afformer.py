"""AFFormer-B: levels, parameter counts, checkpoint mapping (builds, training and eval of every
model: test_model_contract.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ssaseg import count_parameters, create_model, list_models
from ssaseg.backbones.afformer import AFFormer
from ssaseg.checkpoints import SSA_PARAMETER_NAMES, load_checkpoint
from ssaseg.weights import load_weights

pytestmark = pytest.mark.usefixtures("single_thread")

K = 7
#: Exact parameter counts at K=150: linear baseline, SSA (train), SSA (deploy).
COUNTS = (2_937_906, 3_504_178, 3_241_522)
#: The official head's never-called ``align`` ConvModule (256x256 conv + GN), not built here.
ALIGN_PARAMS = 256 * 256 + 2 * 256
_OFFICIAL_SSA_NAMES = {ours: theirs for theirs, ours in SSA_PARAMETER_NAMES.items()}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {c: create_model("afformer_b", K, classifier=c) for c in ("linear", "ssa")}


def test_registered() -> None:
    assert "afformer_b" in list_models("afformer_*")


def test_parameter_counts() -> None:
    """Paper: 3.0 M baseline, 3.3 M +SSA (inference); both include the unused ``align``."""
    with torch.device("meta"):
        linear = create_model("afformer_b", 150, classifier="linear")
        ssa = create_model("afformer_b", 150, classifier="ssa")
    assert count_parameters(linear) == COUNTS[0]
    assert count_parameters(ssa) == COUNTS[1]
    ssa.deploy()
    assert count_parameters(ssa) == COUNTS[2]
    c = 256
    assert COUNTS[2] - COUNTS[0] == 4 * c * c + 12 * c + 150 * c  # SSA inference add-on, docs/algorithm.md §2
    assert round((COUNTS[0] + ALIGN_PARAMS) / 1e6, 1) == 3.0
    assert round((COUNTS[2] + ALIGN_PARAMS) / 1e6, 1) == 3.3


def test_levels() -> None:
    with torch.device("meta"):
        model = create_model("afformer_b", K, classifier="linear")
    assert model.backbone.out_channels == [96, 176, 216, 216]
    assert model.backbone.strides == [4, 8, 8, 8]
    assert model.decoder.in_index == 3 and model.decoder.channels == 256


def _to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ssaseg keys -> the official CLS / CLS_ssa layout (mmseg 0.30)."""
    out = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            first, _, rest = key[len("classifier."):].partition(".")
            out[f"decode_head.{_OFFICIAL_SSA_NAMES[first]}.{rest}"] = value
        elif key.startswith("decoder."):
            out["decode_head." + key[len("decoder."):]] = value
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("classifier", ["linear", "ssa"])
def test_official_checkpoint(models: dict[str, nn.Module], classifier: str, tmp_path) -> None:
    """Official checkpoints (with the unused ``decode_head.align``) load strictly."""
    model = models[classifier]
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    official = _to_official(state)
    official["decode_head.align.conv.weight"] = torch.zeros(256, 256, 1, 1)
    official["decode_head.align.gn.weight"] = torch.ones(256)
    official["decode_head.align.gn.bias"] = torch.zeros(256)
    if classifier == "ssa":
        official["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(K + 1)
    path = tmp_path / "official.pth"
    torch.save({"state_dict": official, "meta": {}}, path)
    load_checkpoint(model, path)  # arch "afformer" from model.model_name
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_backbone_weights(tmp_path) -> None:
    torch.manual_seed(0)
    source = AFFormer()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / "AFFormer_base_ImageNet1k_new.pth"
    torch.save({"state_dict": {**state, "cls_head.cls.weight": torch.zeros(1000, 216)}}, path)
    torch.manual_seed(1)
    target = AFFormer()
    load_weights(target, path, "afformer")
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key
    bad = tmp_path / "wrong.pth"
    torch.save({"stem.0.conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="wrong.pth"):
        load_weights(target, bad, "afformer")
