"""Hugging Face ``transformers`` SegFormer and UperNet with an ssaseg pixel classifier.

:class:`SegformerWithPixelClassifier` and :class:`UperNetWithPixelClassifier` subclass
``SegformerForSemanticSegmentation`` / ``UperNetForSemanticSegmentation``: the HF encoder and
decode head are unchanged except that the head's dropout and 1x1 classifier are removed, so the
head returns the feature map F that an ssaseg classifier (``"ssa"``, ``"cac"``, ``"linear"``)
reads. The choice lives in the HF config (``ssaseg_classifier``, ``ssaseg_classifier_kwargs``),
so ``save_pretrained`` / ``from_pretrained`` round-trip and the HF ``Trainer`` works::

    model = SegformerWithPixelClassifier.from_pretrained("nvidia/mit-b0", num_labels=150, ssaseg_classifier="ssa")
    out = model(pixel_values, labels=labels)      # SemanticSegmenterOutput(loss, logits)

``forward(pixel_values (B,3,H,W), labels (B,H,W) long | None) -> SemanticSegmenterOutput``:

* train mode with ``labels``: ``loss`` is the sum of the classifier's loss terms (SSA: its eight
  terms, CAC: four, linear: CE), plus UperNet's auxiliary CE times ``auxiliary_loss_weight``;
* eval mode: the classifier's inference logits; with ``labels``, ``loss`` is HF's own CE of the
  upsampled logits (comparable across classifiers).

``logits`` have HF's shapes: SegFormer (B,K,H/4,W/4), UperNet (B,K,H,W).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import SegformerForSemanticSegmentation, UperNetForSemanticSegmentation
from transformers.modeling_outputs import SemanticSegmenterOutput

from ..classifiers import build_classifier

__all__ = ["SegformerWithPixelClassifier", "UperNetWithPixelClassifier", "with_pixel_classifier"]


class _PixelClassifierMixin:
    """Builds ``self.pixel_classifier`` from the config and keeps ssaseg's init for it."""

    # The loss is a per-batch mean: the HF Trainer must scale it for gradient accumulation
    # itself rather than pass ``num_items_in_batch`` through ``**kwargs``.
    accepts_loss_kwargs = False

    def _build_pixel_classifier(
        self, channels: int, ignore_index: int, dropout: float | None, kind: str | None, kwargs: dict | None
    ) -> None:
        config = self.config
        # from_pretrained passes config keys that the stored config lacks as __init__ arguments.
        if kind is not None:
            config.ssaseg_classifier = kind
        if kwargs is not None:
            config.ssaseg_classifier_kwargs = dict(kwargs)
        kind = getattr(config, "ssaseg_classifier", "ssa")
        kwargs = dict(getattr(config, "ssaseg_classifier_kwargs", None) or {})
        kwargs.setdefault("ignore_index", ignore_index)
        if dropout is not None:
            kwargs.setdefault("dropout", dropout)
        config.ssaseg_classifier = kind
        config.ssaseg_classifier_kwargs = {k: v for k, v in kwargs.items() if k != "ignore_index"}
        self.pixel_classifier = build_classifier(kind, channels, config.num_labels, **kwargs)
        for module in self.pixel_classifier.modules():
            module._ssaseg_module = True

    def _init_weights(self, module: nn.Module) -> None:
        # Missing classifier weights (e.g. from_pretrained of a plain HF checkpoint) get ssaseg's
        # init, not HF's N(0, 0.02): conv_seg N(0, 0.01) with zero bias, PyTorch's default for the
        # rest (part of the SSA / CAC recipe). Loaded weights carry HF's flag and are kept.
        if getattr(module, "_ssaseg_module", False):
            own = list(module.parameters(recurse=False))
            if own and not any(getattr(p, "_is_hf_initialized", False) for p in own):
                with torch.no_grad():
                    if module is getattr(self.pixel_classifier, "conv_seg", None):
                        nn.init.normal_(module.weight, 0.0, 0.01)
                        nn.init.zeros_(module.bias)
                    elif hasattr(module, "reset_parameters"):
                        module.reset_parameters()
            return
        super()._init_weights(module)

    def _classify(self, feat: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None, bool]:
        """(logits, loss, upsampled-CE-needed) for F and optional labels."""
        if self.pixel_classifier.training:
            if labels is None:
                raise ValueError("in train mode the model needs labels=(B, H, W); call model.eval() for inference")
            logits, losses = self.pixel_classifier(feat, labels.long())
            return logits, torch.stack([v.float() for v in losses.values()]).sum(), False
        return self.pixel_classifier(feat), None, labels is not None


