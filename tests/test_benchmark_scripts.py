"""The benchmark scripts run end to end (tiny settings; what they print is not checked for speed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_train_step_benchmark_prints_the_three_ratios():
    out = _run(
        "benchmarks/train_step.py", "segformer_b0", "--size", "64", "--batch", "2", "--classes", "5",
        "--classes-per-image", "3", "--runs", "2", "--warmup", "0", "--threads", "1",
    )
    for row in ("train step (ms)", "inference (ms)", "peak RSS (GiB)"):
        line = next(line for line in out.splitlines() if row in line)
        assert line.rstrip().endswith("x |")
    assert "3 classes per image" in out


def test_classifier_overhead_benchmark_covers_every_classifier():
    from ssaseg.classifiers import CLASSIFIERS

    out = _run("benchmarks/classifier_overhead.py", "--runs", "1", "--warmup", "0", "--threads", "1")
    rows = [line.split() for line in out.splitlines() if line.startswith(("train step", "inference"))]
    for name in CLASSIFIERS:
        assert sum(name in row for row in rows) == 2  # train step and inference
