"""Parity against mmsegmentation 0.30 itself (``make test-parity``; not part of ``make test``).

mmseg 0.30 and mmcv 1.7.2 (built with ``MMCV_WITH_OPS=0``: pure Python, no compiled ops) live in
a side directory, ``.venv-parity/`` at the repository root (``make test-parity`` installs them
there with ``pip install --target``), appended to ``sys.path`` so that the main environment's
torch, numpy and timm are used. The few ``mmcv.ops`` names mmseg imports at module level are
stubbed (they are only called by heads and losses these tests never build).

This directory is collected only when ``SSASEG_PARITY=1`` (set by ``make test-parity``), so a
plain ``pytest tests`` skips it; when mmseg cannot be imported the tests are skipped.
"""
from __future__ import annotations

import os
import sys

if os.environ.get("SSASEG_PARITY") != "1":
    collect_ignore_glob = ["*.py"]


def pytest_terminal_summary(terminalreporter) -> None:
    module = sys.modules.get("test_mmseg_parity")
    rows = getattr(module, "RESULTS", None)
    if not rows:
        return
    terminalreporter.write_line("")
    terminalreporter.write_line("| model | classifier | input | max rel. diff vs mmseg 0.30 |")
    terminalreporter.write_line("|---|---|---|---|")
    for name, classifier, size, diff in rows:
        terminalreporter.write_line(f"| {name} | {classifier} | {size} | {diff:.1e} |")
