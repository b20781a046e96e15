"""classifier="cac" for every registered model, the _cac configs, and one real training step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ssaseg
from ssaseg.classifiers import CACClassifier
from ssaseg.complexity import params
from ssaseg.config import load_config

CONFIGS = Path(ssaseg.__file__).parent / "configs"


@pytest.mark.parametrize("name", ssaseg.list_models())
def test_every_model_takes_cac(name: str) -> None:
    """Built on the meta device (structure only): the CAC head reads the decoder's width, adds
    1.5C² + C parameters at inference over a 1x1 conv (README convention) and deploys."""
    with torch.device("meta"):
        model = ssaseg.create_model(name, 150, classifier="cac")
    assert isinstance(model.classifier, CACClassifier)
    c = model.classifier.in_channels
    counts = params(model)
    assert counts.train - counts.readme == 3 * c * c // 2 + c  # the train-only oracle MLP
    model.deploy()
    assert not hasattr(model.classifier, "teacher_semantic_proj")


@pytest.mark.parametrize("row", ["segnext/segnext_t", "seaformer/seaformer_b", "ocrnet/ocrnet_hrnet_w48"])
def test_cac_configs_mirror_ssa(row: str) -> None:
    cac = load_config(CONFIGS / f"{row}_512x512_160k_ade20k_cac.yaml")
    ssa = load_config(CONFIGS / f"{row}_512x512_160k_ade20k_ssa.yaml")
    assert cac["model"]["classifier"] == "cac"
    for section in ("data", "optimizer", "schedule", "evaluation"):
        assert cac[section] == ssa[section]


def test_train_step_and_eval_with_cac() -> None:
    torch.manual_seed(0)
    model = ssaseg.create_model("segformer_b0", 5, classifier="cac", channels=32)
    images, targets = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    losses = model.train()(images, targets)
    assert set(losses) == {"ce", "ce_coarse", "ce_teacher", "kd_response", "loss"}
    losses["loss"].backward()
    assert model.classifier.teacher_semantic_proj[0].weight.grad.abs().sum() > 0
    logits = model.eval().deploy()(images)
    assert logits.shape == (2, 5, 64, 64) and torch.isfinite(logits).all()
