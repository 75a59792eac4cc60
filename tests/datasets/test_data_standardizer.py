"""Standardizer: fitted on training bags only, constant features, state round trip."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from lossattn.datasets import BagDataset, BaseBagDataset, Standardizer, make_digits_bags, stratified_kfold


def _dataset() -> BagDataset:
    rng = np.random.default_rng(0)
    bags = []
    for i in range(20):
        b = rng.normal(loc=[5.0, -3.0, 0.0, 7.0], scale=[2.0, 0.5, 1.0, 1.0], size=(rng.integers(1, 6), 4))
        b[:, 2] = 4.0  # constant feature
        b[:, 3] += 10.0 * (i >= 10)  # the test bags differ
        bags.append(b)
    return BagDataset(bags, [0, 1] * 10)


def test_fit_on_train_bags_only() -> None:
    ds = _dataset()
    train, test = ds.subset(range(10)), ds.subset(range(10, 20))
    std = Standardizer().fit(train)
    x_train = np.concatenate([b.x.numpy() for b in train]).astype(np.float64)
    np.testing.assert_allclose(std.mean.numpy(), x_train.mean(0), rtol=1e-5, atol=1e-5)
    expected_std = x_train.std(0)
    expected_std[2] = 1.0
    np.testing.assert_allclose(std.std.numpy(), expected_std, rtol=1e-5)
    assert std.num_instances == train.num_instances
    full = Standardizer().fit(ds)
    assert abs(float(full.mean[3]) - float(std.mean[3])) > 1.0  # the test fold would have moved it

    t_train, t_test = std.transform(train), std.transform(test)
    z = np.concatenate([b.x.numpy() for b in t_train])
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0)[[0, 1, 3]], 1.0, atol=1e-5)
    np.testing.assert_allclose(z[:, 2], 0.0, atol=1e-6)  # constant feature: centred, std 1
    zt = np.concatenate([b.x.numpy() for b in t_test])
    assert zt[:, 3].mean() > 3.0  # test bags transformed with train statistics
    assert t_test.names == test.names and t_test.labels.tolist() == test.labels.tolist()
    assert t_train.meta["standardized"] is True
    # original data untouched, storage shared
    assert torch.equal(train[0].x, ds[0].x)
    assert t_train._data.data_ptr() == ds._data.data_ptr()


def test_transform_composes_and_subsets() -> None:
    ds = _dataset()
    std = Standardizer().fit(ds)
    once = std.transform(ds)
    twice = Standardizer().fit(once).transform(once)
    np.testing.assert_allclose(twice[3].x.numpy(), once[3].x.numpy(), atol=1e-5)
    assert torch.allclose(once.subset([5])[0].x, once[5].x)


def test_state_dict_round_trip_and_call() -> None:
    ds = _dataset()
    std = Standardizer().fit(ds)
    state = std.state_dict()
    other = Standardizer().load_state_dict(state)
    assert torch.equal(other.mean, std.mean) and torch.equal(other.std, std.std)
    assert torch.allclose(other.transform(ds)[0].x, std.transform(ds)[0].x)
    batch = torch.stack([ds[0].x[:1], ds[1].x[:1]])  # (2, 1, 4)
    assert torch.allclose(other(batch)[1, 0], std.transform(ds)[1].x[0], atol=1e-6)
    with pytest.raises(ValueError, match="instance shape"):
        other(torch.zeros(2, 3))


def test_errors() -> None:
    ds = _dataset()
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(ds)
    with pytest.raises(RuntimeError):
        Standardizer().state_dict()
    std = Standardizer().fit(ds)
    with pytest.raises(ValueError, match="fitted on 4 features"):
        std.transform(BagDataset([np.ones((2, 3))], [0]))
    with pytest.raises(ValueError):
        Standardizer().load_state_dict({"mean": torch.zeros(3), "std": torch.zeros(3)})


def test_standardizer_on_generated_images_per_kfold() -> None:
    ds = make_digits_bags("train", 40, seed=0)
    tr, te = stratified_kfold(ds.labels, 4, 0)[0]
    std = Standardizer().fit(ds.subset(tr))
    z = std.transform(ds.subset(tr))
    x = torch.cat([b.x for b in z]).reshape(-1, 64)
    varying = std.std != 1.0
    assert torch.allclose(x.mean(0), torch.zeros(64), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-3)
    assert std.transform(ds.subset(te))[0].x.shape == (ds.bag_sizes[te[0]], 1, 8, 8)


class _ArrayBags(BaseBagDataset):
    """Bags kept as numpy arrays; each read returns a fresh copy (as a file read would), so the copy is a numpy
    allocation that tracemalloc sees."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.name = "arrays"
        self.class_names = None
        self.meta = {}

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def labels(self) -> np.ndarray:
        return np.zeros(len(self.arrays), dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [str(i) for i in range(len(self.arrays))]

    @property
    def bag_sizes(self) -> np.ndarray:
        return np.array([a.shape[0] for a in self.arrays], dtype=np.int64)

    @property
    def instance_shape(self) -> tuple[int, ...]:
        return tuple(self.arrays[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def has_instance_labels(self) -> bool:
        return False

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.arrays[i].copy()
        return torch.from_numpy(x), torch.full((x.shape[0],), -1, dtype=torch.long)


def test_streaming_fit_matches_numpy_on_offset_data() -> None:
    rng = np.random.default_rng(3)
    arrays = [
        (1e4 + rng.normal(scale=[1e-2, 1.0, 50.0], size=(int(rng.integers(1, 40)), 3))).astype(np.float32)
        for _ in range(60)
    ]
    x = np.concatenate(arrays).astype(np.float64)
    for row_block in (8192, 7, 1):  # one block per bag, several, one row at a time
        std = Standardizer(row_block=row_block).fit(_ArrayBags(arrays))
        np.testing.assert_allclose(std.mean.numpy(), x.mean(0), rtol=1e-7)
        np.testing.assert_allclose(std.std.numpy(), x.std(0), rtol=1e-6)
        assert std.num_instances == x.shape[0]
    with pytest.raises(ValueError, match="row_block must be >= 1"):
        Standardizer(row_block=0)


def _peak_fit_bytes(arrays: list[np.ndarray], row_block: int = 8192) -> int:
    ds = _ArrayBags(arrays)
    tracemalloc.start()
    try:
        Standardizer(row_block=row_block).fit(ds)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fit_memory_is_bounded_by_the_largest_bag_not_the_number_of_bags() -> None:
    rng = np.random.default_rng(0)
    bag = rng.normal(size=(500, 64)).astype(np.float32)  # 128 KB per bag
    few = _peak_fit_bytes([bag] * 5)
    many = _peak_fit_bytes([bag] * 400)  # 200,000 instances: a concatenating fit would hold 100 MB of float64
    assert many <= 6 * bag.nbytes, (many, bag.nbytes)
    assert many <= 1.5 * few + 64 * 1024, (few, many)
    # one huge bag: the float64 temporaries stay bounded by row_block rows
    big = rng.normal(size=(20000, 64)).astype(np.float32)
    peak = _peak_fit_bytes([bag] * 3 + [big], row_block=4096)
    assert peak <= big.nbytes + 3 * 4096 * 64 * 8, (peak, big.nbytes)
