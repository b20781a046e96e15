"""``ssaseg benchmark``: every complexity figure of registry models, next to the paper's.

:func:`benchmark_model` measures one (model, classifier) pair with the counters of
:mod:`ssaseg.complexity.counter`; :func:`format_rows` renders the rows (with the published
figures of :mod:`ssaseg.complexity.paper` when comparing) through :func:`ssaseg.tables.render_table`;
:func:`add_arguments` / :func:`run` implement the CLI command.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from torch import nn

from ..classifiers import CLASSIFIERS
from ..tables import render_table
from . import paper
from .counter import ParamCount, latency_ms, mmcv_macs_by_module, params, true_gflops
from .paper import PAPER_CLASSIFIER, reference_convention_gmacs, reference_figure

__all__ = [
    "BenchmarkRow",
    "add_arguments",
    "benchmark_model",
    "classifier_order",
    "device_label",
    "fmt_delta",
    "fmt_number",
    "format_rows",
    "run",
]

@dataclass
class BenchmarkRow:
    """Every complexity figure of one (model, classifier) pair; ``error`` when it failed.

    GMACs / GFLOPs are per 1x3xHxW image; ``latency_ms`` is ``None`` when not measured.
    """

    model: str
    classifier: str
    #: C, the width of the feature map the classifier reads (``decoder.channels``).
    channels: int | None = None
    params: ParamCount | None = None
    gmacs: float | None = None
    #: the part of ``gmacs`` spent in ``nn.BatchNorm2d``: mmseg configs build most of those as
    #: SyncBN, which mmcv does not count, so published figures usually exclude it.
    gmacs_batchnorm: float | None = None
    true_gflops: float | None = None
    latency_ms: float | None = None
    error: str | None = None


def benchmark_model(
    name: str,
    classifier: str = PAPER_CLASSIFIER,
    num_classes: int = 150,
    size: int = 512,
    runs: int = 10,
    latency: bool = True,
    device: torch.device | str | None = None,
) -> BenchmarkRow:
    """Build ``name`` with ``classifier``, deploy it and measure every complexity figure."""
    from ..models import create_model

    dev = torch.device(device) if device is not None else _default_device()
    row = BenchmarkRow(name, classifier)
    model = create_model(name, num_classes=num_classes, classifier=classifier)
    row.params = params(model)
    row.channels = getattr(getattr(model, "decoder", None), "channels", None)
    model.deploy()
    model.to(dev)
    shape = (1, 3, size, size)
    per_module = mmcv_macs_by_module(model, shape)
    row.gmacs = sum(per_module.values()) / 1e9
    row.gmacs_batchnorm = (
        sum(v for k, v in per_module.items() if type(model.get_submodule(k)) is nn.BatchNorm2d) / 1e9
    )
    row.true_gflops = true_gflops(model, shape)
    if latency:
        row.latency_ms = latency_ms(model, shape, runs=runs, warmup=min(5, runs))
    return row


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_label(device: torch.device | str | None = None) -> str:
    """A short name of the machine latency was measured on (GPU name, or CPU model)."""
    dev = torch.device(device) if device is not None else _default_device()
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def fmt_delta(ours: float | None, ref: float | None) -> str:
    """Relative difference of ``ours`` to ``ref`` as ``"+1.2%"`` (``"–"`` when unknown)."""
    if ours is None or ref is None or ref == 0:
        return "–"
    delta = 100.0 * (ours - ref) / ref
    return "±0.0%" if abs(delta) < 0.05 else f"{delta:+.1f}%"


def fmt_number(value: float | None, spec: str = ".2f") -> str:
    """``format(value, spec)``, or ``"–"`` for a missing value."""
    return "–" if value is None else format(value, spec)


def classifier_order() -> tuple[str, ...]:
    """Every registered classifier (``ssaseg.classifiers.CLASSIFIERS``), the paper's first."""
    return (PAPER_CLASSIFIER, *(k for k in CLASSIFIERS if k != PAPER_CLASSIFIER))


