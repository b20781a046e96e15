"""SSAClassifier and LinearClassifier inputs: half-precision models and label checks."""
from __future__ import annotations

import pytest
import torch

from ssaseg.classifiers import LinearClassifier, SSAClassifier

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", [SSAClassifier, LinearClassifier])
def test_low_precision_model_inference_matches_fp32(kind, dtype):
    torch.manual_seed(0)
    clf = kind(16, 5, dropout=0.0).eval()
    feat = torch.randn(2, 16, 6, 7)
    want = clf(feat)
    low = clf.to(dtype)
    got = low(feat.to(dtype))
    assert got.dtype == dtype and got.shape == want.shape
    # The model's weights were rounded to `dtype`; SSA still computes in fp32 (docs/algorithm.md Q5).
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.15)


def test_half_ssa_trains_with_fp32_losses():
    torch.manual_seed(0)
    clf = SSAClassifier(16, 5, dropout=0.0).to(torch.bfloat16).train()
    feat = torch.randn(2, 16, 6, 6, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 5, (2, 24, 24))
    logits, loss = clf(feat, target)
    assert logits.dtype == torch.bfloat16 and all(v.dtype == torch.float32 for v in loss.values())
    sum(loss.values()).backward()
    assert clf.conv_seg.weight.grad.dtype == torch.bfloat16 and torch.isfinite(feat.grad.float()).all()


@pytest.mark.parametrize("kind", [SSAClassifier, LinearClassifier])
def test_float_targets_are_rejected(kind):
    clf = kind(8, 3).train()
    with pytest.raises(ValueError, match="torch.float32"):
        clf(torch.randn(1, 8, 4, 4), torch.zeros(1, 16, 16))


@pytest.mark.parametrize("kind", [SSAClassifier, LinearClassifier])
@pytest.mark.parametrize("value", [-3, 3, 200])
def test_labels_outside_the_classes_are_rejected(kind, value):
    clf = kind(8, 3).train()
    target = torch.full((1, 16, 16), 255)
    target[0, 5, 5] = value
    with pytest.raises(ValueError, match=rf"label {value}\b.*K = 3"):
        clf(torch.randn(1, 8, 4, 4), target)
