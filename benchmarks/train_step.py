"""Whole-model cost of SSA against the linear classifier: train step, peak memory, inference.

    python benchmarks/train_step.py MODEL [--size 512] [--batch 2] [--classes 150]
                                          [--device cpu|cuda] [--threads N] [--runs 7]

* train step: forward, backward and an AdamW step of the whole model on a synthetic batch
  (block-structured labels with an ignore band); both models are timed in one run, in rounds
  that run linear then SSA back to back. Reported: the median time of each, and as the ratio
  the median over rounds of SSA / linear, which a machine whose speed drifts during the run
  (shared CPUs) moves less than the ratio of the medians.
* peak memory: one fresh subprocess per classifier runs two train steps and reports its peak:
  the max RSS of the process on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
* inference: eval-mode forward of one image (batch 1) under ``torch.inference_mode``, in rounds
  as the train step; it is ~7x shorter than a train step, so it gets 3x the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from ssaseg.models import create_model

CLASSIFIERS = ("linear", "ssa")


def make_batch(batch: int, size: int, num_classes: int, device: torch.device, seed: int = 0, per_image: int = 12):
    """Random images (B,3,S,S) and labels (B,S,S) of 8x8 blocks of ``per_image`` classes, with an ignore band."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen)
    labels = torch.empty(batch, size, size, dtype=torch.long)
    cell = -(-size // 8)
    per_image = min(per_image, num_classes, 64)
    for b in range(batch):
        classes = torch.randperm(num_classes, generator=gen)[:per_image]
        cells = torch.randperm(64, generator=gen).remainder(per_image).view(8, 8)  # every class in some cell
        labels[b] = classes[cells].repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:size, :size]
    labels[:, size // 2 - size // 32 : size // 2 + size // 32] = 255
    return images.to(device), labels.to(device)


def build(model_name: str, classifier: str, num_classes: int, device: torch.device):
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=num_classes, classifier=classifier).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    return model, optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, optimizer, images, labels) -> None:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    model(images, labels)["loss"].backward()
    optimizer.step()


def infer(model, image) -> None:
    model.eval()
    with torch.inference_mode():
        model(image)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def peak_memory(args, classifier: str) -> int:
    """Peak bytes of two train steps of one classifier in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), args.model, "--memory-only", classifier]
    cmd += ["--size", str(args.size), "--batch", str(args.batch), "--classes", str(args.classes)]
    cmd += ["--classes-per-image", str(args.classes_per_image)]
    cmd += ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["peak_bytes"])


def memory_only(args, device: torch.device) -> None:
    model, optimizer = build(args.model, args.memory_only, args.classes, device)
    images, labels = make_batch(args.batch, args.size, args.classes, device, per_image=args.classes_per_image)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        train_step(model, optimizer, images, labels)
    sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="registry name, e.g. segnext_t, segformer_b5, upernet_swin_t")
    parser.add_argument("--size", type=int, default=512, help="square crop size S")
    parser.add_argument("--batch", type=int, default=2, help="train batch size B (inference uses 1)")
    parser.add_argument("--classes", type=int, default=150, help="K")
    parser.add_argument(
        "--classes-per-image", type=int, default=12, help="classes present in each label map (at most 64: 8x8 blocks)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--runs", type=int, default=7, help="timed repetitions per classifier")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true", help="do not spawn the memory subprocesses")
    parser.add_argument("--memory-only", choices=CLASSIFIERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_only:
        memory_only(args, device)
        return

    print(
        f"{args.model}: {args.size}x{args.size}, train batch {args.batch}, K={args.classes}, "
        f"{min(args.classes_per_image, args.classes, 64)} classes per image, device={device}, "
        f"threads={torch.get_num_threads()}, torch {torch.__version__}, "
        f"median of {args.runs} rounds ({3 * args.runs} for inference; SSA / linear: median of the per-round ratios)"
    )
    print(f"| {'':<22}| {'linear':>10} | {'SSA':>10} | {'SSA / linear':>12} |")
    print(f"|{'-' * 23}|{'-' * 12}|{'-' * 12}|{'-' * 14}|", flush=True)
    built = {name: build(args.model, name, args.classes, device) for name in CLASSIFIERS}
    images, labels = make_batch(args.batch, args.size, args.classes, device, per_image=args.classes_per_image)
    phases = {
        "train step": lambda name: train_step(*built[name], images, labels),
        "inference": lambda name: infer(built[name][0], images[:1]),
    }
    for phase, run in phases.items():
        times: dict[str, list[float]] = {name: [] for name in CLASSIFIERS}
        for _ in range(args.warmup):
            for name in CLASSIFIERS:
                run(name)
        for _ in range(args.runs * (3 if phase == "inference" else 1)):
            for name in CLASSIFIERS:  # one round: both back to back, so machine noise hits both alike
                times[name].append(timed(lambda: run(name), device))
        lin, ssa = (statistics.median(times[n]) * 1e3 for n in CLASSIFIERS)
        ratio = statistics.median(b / a for a, b in zip(times["linear"], times["ssa"]))
        print(f"| {phase + ' (ms)':<22}| {lin:>10.0f} | {ssa:>10.0f} | {ratio:>11.2f}x |", flush=True)
    del built
    if not args.skip_memory:
        what = "peak RSS" if device.type == "cpu" else "max allocated"
        lin, ssa = (peak_memory(args, n) / 2**30 for n in CLASSIFIERS)
        print(f"| {what + ' (GiB)':<22}| {lin:>10.2f} | {ssa:>10.2f} | {ssa / lin:>11.2f}x |", flush=True)


if __name__ == "__main__":
    main()
