"""collate_bags / BagBatch and BucketBatchSampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lossattn.datasets import BagBatch, BagDataset, BucketBatchSampler, collate_bags


def _dataset(sizes=(3, 1, 4)) -> BagDataset:
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(n, 2)) + 1.0 for n in sizes]
    inst = [np.arange(n) % 2 for n in sizes]
    return BagDataset(
        bags, [i % 2 for i in range(len(sizes))], instance_labels=inst, names=[f"b{i}" for i in range(len(sizes))]
    )


def test_collate_pads_and_masks() -> None:
    ds = _dataset()
    batch = collate_bags([ds[0], ds[1], ds[2]])
    assert isinstance(batch, BagBatch) and len(batch) == 3
    assert batch.x.shape == (3, 4, 2) and batch.x.dtype == torch.float32
    assert batch.mask.dtype == torch.bool
    assert batch.mask.tolist() == [[True, True, True, False], [True, False, False, False], [True] * 4]
    assert batch.bag_sizes.tolist() == [3, 1, 4]
    assert (batch.x[~batch.mask] == 0).all()
    for i in range(3):
        n = ds.bag_sizes[i]
        assert torch.equal(batch.x[i, :n], ds[i].x)
    assert batch.instance_labels.tolist() == [[0, 1, 0, -1], [0, -1, -1, -1], [0, 1, 0, 1]]
    assert batch.labels.tolist() == [0, 1, 0] and batch.labels.dtype == torch.long
    assert batch.indices.tolist() == [0, 1, 2]
    assert batch.names == ["b0", "b1", "b2"]
    moved = batch.to("cpu")
    assert moved.x.device.type == "cpu" and moved.names == batch.names


def test_collate_images_and_errors() -> None:
    img = BagDataset([np.ones((2, 1, 3, 3)), np.ones((1, 1, 3, 3))], [0, 1])
    batch = collate_bags(list(img))
    assert batch.x.shape == (2, 2, 1, 3, 3)
    with pytest.raises(ValueError, match="at least one"):
        collate_bags([])
    with pytest.raises(ValueError, match="cannot batch"):
        collate_bags([img[0], _dataset()[0]])


def test_dataloader_with_bucket_sampler() -> None:
    ds = _dataset(sizes=tuple(range(1, 21)))
    sampler = BucketBatchSampler(ds, batch_size=4, seed=3)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_bags)
    seen = []
    for batch in loader:
        seen.extend(batch.indices.tolist())
        assert batch.x.shape[1] == int(batch.bag_sizes.max())
    assert sorted(seen) == list(range(20))


def test_sampler_covers_all_bags_once_and_is_deterministic() -> None:
    sizes = np.random.default_rng(0).integers(1, 30, size=103)
    s = BucketBatchSampler(sizes, batch_size=8, shuffle=True, seed=5)
    e0 = list(s)
    assert len(e0) == len(s) == 13
    assert sorted(i for b in e0 for i in b) == list(range(103))
    assert all(1 <= len(b) <= 8 for b in e0)
    assert list(BucketBatchSampler(sizes, 8, shuffle=True, seed=5)) == e0  # same seed, same epoch
    assert list(s) == e0  # iterating again without set_epoch repeats the epoch
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(i for b in e1 for i in b) == list(range(103))
    s.set_epoch(0)
    assert list(s) == e0
    assert list(BucketBatchSampler(sizes, 8, shuffle=True, seed=6)) != e0


def test_sampler_groups_similar_sizes() -> None:
    sizes = np.random.default_rng(1).permutation(np.arange(1, 201))
    s = BucketBatchSampler(sizes, batch_size=10, seed=0)
    spreads = [sizes[b].max() - sizes[b].min() for b in s]
    assert max(spreads) == 9  # each batch holds 10 consecutive sizes
    # far less padding than random batches
    rng = np.random.default_rng(0)
    perm = rng.permutation(200)
    random_spread = np.mean([np.ptp(sizes[perm[i : i + 10]]) for i in range(0, 200, 10)])
    assert np.mean(spreads) < random_spread / 5


def test_sampler_no_shuffle_and_drop_last() -> None:
    sizes = np.array([5, 1, 3, 2, 4, 6, 7])
    s = BucketBatchSampler(sizes, batch_size=3, shuffle=False)
    assert list(s) == [[1, 3, 2], [4, 0, 5], [6]]
    d = BucketBatchSampler(sizes, batch_size=3, shuffle=False, drop_last=True)
    assert list(d) == [[1, 3, 2], [4, 0, 5]] and len(d) == 2
    r = BucketBatchSampler(sizes, batch_size=3, shuffle=True, drop_last=True, seed=1)
    batches = list(r)
    assert len(batches) == 2 and all(len(b) == 3 for b in batches)
    with pytest.raises(ValueError):
        BucketBatchSampler(sizes, batch_size=0)
