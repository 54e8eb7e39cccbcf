"""A distributed sampler that can resume inside an epoch (exact resume)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableDistributedSampler(Sampler[int]):
    """Shuffles by (seed, epoch) like DistributedSampler; ``skip`` drops the first indices."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world_size, seed, shuffle
        self.epoch, self.skip = 0, 0
        self.per_rank = (n + world_size - 1) // world_size

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order += order[: self.per_rank * self.world - self.n]  # pad so every rank has as many
        mine = order[self.rank :: self.world]
        return iter(mine[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip
