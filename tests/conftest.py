"""Shared pytest fixtures (keep this file small; append, do not rewrite)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a module's tests with one intra-op thread, then restore the previous setting.

    Tests made of many small tensor ops spend most of their time synchronising OpenMP threads
    when the machine's cores are busy (measured 4x more CPU time and 4x more wall time with 2
    threads than with 1 on the shared 2-core box). Use with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
