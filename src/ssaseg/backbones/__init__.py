"""Backbones, one file per architecture. Each satisfies :class:`ssaseg.contracts.Backbone`:
``forward(images (B, 3, H, W)) -> list[(B, out_channels[i], ~H/strides[i], ~W/strides[i])]``."""
