"""``ssaseg compare``: report statistics and caching (fast, trainer replaced), and one real run."""
from __future__ import annotations

import json
import statistics

import pytest

from ssaseg.cli import run
from ssaseg.engine import compare
from ssaseg.engine.compare import RunSummary, run_compare

CLASSES = ("background", "brick")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def demo_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SSASEG_CACHE", str(tmp_path / "cache"))


def _fake_train(cfg, device, progress):
    kind, seed = cfg["model"]["classifier"], int(cfg["train"]["seed"])
    base = {"linear": 40.0, "cac": 42.0, "ssa": 44.0}[kind] + seed
    return RunSummary(kind, seed, cfg["schedule"]["max_iters"], base, base + 10, base + 30,
                      {"background": base + 1, "brick": base - 1}, 10.0 + seed, 100.0 + seed, 1000, 900)


def test_report_statistics_plot_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "_train_one", _fake_train)
    monkeypatch.setattr(compare, "ensure_demo_dataset", lambda root: None, raising=False)
    monkeypatch.setattr("ssaseg.data.demo.ensure_demo_dataset", lambda root: None)
    out = tmp_path / "cmp"
    runs = run_compare(out, seeds=(0, 1, 2), iters=5, progress=False)
    assert [(r.classifier, r.seed) for r in runs] == [(k, s) for k in ("linear", "cac", "ssa") for s in (0, 1, 2)]
    report = (out / "report.md").read_text()
    std = statistics.stdev([44.0, 45.0, 46.0])
    assert f"| SSA | 45.00 ± {std:.2f} | 55.00 ± {std:.2f} | 75.00 ± {std:.2f} | 101 ± 1 |" in report
    assert f"| brick | 40.0 ± {std:.1f} | 42.0 ± {std:.1f} | 44.0 ± {std:.1f} |" in report
    assert "3 seeds" in report and (out / "compare.png").stat().st_size > 10_000
    assert len(json.loads((out / "results.json").read_text())) == 9
    # A second call reuses every finished run; a changed budget retrains.
    monkeypatch.setattr(compare, "_train_one", lambda *a: pytest.fail("cached run trained again"))
    assert [r.mIoU for r in run_compare(out, seeds=(0, 1, 2), iters=5, progress=False)] == [r.mIoU for r in runs]
    calls = []
    monkeypatch.setattr(compare, "_train_one", lambda cfg, *a: calls.append(cfg) or _fake_train(cfg, *a))
    run_compare(out, seeds=(0,), classifiers=("cac",), iters=6, progress=False)
    assert len(calls) == 1 and calls[0]["schedule"]["max_iters"] == 6


def test_cli_errors(tmp_path, capsys):
    assert run(["compare", "--out", str(tmp_path), "--iters", "0"]) == 2
    assert "--iters" in capsys.readouterr().err
    assert run(["compare", "--out", str(tmp_path), "--classifiers", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert run(["compare", "--out", str(tmp_path), "--seeds", "1", "1"]) == 2


def _real(tmp_path, classifiers, seeds, iters):
    out = tmp_path / "real"
    assert run(["compare", "--out", str(out), "--iters", str(iters), "--seeds", *map(str, seeds),
                "--classifiers", *classifiers, "--device", "cpu", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["classifier"], r["seed"]) for r in results] == [(k, s) for k in classifiers for s in seeds]
    for r in results:
        assert 0.0 <= r["mIoU"] <= 100.0 and len(r["IoU"]) == 14 and r["iterations"] == iters and r["step_ms"] > 0
    assert (out / "compare.png").is_file() and "±" in (out / "report.md").read_text()
    return results


def test_real_runs_end_to_end(tmp_path):
    """Two seeds of CAC, one iteration each, trained and evaluated for real."""
    results = _real(tmp_path, ["cac"], [0, 1], 1)
    assert results[0]["params_train"] > results[0]["params_inference"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_comparison_tiny_budget(tmp_path):
    """The whole comparison (linear, CAC, SSA; 2 seeds) at 20 iterations."""
    _real(tmp_path, ["linear", "cac", "ssa"], [0, 1], 20)
