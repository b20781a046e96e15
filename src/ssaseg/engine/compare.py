"""``ssaseg compare``: linear vs CAC vs SSA on the demo data, several seeds each, equal budget.

Every (classifier, seed) run trains ``configs/demo/segformer_b0_<classifier>.yaml`` with
``train.seed = seed`` for the same number of iterations, so for a given seed the three runs see
the same data order and the same backbone/decoder initialisation; only the classifier differs.
The report (``report.md``, ``results.json``, ``compare.png`` in ``out_dir``) gives mean ± sample
std over the seeds of mIoU / mAcc / aAcc, the per-class IoU, the train-step time and the
parameter counts, plus every run's own numbers.

A run whose ``metrics.json`` already exists for the same config is not trained again, so an
interrupted comparison continues where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ..fileio import atomic_write, atomic_write_text

__all__ = ["RunSummary", "run_compare", "DEFAULT_CLASSIFIERS", "DEFAULT_SEEDS"]

DEFAULT_CLASSIFIERS = ("linear", "cac", "ssa")
DEFAULT_SEEDS = (0, 1, 2)
_LABELS = {"linear": "linear", "cac": "CAC", "ssa": "SSA"}


@dataclass
class RunSummary:
    """The numbers of one (classifier, seed) run."""

    classifier: str
    seed: int
    iterations: int
    mIoU: float
    mAcc: float
    aAcc: float
    IoU: dict[str, float]
    train_time: float  # s, training iterations only (evaluation excluded)
    step_ms: float  # train_time / iterations, data loading included
    params_train: int
    params_inference: int


def _demo_config(classifier: str) -> Path:
    from ..config import ConfigError

    path = Path(__file__).resolve().parents[1] / "configs" / "demo" / f"segformer_b0_{classifier}.yaml"
    if not path.is_file():
        raise ConfigError(f"no demo config for classifier {classifier!r} (looked for {path})")
    return path


def _overrides(work_dir: Path, seed: int, iters: int | None) -> list[str]:
    overrides = [f"train.work_dir={work_dir}", f"train.seed={seed}"]
    if iters is not None:
        overrides += [
            f"schedule.max_iters={iters}",
            f"train.eval_interval={iters}",
            f"train.checkpoint_interval={iters}",
            f"schedule.warmup_iters={min(iters // 10, 50)}",
        ]
    return overrides


def _train_one(cfg: dict, device: str | None, progress: bool) -> RunSummary:
    from ..complexity import params
    from ..engine.build import build_model
    from .trainer import train

    result = train(cfg, device=device, progress=progress, tensorboard=False)
    metrics = result.metrics or {}
    counts = params(build_model({**cfg, "model": {**cfg["model"], "checkpoint": None, "backbone_weights": None}}))
    return RunSummary(
        classifier=cfg["model"]["classifier"],
        seed=int(cfg["train"]["seed"]),
        iterations=result.iterations,
        mIoU=float(metrics.get("mIoU", math.nan)),
        mAcc=float(metrics.get("mAcc", math.nan)),
        aAcc=float(metrics.get("aAcc", math.nan)),
        IoU={str(k): float(v) for k, v in metrics.get("IoU", {}).items()},
        train_time=result.train_time,
        step_ms=1000.0 * result.train_time / max(result.iterations, 1),
        params_train=counts.train,
        params_inference=counts.inference,
    )


def _cached(path: Path, cfg: dict) -> RunSummary | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        if stored.get("config") != json.loads(json.dumps(cfg)):
            return None
        return RunSummary(**stored["summary"])
    except (ValueError, TypeError, KeyError):
        return None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return math.nan, math.nan
    return statistics.fmean(clean), statistics.stdev(clean) if len(clean) > 1 else math.nan


def _pm(values: Sequence[float], digits: int = 2) -> str:
    mean, std = _mean_std(values)
    if math.isnan(mean):
        return "nan"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _by_classifier(runs: list[RunSummary]) -> dict[str, list[RunSummary]]:
    grouped: dict[str, list[RunSummary]] = {}
    for run in runs:
        grouped.setdefault(run.classifier, []).append(run)
    return grouped


def _report(runs: list[RunSummary], cfg: dict, seeds: Sequence[int], wall: float) -> str:
    from ..tables import render_table

    grouped = _by_classifier(runs)
    summary = [
        [
            _LABELS.get(name, name),
            _pm([r.mIoU for r in rs]),
            _pm([r.mAcc for r in rs]),
            _pm([r.aAcc for r in rs]),
            _pm([r.step_ms for r in rs], 0),
            f"{rs[0].params_inference / 1e6:.3f}",
            f"{rs[0].params_train / 1e6:.3f}",
        ]
        for name, rs in grouped.items()
    ]
    per_run = [
        [_LABELS.get(r.classifier, r.classifier), str(r.seed), f"{r.mIoU:.2f}", f"{r.mAcc:.2f}", f"{r.aAcc:.2f}",
         f"{r.step_ms:.0f}", f"{r.train_time:.1f}"]
        for r in runs
    ]
    classes = list(runs[0].IoU)
    per_class = [[c] + [_pm([r.IoU.get(c, math.nan) for r in rs], 1) for rs in grouped.values()] for c in classes]
    n = len(seeds)
    lines = [
        "# ssaseg compare: linear vs CAC vs SSA pixel classifiers",
        "",
        f"Model `{cfg['model']['name']}` with `{cfg['model']['kwargs']}`, trained from scratch for "
        f"{cfg['schedule']['max_iters']} iterations per run (batch {cfg['data']['batch_size']}, crop "
        f"{cfg['data']['train_pipeline']['crop_size']}, AdamW lr {cfg['optimizer']['lr']}) on the synthetic "
        f"14-class demo dataset, seeds {', '.join(map(str, seeds))}; evaluated on its validation split (single "
        "scale, whole image). For one seed every classifier sees the same data order and the same "
        "backbone and decoder initialisation.",
        "",
        f"Mean ± sample standard deviation over {n} seed{'s' if n > 1 else ''} (%). Train step: wall time per "
        "training iteration, data loading included, evaluation excluded; params in millions "
        "(inference = after `deploy()`).",
        "",
        render_table(["classifier", "mIoU", "mAcc", "aAcc", "train step (ms)", "params (M)", "params train (M)"], summary),
        "",
        "## Per-class IoU (%, mean ± std)",
        "",
        render_table(["class", *(_LABELS.get(k, k) for k in grouped)], per_class),
        "",
        "## Every run",
        "",
        render_table(["classifier", "seed", "mIoU", "mAcc", "aAcc", "train step (ms)", "train time (s)"], per_run),
        "",
        "![comparison](compare.png)",
        "",
        f"Whole comparison: {wall:.0f} s wall time (cached runs count 0). Timings are from whatever else ran on "
        "the machine at the same time.",
        "",
    ]
    return "\n".join(lines)


def _plot(runs: list[RunSummary], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _by_classifier(runs)
    names = list(grouped)
    classes = list(runs[0].IoU)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1, 3]})
    metrics = ("mIoU", "mAcc", "aAcc")
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rs = grouped[name]
        for j, metric in enumerate(metrics):
            values = [getattr(r, metric) for r in rs]
            mean, std = _mean_std(values)
            x = j + (i - (len(names) - 1) / 2) * width
            left.bar(x, mean, width, yerr=0 if math.isnan(std) else std, color=f"C{i}", alpha=0.6,
                     capsize=3, label=_LABELS.get(name, name) if j == 0 else None)
            left.scatter([x] * len(values), values, color=f"C{i}", s=10, zorder=3)
        iou_mean, iou_std = zip(*(_mean_std([r.IoU.get(c, math.nan) for r in rs]) for c in classes))
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(classes))]
        right.bar(xs, iou_mean, width, yerr=[0 if math.isnan(s) else s for s in iou_std], color=f"C{i}",
                  alpha=0.8, capsize=2, label=_LABELS.get(name, name))
    left.set_xticks(range(len(metrics)), metrics)
    left.set_ylabel("%")
    left.set_title(f"summary (bars: mean ± std, dots: seeds, n={len(runs) // max(len(names), 1)})")
    right.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    right.set_ylabel("IoU (%)")
    right.set_title("per-class IoU (mean ± std)")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))


def run_compare(
    out_dir: str | os.PathLike = "runs/compare",
    seeds: Sequence[int] = DEFAULT_SEEDS,
    classifiers: Sequence[str] = DEFAULT_CLASSIFIERS,
    iters: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> list[RunSummary]:
    """Train every classifier with every seed on the demo data and write the report.

    Args:
        out_dir: where the runs (``<classifier>/seed<k>``) and the report go.
        seeds: ``train.seed`` of the runs; at least 2 for a standard deviation.
        classifiers: registered classifier names with a ``configs/demo/segformer_b0_<name>.yaml``.
        iters: training iterations of every run (default: the demo config's).
        device: "cpu" or "cuda" (default: CUDA when available).
    Returns:
        The run summaries, classifier-major.
    """
    from ..config import ConfigError, load_config
    from ..data.demo import ensure_demo_dataset

    if not seeds:
        raise ConfigError("compare needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"compare: seeds must be distinct, got {list(seeds)}")
    if iters is not None and iters < 1:
        raise ConfigError(f"compare: --iters must be positive, got {iters}")
    start = time.perf_counter()
    out = Path(out_dir)
    configs = {name: _demo_config(name) for name in classifiers}
    runs: list[RunSummary] = []
    first_cfg: dict[str, Any] | None = None
    for name in classifiers:
        for seed in seeds:
            work_dir = out / name / f"seed{seed}"
            cfg = load_config(configs[name], _overrides(work_dir, seed, iters))
            if first_cfg is None:
                first_cfg = cfg
                ensure_demo_dataset(cfg["data"]["root"])
            record = work_dir / "metrics.json"
            summary = _cached(record, cfg)
            if summary is None:
                print(f"compare: {name}, seed {seed} ({cfg['schedule']['max_iters']} iterations)")
                summary = _train_one(cfg, device, progress)
                atomic_write_text(record, json.dumps({"config": cfg, "summary": asdict(summary)}, indent=2))
            else:
                print(f"compare: {name}, seed {seed}: reusing {record}")
            runs.append(summary)
    assert first_cfg is not None
    report = _report(runs, first_cfg, seeds, time.perf_counter() - start)
    atomic_write_text(out / "results.json", json.dumps([asdict(r) for r in runs], indent=2))
    _plot(runs, out / "compare.png")
    atomic_write_text(out / "report.md", report)
    print(report.split("## Per-class IoU")[0].rstrip())
    print(f"\nreport: {out / 'report.md'}  plot: {out / 'compare.png'}")
    return runs
