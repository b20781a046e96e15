"""``ssaseg`` command line: train, test, predict, demo, configs, convert, export, prepare, benchmark.

One function per subcommand (``_cmd_<name>``); each imports what it needs when it runs, so that
``ssaseg --help``, ``ssaseg --version`` and ``ssaseg configs ...`` never import torch.

User errors (missing files, unknown config keys, checkpoints that do not fit, unreadable data)
are printed as one paragraph without a traceback and exit with code 2 (set ``SSASEG_DEBUG=1``
to get the traceback instead).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

__all__ = ["main", "run", "build_parser"]

EXIT_USAGE = 2
CONFIG_HELP = "experiment YAML (configs/SCHEMA.md) or the name of a packaged config (ssaseg configs list)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ssaseg")
    except PackageNotFoundError:
        return "0+unknown"


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (value parsed as YAML), e.g. --set optimizer.lr=1e-4; repeatable",
    )


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine import train

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"train.work_dir={args.work_dir}")
    cfg = load_config(_config_path(args.config), overrides)
    result = train(cfg, resume=args.resume, device=args.device, progress=not args.no_progress)
    if result.metrics is not None and _is_main():
        from .engine.logger import format_metrics_table

        print(format_metrics_table(result.metrics))
    if _is_main():
        print(f"checkpoint: {result.checkpoint}  ({result.iterations} iterations, {result.its_per_sec:.2f} it/s)")
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine import test
    from .engine.logger import format_metrics_table

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"train.work_dir={args.work_dir}")
    cfg = load_config(_config_path(args.config), overrides)
    metrics = test(cfg, args.checkpoint, aug_test=args.aug_test, device=args.device, progress=not args.no_progress)
    if _is_main():
        print(format_metrics_table(metrics))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.predict import predict_files

    cfg = load_config(_config_path(args.config), args.overrides) if args.config else None
    if args.overrides and cfg is None:
        raise ValueError("--set needs --config for predict (the stored config is used as is)")
    result = predict_files(args.checkpoint, args.inputs, args.out, cfg=cfg, opacity=args.opacity, device=args.device,
                           overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {len(result.written)} files to {args.out}")
    if result.skipped:
        shown = "; ".join(reason for _, reason in result.skipped[:3]) + (" ..." if len(result.skipped) > 3 else "")
        print(f"ssaseg predict: error: skipped {len(result.skipped)} unreadable input(s): {shown}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .engine.demo import run_demo

    run_demo(out_dir=args.out, iters=args.iters, device=args.device)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .engine.compare import run_compare

    chosen = {k: v for k, v in (("seeds", args.seeds), ("classifiers", args.classifiers)) if v is not None}
    run_compare(args.out, iters=args.iters, device=args.device, progress=not args.no_progress, **chosen)
    return 0


def _config_path(name_or_path: str):
    """A config file: the path itself when it exists, else the packaged config of that name."""
    from .config_catalog import resolve_config

    return resolve_config(name_or_path)


def _cmd_configs(args: argparse.Namespace) -> int:
    from . import config_catalog

    if args.action == "list":
        names = config_catalog.list_configs(args.pattern or "*")
        if not names:
            raise ValueError(f"no packaged config matches {args.pattern!r}; `ssaseg configs list` shows them all")
        print("\n".join(names))
    elif args.action == "show":
        path = config_catalog.find_config(args.name)
        if args.resolved:
            from .config import dump_config, load_config

            print(dump_config(load_config(path)), end="")
        else:
            print(f"# {path}")
            print(path.read_text(encoding="utf-8"), end="")
    else:
        written = config_catalog.copy_config(args.name, args.dest, overwrite=args.overwrite)
        print(f"copied {args.name} to {written[0]} (with its {len(written) - 1} _base_ file(s))")
        print(f"use it with: ssaseg train {written[0]}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .hub import convert_checkpoint

    lines = convert_checkpoint(
        args.source, args.dest, model_name=args.model, num_classes=args.num_classes,
        classifier=args.classifier, config=args.config, deploy=not args.keep_training_modules,
    )
    print("\n".join(lines))
    return 0


def _load_any_model(source: str):
    """A saved-model directory / Hub ID, or a checkpoint written by ``ssaseg train``."""
    from .hub import from_pretrained, is_pretrained_source

    if is_pretrained_source(source):
        return from_pretrained(source)
    from .engine.predict import load_model_for_inference

    return load_model_for_inference(source)[0]


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model

    fmt = args.format or ("torch-export" if args.out.endswith(".pt2") else "onnx")
    model = _load_any_model(args.model)
    result = export_model(
        model, args.out, format=fmt, size=tuple(args.size), batch=args.batch,
        dynamic=args.dynamic, check=not args.no_check,
    )
    shape = "dynamic height/width" + (f" ({result.ranges})" if result.ranges else "") if result.dynamic else "static shape"
    print(f"wrote {result.path} ({result.format}, {shape})")
    for check in result.checks:
        runtime = "onnxruntime" if result.format == "onnx" else "torch.export"
        line = f"input {check.shape}: max |{runtime} - eager| = {check.max_abs_diff:.3g} (max |logit| {check.max_abs_logit:.3g})"
        print(line + (f"; {check.note}" if check.note else ""))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data import prepare

    return int(prepare.run(args) or 0)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from . import complexity

    return int(complexity.run(args) or 0)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _delegated(sub, name: str, help_text: str, func) -> None:
    """A subcommand whose arguments belong to another module, imported only when it is used."""
    sub.add_parser(name, help=help_text, add_help=False).set_defaults(func=func)


def _delegated_parser(command: str) -> argparse.ArgumentParser:
    import importlib

    modules = {"prepare": "ssaseg.data.prepare", "benchmark": "ssaseg.complexity"}
    sub = argparse.ArgumentParser(prog=f"ssaseg {command}")
    importlib.import_module(modules[command]).add_arguments(sub)
    sub.set_defaults(func=_cmd_prepare if command == "prepare" else _cmd_benchmark, command=command)
    return sub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssaseg", description="SSA-Seg semantic segmentation in PyTorch")
    parser.add_argument("--version", action="version", version=f"ssaseg {_version()}")
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import a module (dotted name or .py file) that registers models, datasets or classifiers "
        "before the command runs; repeatable, also accepted after the command",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config (also under torchrun)")
    p.add_argument("config", help=CONFIG_HELP)
    _add_set(p)
    p.add_argument("--resume", metavar="PATH|auto", help="continue a run from a checkpoint, or the latest in the work dir")
    p.add_argument("--work-dir", help="run directory (default: train.work_dir or runs/<config stem>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_device(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("test", help="evaluate a checkpoint on the config's validation split")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("checkpoint", help="a checkpoint file, or a directory written by save_pretrained / ssaseg convert")
    _add_set(p)
    p.add_argument("--aug-test", action="store_true", help="multi-scale (0.5..1.75) + flip test-time augmentation")
    p.add_argument("--work-dir", help="where the eval JSON goes (default: train.work_dir)")
    p.add_argument("--no-progress", action="store_true")
    _add_device(p)
    p.set_defaults(func=_cmd_test)

    p = sub.add_parser("predict", help="write class-id masks (palette PNGs) and overlays for images")
    p.add_argument(
        "checkpoint",
        help="a checkpoint written by `ssaseg train` (it carries its config), or a saved-model directory / Hub ID",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", help="use this config (path or packaged name) instead of the one stored in the checkpoint")
    _add_set(p)
    p.add_argument("--opacity", type=float, default=0.5, help="mask opacity of the overlay (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_device(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("demo", help="train linear vs SSA on the synthetic demo dataset and report")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--iters", type=int, default=None, help="override the training iterations of both runs")
    _add_device(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("configs", help="list, show or copy the configs shipped with ssaseg")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="names of the packaged configs")
    a.add_argument("pattern", nargs="?", help="shell-style pattern or substring, e.g. 'segformer*ade20k*'")
    a = actions.add_parser("show", help="print a packaged config")
    a.add_argument("name")
    a.add_argument("--resolved", action="store_true", help="the full config after _base_ and defaults")
    a = actions.add_parser("copy", help="copy a packaged config and its _base_ files into DIR to edit them")
    a.add_argument("name")
    a.add_argument("dest", metavar="DIR")
    a.add_argument("--overwrite", action="store_true", help="replace files in DIR that differ")
    p.set_defaults(func=_cmd_configs)

    p = sub.add_parser("convert", help="turn a checkpoint file into a save_pretrained directory (strict load)")
    p.add_argument("source", metavar="SRC", help="official SSA-Seg/mmseg checkpoint or ssaseg checkpoint/state dict")
    p.add_argument("dest", metavar="DST_DIR")
    p.add_argument("--model", help="registry name (default: the config's or the checkpoint's config's)")
    p.add_argument("--num-classes", type=int, help="default: the config's, else from the classifier weights")
    p.add_argument("--classifier", help="a registered classifier (default: the config's, else from the keys)")
    p.add_argument("--config", help="config (path or packaged name) giving model arguments, classes and test pipeline")
    p.add_argument("--keep-training-modules", action="store_true",
                   help="keep the SSA teacher and auxiliary heads (default: deploy, inference only)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("export", help="export a model to ONNX or torch.export and check it against eager")
    p.add_argument("model", metavar="MODEL", help="saved-model directory, Hub ID or `ssaseg train` checkpoint")
    p.add_argument("out", metavar="OUT", help="output file (.onnx or .pt2)")
    p.add_argument("--format", choices=("onnx", "torch-export"), default=None,
                   help="default: from OUT's suffix (.pt2 -> torch-export), else onnx")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="example input size")
    p.add_argument("--batch", type=int, default=1, help="example (and exported) batch size, default 1")
    p.add_argument("--dynamic", action="store_true", help="symbolic input height and width")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with the eager model")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("compare", help="linear vs CAC vs SSA on the demo data over several seeds (mean ± std, plot, report)")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p.add_argument("--seeds", type=int, nargs="+", help="train.seed of the runs (default 0 1 2)")
    p.add_argument("--classifiers", nargs="+", metavar="NAME", help="classifiers to compare (default linear cac ssa)")
    p.add_argument("--iters", type=int, help="training iterations of every run (default: the demo config's)")
    _add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)

    _delegated(sub, "prepare", "convert / check a dataset (see ssaseg prepare -h)", _cmd_prepare)
    _delegated(sub, "benchmark", "parameters, FLOPs and latency of a model (see ssaseg benchmark -h)", _cmd_benchmark)
    return parser


def _user_error_message(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    # Exceptions re-raised from DataLoader workers carry the worker traceback; keep its last line.
    if "Original Traceback" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1].split(": ", 1)[-1] if lines else text
    return text


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code (2 for user errors)."""
    from .config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from .integrations.imports import import_user_modules, pop_import_options

        argv, user_modules = pop_import_options(argv)
        import_user_modules(user_modules)
    except ValueError as err:
        print(f"ssaseg: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    command = argv[0] if argv else None
    if command in ("prepare", "benchmark"):
        # Their arguments live in ssaseg.data.prepare / ssaseg.complexity: import only when used.
        args = _delegated_parser(command).parse_args(argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, OSError) as err:
        if os.environ.get("SSASEG_DEBUG"):
            raise
        print(f"ssaseg {args.command}: error: {_user_error_message(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``ssaseg``, ``python -m ssaseg``): exits with :func:`run`'s code."""
    sys.exit(run(argv))