class SegformerWithPixelClassifier(_PixelClassifierMixin, SegformerForSemanticSegmentation):
    """HF SegFormer (MiT encoder + all-MLP head) whose 1x1 classifier is an ssaseg classifier.

    Config extras: ``ssaseg_classifier`` (default ``"ssa"``) and ``ssaseg_classifier_kwargs``;
    the classifier's dropout defaults to ``classifier_dropout_prob`` and its ignore index to
    ``semantic_loss_ignore_index``. C = ``decoder_hidden_size``.
    """

    def __init__(self, config, ssaseg_classifier: str | None = None, ssaseg_classifier_kwargs: dict | None = None) -> None:
        super().__init__(config)
        # The head then returns F (B, decoder_hidden_size, H/4, W/4), before dropout.
        self.decode_head.dropout = nn.Identity()
        self.decode_head.classifier = nn.Identity()
        self._build_pixel_classifier(
            config.decoder_hidden_size, config.semantic_loss_ignore_index, config.classifier_dropout_prob,
            ssaseg_classifier, ssaseg_classifier_kwargs,
        )

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, **kwargs) -> SemanticSegmenterOutput:
        outputs = super().forward(pixel_values, **kwargs)
        logits, loss, needs_ce = self._classify(outputs.logits, labels)
        if needs_ce:
            up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(up, labels.long(), ignore_index=self.config.semantic_loss_ignore_index)
        return SemanticSegmenterOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class UperNetWithPixelClassifier(_PixelClassifierMixin, UperNetForSemanticSegmentation):
    """HF UperNet (any HF backbone + PPM/FPN head) whose 1x1 classifier is an ssaseg classifier.

    The auxiliary FCN head keeps its HF linear classifier and loss weight. Config extras as
    :class:`SegformerWithPixelClassifier`; the ignore index defaults to ``loss_ignore_index``,
    the dropout to the classifier's (0.1, mmseg's UPerHead). C = ``hidden_size``.
    """

    def __init__(self, config, ssaseg_classifier: str | None = None, ssaseg_classifier_kwargs: dict | None = None) -> None:
        super().__init__(config)
        self.decode_head.classifier = nn.Identity()
        self._build_pixel_classifier(
            config.hidden_size, config.loss_ignore_index, None, ssaseg_classifier, ssaseg_classifier_kwargs
        )

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, **kwargs) -> SemanticSegmenterOutput:
        size = pixel_values.shape[2:]
        outputs = self.backbone.forward_with_filtered_kwargs(pixel_values, **kwargs)
        features = outputs.feature_maps
        logits, loss, needs_ce = self._classify(self.decode_head(features), labels)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        ignore = self.config.loss_ignore_index
        if needs_ce:
            loss = F.cross_entropy(logits, labels.long(), ignore_index=ignore)
        if labels is not None and self.auxiliary_head is not None:
            aux = F.interpolate(self.auxiliary_head(features), size=size, mode="bilinear", align_corners=False)
            loss = loss + self.config.auxiliary_loss_weight * F.cross_entropy(aux, labels.long(), ignore_index=ignore)
        return SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )


_WRAPPERS: dict[type, type] = {
    SegformerForSemanticSegmentation: SegformerWithPixelClassifier,
    UperNetForSemanticSegmentation: UperNetWithPixelClassifier,
}


def _inherit_key_renames() -> None:
    """transformers >= 5 renames legacy checkpoint keys per model class (e.g. SegFormer's
    ``decode_head.linear_c`` -> ``linear_projections``); the wrappers need their parent's renames
    to load Hub checkpoints."""
    try:
        from transformers.conversion_mapping import (
            get_checkpoint_conversion_mapping,
            register_checkpoint_conversion_mapping,
        )
    except ImportError:  # transformers 4: no per-class key renames
        return
    for parent, wrapper in _WRAPPERS.items():
        mapping = get_checkpoint_conversion_mapping(parent.__name__)
        if mapping:
            register_checkpoint_conversion_mapping(wrapper.__name__, mapping, overwrite=True)


_inherit_key_renames()


def with_pixel_classifier(model: nn.Module, classifier: str = "ssa", **classifier_kwargs) -> nn.Module:
    """A copy of an HF SegFormer / UperNet segmentation model (e.g. one fine-tuned from the Hub)
    with its 1x1 classifier replaced by an ssaseg classifier; every other weight is kept.

    Args:
        model: a ``SegformerForSemanticSegmentation`` or ``UperNetForSemanticSegmentation``.
        classifier: ``"ssa"``, ``"cac"`` or ``"linear"``.
        **classifier_kwargs: passed to the classifier (stored in the config).
    """
    wrapper = _WRAPPERS.get(type(model))
    if wrapper is None:
        raise ValueError(
            f"with_pixel_classifier takes SegformerForSemanticSegmentation or UperNetForSemanticSegmentation, "
            f"got {type(model).__name__}"
        )
    config = copy.deepcopy(model.config)
    config.ssaseg_classifier = classifier
    config.ssaseg_classifier_kwargs = dict(classifier_kwargs)
    new = wrapper(config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("decode_head.classifier.")}
    result = new.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("pixel_classifier.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"could not carry the weights over: missing {missing}, unexpected {result.unexpected_keys}")
    return new.to(next(model.parameters()).device)
