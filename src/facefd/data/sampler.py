"""A sampler whose order *and augmentation randomness* are functions of (seed, epoch, index)."""
from __future__ import annotations

from typing import Iterator

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class SeededEpochSampler(DistributedSampler):
    """Seeded per-epoch shuffle that yields ``(index, epoch)`` pairs.

    The dataset derives each sample's augmentation seed from the pair, so a run resumed from a
    checkpoint, a run with a different number of workers and a DDP run all see the same crops.
    Works on one process too (``num_replicas=1``). Lightning calls :meth:`set_epoch` every epoch;
    keep ``trainer.use_distributed_sampler=false`` so it does not wrap this sampler.
    """

    def __init__(self, dataset: Dataset, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(
            dataset,
            num_replicas=dist.get_world_size() if distributed else 1,
            rank=dist.get_rank() if distributed else 0,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        for index in super().__iter__():
            yield (index, epoch)
