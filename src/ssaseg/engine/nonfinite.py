"""Non-finite loss guard of the trainer (``train.nonfinite``).

``stop`` (default) costs no host synchronisation of its own. Every step, on the device, the
guard records the first iteration whose total loss is NaN/inf and that iteration's loss terms
(a few tiny element-wise kernels, no ``.item()``). The host reads that record only where the
trainer synchronises anyway: at the log step (folded into the transfer of the interval's
losses), before an evaluation and before a checkpoint is written. So a run that diverges at
iteration ``n`` stops at the next such point with an error naming iteration ``n``, its loss
terms and its lr, and nothing is logged, evaluated or saved from a state after ``n`` (the
iterations between ``n`` and the check only burn compute).

``skip`` has to decide before ``optimizer.step`` whether to apply the update, so it reads one
flag per step (an all-reduce under DDP, so that every rank skips the same steps): the cost of
one host synchronisation per step is the price of asking for it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["NonFiniteError", "NonFiniteGuard"]

_ADVICE = "lower optimizer.lr, use train.amp=off, or set train.nonfinite=skip to skip such steps"


class NonFiniteError(ValueError):
    """Training produced a NaN/inf loss or weights (the message names the iteration)."""


class NonFiniteGuard:
    """Device-side record of the first non-finite loss of a run (see the module docstring)."""

    def __init__(self, names: Sequence[str], device: torch.device, where: str) -> None:
        self.names = list(names)
        self.where = where
        self.first = torch.full((), -1.0, device=device)  # float so that it packs with the losses
        self.terms = torch.zeros(len(self.names), device=device)
        self.lrs: dict[int, float] = {}  # lr of each iteration since the last check (host side)

    def observe(self, iteration: int, terms: torch.Tensor, lr: float) -> None:
        """Record iteration ``iteration`` (1-based) with loss terms ``terms`` (``terms[0]`` = total)."""
        new = ~torch.isfinite(terms[0]) & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, iteration), self.first)
        self.terms = torch.where(new, terms, self.terms)
        self.lrs[iteration] = lr

    def packed(self) -> torch.Tensor:
        """The record as one vector ``[first, *terms]``, to travel with another host transfer."""
        return torch.cat([self.first[None], self.terms])

    def check(self, packed: Sequence[float] | None = None, distributed: bool = False) -> None:
        """Raise :class:`NonFiniteError` if a non-finite loss was recorded (reads the device
        record unless ``packed``, a host copy of :meth:`packed`, is given)."""
        if packed is None:
            record = self.packed()
            if distributed:  # every rank must stop together: take the earliest bad iteration of any rank
                first = torch.where(record[0] < 0, torch.full_like(record[0], math.inf), record[0])
                torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
                record[0] = torch.where(torch.isinf(first), -1.0, first)
            packed = record.tolist()
        first = int(packed[0])
        if first < 0:
            self.lrs.clear()
            return
        terms = ", ".join(f"{n}={v:.4g}" for n, v in zip(self.names, packed[1:]))
        lr = self.lrs.get(first)
        raise NonFiniteError(
            f"training diverged at iteration {first} ({self.where}): non-finite loss ({terms})"
            + (f" at lr {lr:.3g}" if lr is not None else "")
            + f"; no checkpoint or log record was written after it. To continue: {_ADVICE}"
        )

    @staticmethod
    def step_is_finite(loss: torch.Tensor, distributed: bool = False) -> bool:
        """``skip`` mode: whether every rank's loss is finite (one host synchronisation)."""
        flag = torch.isfinite(loss.detach()).to(torch.float32)
        if distributed:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag)
