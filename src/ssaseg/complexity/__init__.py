"""Model complexity: counters, the paper's published figures, and the ``ssaseg benchmark`` driver.

* :mod:`ssaseg.complexity.counter`: parameters, GMACs in the mmcv 1.x convention, true FLOPs
  (``torch.utils.flop_counter``) and latency of any ``nn.Module``.
* :mod:`ssaseg.complexity.paper`: the SSA-Seg README's figures and trusted baselines (data).
* :mod:`ssaseg.complexity.benchmark`: measuring registry models and the comparison table.

Everything is re-exported here, so ``from ssaseg.complexity import mmcv_gmacs`` keeps working.
"""
from __future__ import annotations

from .benchmark import (
    BenchmarkRow,
    add_arguments,
    benchmark_model,
    classifier_order,
    device_label,
    fmt_delta,
    fmt_number,
    format_rows,
    run,
)
from .counter import ParamCount, latency_ms, meta_copy, mmcv_gmacs, mmcv_macs_by_module, params, true_gflops
from .paper import (
    BASELINE_CLASSIFIER,
    BASELINE_FIGURES,
    PAPER_CLASSIFIER,
    PAPER_FIGURES,
    ZOO_ORDER,
    PaperFigure,
    reference_convention_gmacs,
    reference_figure,
)

__all__ = [
    "BASELINE_CLASSIFIER",
    "BASELINE_FIGURES",
    "PAPER_CLASSIFIER",
    "PAPER_FIGURES",
    "ZOO_ORDER",
    "BenchmarkRow",
    "PaperFigure",
    "ParamCount",
    "add_arguments",
    "benchmark_model",
    "classifier_order",
    "device_label",
    "fmt_delta",
    "fmt_number",
    "format_rows",
    "latency_ms",
    "meta_copy",
    "mmcv_gmacs",
    "mmcv_macs_by_module",
    "params",
    "reference_convention_gmacs",
    "reference_figure",
    "run",
    "true_gflops",
]