def format_rows(rows: list[BenchmarkRow], compare: bool, fmt: str, device: str) -> str:
    """Render benchmark rows as a markdown table (``"md"``) or an aligned text table."""
    header = [
        "model",
        "classifier",
        "params train (M)",
        "params inference (M)",
        "GMACs (mmcv)",
        "true GFLOPs",
        f"latency ms ({device})",
    ]
    if compare:
        # README-convention params: aux heads in, SSA teacher out (see ParamCount.readme).
        # Reference-config GMACs: BatchNorm left out where the reference used SyncBN.
        header += [
            "params README conv. (M)",
            "paper params (M)",
            "Δ params",
            "GMACs, ref. norms",
            "paper GFLOPs",
            "Δ GMACs",
            "paper latency ms",
        ]
    body = []
    for r in rows:
        if r.error is not None:
            cells = [r.model, r.classifier, f"error: {r.error}"] + [""] * (len(header) - 3)
            body.append(cells)
            continue
        cells = [
            r.model,
            r.classifier,
            fmt_number(r.params and r.params.train / 1e6, ".2f"),
            fmt_number(r.params and r.params.inference / 1e6, ".2f"),
            fmt_number(r.gmacs, ".2f"),
            fmt_number(r.true_gflops, ".2f"),
            fmt_number(r.latency_ms, ".1f"),
        ]
        if compare:
            ref = reference_figure(r.model, r.classifier)
            p_readme = r.params and r.params.readme / 1e6
            ref_gmacs = reference_convention_gmacs(r, ref)
            cells += [
                fmt_number(p_readme, ".2f"),
                fmt_number(ref and ref.params_m, ".2f"),
                fmt_delta(p_readme, ref and ref.params_m),
                fmt_number(ref_gmacs, ".2f"),
                fmt_number(ref and ref.gflops, ".2f"),
                fmt_delta(ref_gmacs, ref and ref.gflops),
                fmt_number(ref and ref.latency_ms, ".1f"),
            ]
        body.append(cells)
    return render_table(header, body, fmt="markdown" if fmt == "md" else "plain")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``ssaseg benchmark``."""
    parser.add_argument("model", nargs="?", help="registry name (see ssaseg.list_models()); omit with --all")
    parser.add_argument("--all", action="store_true", help="every registered model of the paper's table, with the published figures")
    parser.add_argument("--num-classes", type=int, default=150, help="K (150 = ADE20K)")
    parser.add_argument("--size", type=int, default=512, help="square input size (a multiple of 32)")
    parser.add_argument(
        "--classifier", choices=(*classifier_order(), "all"), default=PAPER_CLASSIFIER,
        help="a registered classifier, or all = every registered one",
    )
    parser.add_argument("--runs", type=int, default=20, help="timed runs for the latency median")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--format", choices=("md", "table"), default="table")
    return parser


def run(args: argparse.Namespace) -> int:
    """``ssaseg benchmark``: print the complexity table; exit code 1 if a model failed."""
    from ..models import list_models

    if args.size <= 0 or args.size % 32:
        print(f"error: --size must be a positive multiple of 32, got {args.size}", file=sys.stderr)
        return 2
    if args.runs < 1:
        print(f"error: --runs must be >= 1, got {args.runs}", file=sys.stderr)
        return 2
    available = list_models()
    if args.all:
        if args.model:
            print("error: give either MODEL or --all, not both", file=sys.stderr)
            return 2
        zoo = paper.ZOO_ORDER
        names = [n for n in zoo if n in available] + [n for n in available if n not in zoo]
        missing = [n for n in zoo if n not in available]
        if missing:
            print(f"note: not registered (skipped): {', '.join(missing)}", file=sys.stderr)
    elif args.model:
        if args.model not in available:
            import difflib

            close = difflib.get_close_matches(args.model, available, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            print(f"error: unknown model {args.model!r}{hint} (registered: {', '.join(available) or 'none'})", file=sys.stderr)
            return 2
        names = [args.model]
    else:
        print("error: give a MODEL name or --all", file=sys.stderr)
        return 2
    try:
        device = torch.device(args.device) if args.device else _default_device()
    except RuntimeError as exc:
        print(f"error: bad --device {args.device!r}: {exc}", file=sys.stderr)
        return 2
    classifiers = classifier_order() if args.classifier == "all" else (args.classifier,)
    rows: list[BenchmarkRow] = []
    for name in names:
        for kind in classifiers:
            try:
                rows.append(
                    benchmark_model(name, kind, args.num_classes, args.size, args.runs, not args.no_latency, device)
                )
            except Exception as exc:  # one broken model must not hide the others' figures
                rows.append(BenchmarkRow(name, kind, error=f"{type(exc).__name__}: {exc}"))
    label = "not measured" if args.no_latency else device_label(device)
    print(format_rows(rows, compare=args.all, fmt=args.format, device=label))
    if args.all or args.size != 512 or args.num_classes != 150:
        print(
            f"\nGMACs: mmcv 1.x convention (multiply-add = 1, modules only) at {args.size}x{args.size}, "
            f"K={args.num_classes}; true GFLOPs: torch.utils.flop_counter (2 per MAC, matmuls included). "
            "Paper figures: ADE20K (K=150), 512x512."
        )
    return 1 if any(r.error for r in rows) else 0
