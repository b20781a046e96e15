"""Adaptive pixel classifiers (SSA, CAC, linear) on models from other libraries.

* :mod:`ssaseg.integrations.smp`: :func:`~ssaseg.integrations.smp.from_smp` turns a
  segmentation-models-pytorch model into a :class:`~ssaseg.Segmentor` with an ssaseg classifier.
* :mod:`ssaseg.integrations.hf`: Hugging Face ``transformers`` SegFormer and UperNet with an
  ssaseg classifier, returning ``SemanticSegmenterOutput(loss, logits)`` from ``labels=``.
* :mod:`ssaseg.integrations.timm`: ``create_model("tu-<timm name>", ...)``, a timm
  ``features_only`` encoder with one of ssaseg's decoders.
* :mod:`ssaseg.integrations.imports`: ``ssaseg --import MODULE``, user modules that register
  models, datasets or classifiers for the CLI.

Each submodule imports its library only when it is imported itself (docs/integrations.md).
"""
