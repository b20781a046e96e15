"""Resumable, per-sample-seeded training data stream and sharded test loaders.

Why per-sample seeds: the training augmentation draws from the global ``random`` / NumPy /
torch RNGs. With worker processes (and across a resume) the state of those RNGs at a given
sample is not reproducible. :class:`TrainSampler` therefore yields ``(index, seed)`` pairs with
a per-sample seed, and :class:`SeededDataset` seeds the three RNGs
with it before loading the sample (restoring the caller's RNG state afterwards). The seed is a
function of ``(train.seed, epoch, global position in the epoch's permutation)``, so the data
stream is identical with 0 or N workers, across ``--resume``, and for any number of processes
sharing the same global batch (a sample gets the same augmentation on whichever rank draws it).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = ["TrainSampler", "SeededDataset", "build_train_loader", "shard_indices"]

_MIX = 0x9E3779B1  # odd constant mixing the seed parts into one 63-bit integer


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    return (((seed * _MIX + epoch) * _MIX + position) * _MIX) % (2**63 - 1)


class TrainSampler(Sampler):
    """Endless stream of ``(dataset index, sample seed)`` for one rank.

    Epoch ``e`` is ``DistributedSampler(shuffle=True, seed=seed)`` with ``set_epoch(e)`` (the
    plain shuffled order when ``world_size == 1``), truncated to whole batches so that batch
    ``i`` of the run is always ``(epoch, offset) = divmod(i, batches_per_epoch)``.
    ``start_iteration`` resumes the stream at that batch.
    """

    def __init__(
        self, length: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start_iteration: int = 0
    ) -> None:
        if length < 1:
            raise ValueError("the training dataset is empty")
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        per_rank = -(-length // world_size)  # DistributedSampler pads to equal shards
        self.batches_per_epoch = per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training dataset has {length} samples, fewer than one batch of {batch_size} per process "
                f"({world_size} processes); lower data.batch_size or add data"
            )
        self.start_iteration = start_iteration

    def position(self, iteration: int) -> dict[str, int]:
        """Sampler position before batch ``iteration``: ``{"epoch", "offset"}`` (offset in batches)."""
        epoch, offset = divmod(iteration, self.batches_per_epoch)
        return {"epoch": epoch, "offset": offset}

    def _epoch_indices(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(
            range(self.length), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=self.seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)[: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.position(self.start_iteration)
        epoch, start = pos["epoch"], pos["offset"] * self.batch_size
        while True:
            indices = self._epoch_indices(epoch)
            for p in range(start, len(indices)):
                # DistributedSampler deals the permutation round-robin: rank r's p-th sample is
                # the permutation's (p * world + r)-th.
                yield indices[p], _sample_seed(self.seed, epoch, p * self.world_size + self.rank)
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return 2**62


class SeededDataset(Dataset):
    """Wraps a dataset; ``ds[(index, seed)]`` loads ``index`` with all global RNGs seeded by ``seed``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    collate_fn: Callable,
    num_workers: int,
    seed: int,
    rank: int,
    world_size: int,
    start_iteration: int,
    pin_memory: bool = False,
) -> tuple[DataLoader, TrainSampler]:
    """An endless DataLoader over ``dataset`` starting at batch ``start_iteration``."""
    sampler = TrainSampler(len(dataset), batch_size, seed, rank, world_size, start_iteration)
    loader = DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # A private generator: creating the iterator must not consume the global torch RNG,
        # or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """Test-set indices of one rank: ``rank, rank + world, ...`` (no padding, no duplicates)."""
    return list(range(rank, length, world_size))
