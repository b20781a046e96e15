"""Training-step and inference time of every registered classifier relative to the linear one.

Setting: B = 2, C = 256, K = 150, 64x64 features, 512x512 labels with 12 classes
per image and an ignore band. All classifiers of ``ssaseg.classifiers.CLASSIFIERS`` are timed in
the same run, in rounds that run each of them back to back; reported are the median of
``--runs`` rounds and, as the ratio to the linear baseline, the median over rounds of the
per-round ratio (steadier than the ratio of medians when the machine's speed drifts).

    python benchmarks/classifier_overhead.py [--runs 20] [--device cpu|cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssaseg.classifiers import CLASSIFIERS
from ssaseg.complexity import BASELINE_CLASSIFIER, classifier_order
from ssaseg.tables import render_table


def make_inputs(device: torch.device, batch: int = 2, channels: int = 256, num_classes: int = 150, seed: int = 0):
    """Random features (B,C,64,64) and block-structured labels (B,512,512) with 12 classes each."""
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(batch, channels, 64, 64, generator=gen)
    labels = torch.empty(batch, 512, 512, dtype=torch.long)
    for b in range(batch):
        classes = torch.randperm(num_classes, generator=gen)[:12]
        cells = torch.randint(0, 12, (8, 8), generator=gen)
        labels[b] = classes[cells].repeat_interleave(64, 0).repeat_interleave(64, 1)
    labels[:, 240:272, :] = 255  # an ignore band
    return feat.to(device), labels.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    feat, labels = make_inputs(device)
    models = {name: CLASSIFIERS[name](256, 150).to(device) for name in classifier_order()}

    def train_step(model):
        def run():
            model.train()
            model.zero_grad(set_to_none=True)
            x = feat.detach().requires_grad_(True)
            _, losses = model(x, labels)
            torch.stack(list(losses.values())).sum().backward()

        return run

    def infer(model):
        def run():
            model.eval()
            with torch.inference_mode():
                model(feat)

        return run

    timings: dict[tuple[str, str], list[float]] = {}
    for phase, make in (("train step", train_step), ("inference", infer)):
        fns = {name: make(model) for name, model in models.items()}
        for _ in range(args.warmup):
            for fn in fns.values():
                fn()
        for _ in range(args.runs):
            for name, fn in fns.items():  # interleaved, so machine noise hits both alike
                timings.setdefault((phase, name), []).append(time_once(fn, device))

    threads = torch.get_num_threads()
    print(f"device={device} threads={threads} torch={torch.__version__} runs={args.runs}")
    header, rows = ["phase", "classifier", "median (ms)", f"ratio to {BASELINE_CLASSIFIER}"], []
    for phase in ("train step", "inference"):
        base = timings[(phase, BASELINE_CLASSIFIER)]
        for name in models:
            median = statistics.median(timings[(phase, name)])
            ratio = statistics.median(t / b for t, b in zip(timings[(phase, name)], base))
            rows.append([phase, name, f"{median * 1e3:.1f}", f"{ratio:.2f}x"])
    print(render_table(header, rows, fmt="plain", align="llrr"))


if __name__ == "__main__":
    main()
