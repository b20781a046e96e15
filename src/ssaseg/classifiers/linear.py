"""The vanilla pixel classifier: mmseg's ``cls_seg`` (Dropout2d, then a 1x1 conv)."""
from __future__ import annotations

from torch import Tensor, nn

from .losses import Scored, check_target, pixel_labels, reduce_cross_entropy, upsampled_stats


def cls_seg(in_channels: int, num_classes: int, dropout: float) -> tuple[nn.Module, nn.Conv2d]:
    """mmseg's ``cls_seg``: Dropout2d (Identity when ``dropout`` is 0) and the 1x1 conv with its
    head init N(0, 0.01), bias 0. SSA and CAC read the conv's weight as the fixed prototypes S."""
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.normal_(conv.weight, mean=0.0, std=0.01)
    nn.init.zeros_(conv.bias)
    return (nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()), conv


class LinearClassifier(nn.Module):
    """Fixed-prototype 1x1 classifier.

    Args:
        in_channels: C, channels of the decoder feature map.
        num_classes: K.
        dropout: Dropout2d probability before the 1x1 conv (0 disables it, as OCRNet's heads).
        ignore_index: label value that carries no loss.
        loss_weight: multiplies the CE term (0.4 for the paper's auxiliary heads).
        align_corners: flag of the bilinear resize of logits to the label size in the loss.

    ``forward(feat (B,C,h,w))`` -> logits ``(B,K,h,w)`` in eval mode;
    ``forward(feat, target (B,H,W))`` -> ``(logits, {"ce": loss})`` in train mode.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout: float = 0.1,
        ignore_index: int = 255,
        loss_weight: float = 1.0,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.align_corners = align_corners
        self.dropout, self.conv_seg = cls_seg(in_channels, num_classes, dropout)

    def forward(self, feat: Tensor, target: Tensor | None = None):
        logits = self.conv_seg(self.dropout(feat))
        if not self.training:
            return logits
        if target is None:
            raise ValueError("LinearClassifier in train mode needs target (B, H, W)")
        check_target(target, self.num_classes, self.ignore_index)
        labels = pixel_labels(target, self.num_classes, self.ignore_index)
        (stats,) = upsampled_stats([Scored(logits.float())], labels, self.align_corners)
        ce = reduce_cross_entropy(stats, all_pixels=True)
        return logits, {"ce": self.loss_weight * ce}

    def deploy(self) -> "LinearClassifier":
        """Nothing is train-only here; present for interface symmetry with SSAClassifier."""
        return self
