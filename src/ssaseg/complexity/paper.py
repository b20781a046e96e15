"""Published complexity figures (ADE20K, 512x512) that ssaseg's measurements are compared with.

Data only: the SSA-Seg README's +SSA rows and trusted figures for linear-classifier baselines,
one typed :class:`PaperFigure` row per registry name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .benchmark import BenchmarkRow

__all__ = [
    "BASELINE_CLASSIFIER",
    "BASELINE_FIGURES",
    "PAPER_CLASSIFIER",
    "PAPER_FIGURES",
    "PaperFigure",
    "ZOO_ORDER",
    "reference_convention_gmacs",
    "reference_figure",
]


@dataclass(frozen=True)
class PaperFigure:
    """Published complexity of one model: params (M), "FLOPs" (G, mmcv MACs), latency (ms).

    ``syncbn``: the reference config builds the model's BatchNorms as ``SyncBN``, which mmcv's
    exact-type table does not count (mmseg's get_flops does not revert SyncBN), so the
    published figure excludes the BatchNorm MACs that ssaseg's plain BatchNorm2d shows.
    """

    params_m: float
    gflops: float
    latency_ms: float | None = None
    source: str = "SSA-Seg README, ADE20K 512x512 (+SSA)"
    syncbn: bool = True


#: The classifier (``ssaseg.classifiers.CLASSIFIERS`` key) the paper's table reports, and the
#: one its baselines use.
PAPER_CLASSIFIER = "ssa"
BASELINE_CLASSIFIER = "linear"

#: The SSA-Seg README's +SSA rows (docs/algorithm.md §15.1). Latency: mmseg benchmark, GPU unstated.
PAPER_FIGURES: dict[str, PaperFigure] = {
    "ocrnet_hrnet_w48": PaperFigure(8.7, 165.0, 69.3),
    "upernet_swin_t": PaperFigure(61.1, 236.3, 54.3),
    "segformer_b5": PaperFigure(82.3, 52.6, 70.1),
    "upernet_swin_l": PaperFigure(234.9, 405.2, 107.3),
    "upernet_vit_adapter_l": PaperFigure(364.9, 616.3, 284.9),
    "afformer_b": PaperFigure(3.3, 4.4, 26.0, syncbn=False),  # plain nn.BatchNorm2d (docs/algorithm.md §11.1)
    "seaformer_b": PaperFigure(8.8, 1.8, 27.3),
    "segnext_t": PaperFigure(4.6, 6.3, 23.3),
    "seaformer_l": PaperFigure(14.2, 6.4, 29.9),
    "cgrseg_b": PaperFigure(19.3, 7.6, 36.0),
    "cgrseg_l": PaperFigure(35.8, 14.8, 42.6),
}

#: Linear-classifier baselines with a trusted mmcv-1.x figure at 512x512 (mmcv 1.7.2's
#: ``get_flops`` on faithful re-implementations of the mmseg configs, SyncBN norms uncounted).
BASELINE_FIGURES: dict[str, PaperFigure] = {
    "segformer_b5": PaperFigure(82.01, 52.45, None, "mmcv 1.7.2 get_flops, mmseg config"),
    "segnext_t": PaperFigure(4.26, 6.20, None, "mmcv 1.7.2 get_flops, mmseg config"),
}

#: Registry names the paper table covers, plus baselines-only models, in README order.
ZOO_ORDER: tuple[str, ...] = (*PAPER_FIGURES, "fcn_r101_d8")


def reference_figure(name: str, classifier: str) -> PaperFigure | None:
    """The published figure to compare an ssaseg model built with ``classifier`` against, if any."""
    table = {PAPER_CLASSIFIER: PAPER_FIGURES, BASELINE_CLASSIFIER: BASELINE_FIGURES}.get(classifier, {})
    return table.get(name)


def reference_convention_gmacs(row: BenchmarkRow, ref: PaperFigure | None) -> float | None:
    """``row.gmacs`` with the norms counted as the reference config's get_flops run counted
    them: BatchNorm MACs left out when the reference built them as SyncBN."""
    if row.gmacs is None or ref is None:
        return None
    if ref.syncbn and row.gmacs_batchnorm is not None:
        return row.gmacs - row.gmacs_batchnorm
    return row.gmacs
