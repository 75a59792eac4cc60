"""A batch sampler that groups bags of similar size, to keep padding small."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

__all__ = ["BucketBatchSampler"]


class BucketBatchSampler(Sampler[list[int]]):
    """Yields batches of bag indices whose bags have similar sizes.

    With ``shuffle=True`` each epoch draws a random permutation (seeded by ``(seed, epoch)``), sorts it stably
    by bag size (so bags of equal size are in random order), cuts it into batches and shuffles the batch
    order. With ``shuffle=False`` the order is the size-sorted order, fixed.

    As with ``DistributedSampler``, call :meth:`set_epoch` before each epoch for a new order; the same
    ``(seed, epoch)`` always gives the same batches.

    Args:
        bag_sizes: int array ``(B,)`` of instances per bag, or a dataset with a ``bag_sizes`` attribute.
        batch_size: Bags per batch (>= 1).
        shuffle: Randomise batches (see above).
        seed: Base seed.
        drop_last: Drop the incomplete batch. With ``shuffle`` the dropped bags are chosen at random each
            epoch; without, the largest bags are dropped.

    Example:
        >>> sampler = BucketBatchSampler(ds.bag_sizes, batch_size=8, seed=0)   # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_bags)  # doctest: +SKIP
    """

    def __init__(
        self, bag_sizes: Any, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False
    ) -> None:
        sizes = getattr(bag_sizes, "bag_sizes", bag_sizes)
        self.bag_sizes = np.asarray(sizes, dtype=np.int64).ravel()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.bag_sizes.size == 0:
            raise ValueError("BucketBatchSampler needs at least one bag")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch used (with ``seed``) to draw this epoch's batches."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.bag_sizes.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = self.bag_sizes.shape[0]
        bs = self.batch_size
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(n)
            if self.drop_last:
                order = order[: n - n % bs]
            order = order[np.argsort(self.bag_sizes[order], kind="stable")]
        else:
            rng = None
            order = np.argsort(self.bag_sizes, kind="stable")
            if self.drop_last:
                order = order[: n - n % bs]
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for b in batches:
            yield [int(i) for i in b]
