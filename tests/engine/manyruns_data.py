"""Toy bags shared by the many-runs engine tests (both backends train on the same data)."""

from __future__ import annotations

import numpy as np

from lossattn.datasets import BagDataset


def toy_bags(n_bags: int, dim: int = 6, seed: int = 0, max_size: int = 12) -> BagDataset:
    """Bags of 1..max_size instances; positive bags hold one shifted instance."""
    rng = np.random.default_rng(seed)
    bags, labels = [], []
    for i in range(n_bags):
        n = int(rng.integers(1, max_size + 1))
        x = rng.normal(size=(n, dim)).astype(np.float32)
        if i % 2:
            x[int(rng.integers(n)), 0] += 3.0
        bags.append(x)
        labels.append(i % 2)
    return BagDataset(bags, labels)
