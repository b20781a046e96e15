"""Sliding-window inference (mmseg grid semantics) and TTA."""
import pytest
import torch
from torch import nn

from ssaseg.engine.inference import predict_probs, slide_logits, slide_windows


def test_window_grid_matches_mmseg_formula():
    # ADE slide 512/341 on a 512x683 image: rows 1, cols max(683-512+340,0)//341+1 = 2
    wins = slide_windows(512, 683, (512, 512), (341, 341))
    assert wins == [(0, 512, 0, 512), (0, 512, 171, 683)]
    # image smaller than the crop: one window covering the image
    assert slide_windows(100, 80, (512, 512), (341, 341)) == [(0, 100, 0, 80)]
    wins = slide_windows(1000, 1000, (512, 512), (341, 341))
    assert len(wins) == 9 and all(y2 - y1 == 512 and x2 - x1 == 512 for y1, y2, x1, x2 in wins)
    assert wins[-1] == (488, 1000, 488, 1000)


class PointwiseModel(nn.Module):
    """A 1x1 conv: translation-equivariant, so slide == whole exactly (up to float summation)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("size", [(96, 160), (64, 64), (40, 200)])
def test_slide_equals_whole_for_pointwise_model(size):
    model = PointwiseModel().eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        whole = model(x)
        slide = slide_logits(model, x, crop=(64, 64), stride=(40, 40), max_batch=3)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-5)
    probs_w = predict_probs(model, x, (50, 70), mode="whole")
    probs_s = predict_probs(model, x, (50, 70), mode="slide", crop=(64, 64), stride=(40, 40))
    torch.testing.assert_close(probs_s, probs_w, rtol=1e-5, atol=1e-5)
    assert probs_w.shape == (2, 5, 50, 70)


def test_flip_and_multiscale_average_softmax():
    model = PointwiseModel().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        single = predict_probs(model, x, (32, 32))
        flipped = predict_probs(model, x, (32, 32), flip=True)
        multi = predict_probs(model, x, (32, 32), scales=(0.5, 1.0), resize_to_multiple=8)
    torch.testing.assert_close(flipped, single)  # a pointwise model is flip-equivariant
    assert torch.allclose(multi.sum(1), torch.ones(1, 32, 32))
    assert not torch.allclose(multi, single)  # 0.5 scale is a different (blurred) input
    with pytest.raises(ValueError, match="whole"):
        predict_probs(model, x, (32, 32), mode="sliding")
