"""BagDataset: construction, indexing, subsets, properties and validation errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossattn.datasets import Bag, BagDataset


def _bags(seed: int = 0, sizes: tuple[int, ...] = (3, 1, 4, 2), d: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, d)) for n in sizes]


def test_round_trip_values_and_properties() -> None:
    bags = _bags()
    inst = [np.array([0, 1, -1]), np.array([1]), np.array([0, 0, 0, 1]), np.array([-1, -1])]
    ds = BagDataset(bags, [0, 1, 1, 0], instance_labels=inst, names=["a", "b", "c", "d"], name="toy")
    assert len(ds) == 4
    assert ds.name == "toy"
    assert ds.names == ["a", "b", "c", "d"]
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 1, 1, 0]
    assert ds.bag_sizes.tolist() == [3, 1, 4, 2] and ds.bag_sizes.dtype == np.int64
    assert ds.num_instances == 10
    assert ds.num_features == 5 and ds.instance_shape == (5,)
    assert ds.num_classes == 2
    assert ds.class_counts().tolist() == [2, 2]
    assert ds.has_instance_labels
    assert ds.instance_labels.tolist() == [0, 1, -1, 1, 0, 0, 0, 1, -1, -1]
    for i, b in enumerate(ds):
        assert isinstance(b, Bag)
        assert b.x.dtype == torch.float32 and b.x.shape == (len(bags[i]), 5)
        np.testing.assert_allclose(b.x.numpy(), bags[i].astype(np.float32))
        assert b.instance_labels.dtype == torch.long
        assert b.instance_labels.tolist() == inst[i].tolist()
        assert b.index == i and b.name == "abcd"[i] and b.size == len(bags[i])
    assert ds[-1].name == "d"
    assert "toy" in repr(ds)


def test_defaults_and_unknown_instance_labels() -> None:
    ds = BagDataset(_bags(), [0, 1, 2, 1])
    assert ds.names == ["0", "1", "2", "3"]
    assert ds.num_classes == 3
    assert not ds.has_instance_labels
    assert (ds[0].instance_labels == -1).all()
    assert BagDataset(_bags(), [0, 0, 0, 0]).num_classes == 2  # at least binary


def test_getitem_returns_a_copy() -> None:
    ds = BagDataset(_bags(), [0, 1, 1, 0])
    before = ds[0].x.clone()
    ds[0].x.add_(100.0)
    assert torch.equal(ds[0].x, before)


def test_index_errors() -> None:
    ds = BagDataset(_bags(), [0, 1, 1, 0])
    with pytest.raises(IndexError, match="out of range"):
        ds[4]
    with pytest.raises(IndexError):
        ds[-5]
    with pytest.raises(TypeError):
        ds["a"]  # type: ignore[index]
    assert ds[np.int64(2)].index == 2
    assert ds[torch.tensor(1)].index == 1


def test_from_flat_matches_list_construction() -> None:
    bags = _bags()
    flat = np.concatenate(bags)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in bags])])
    a = BagDataset(bags, [0, 1, 1, 0])
    b = BagDataset.from_flat(flat, offsets, [0, 1, 1, 0])
    for i in range(4):
        assert torch.equal(a[i].x, b[i].x)
    x, off = b.to_flat()
    np.testing.assert_allclose(x.numpy(), flat.astype(np.float32))
    assert off.tolist() == offsets.tolist()


def test_image_instances() -> None:
    bags = [np.random.default_rng(0).random((n, 1, 4, 4)) for n in (2, 3)]
    ds = BagDataset(bags, [0, 1])
    assert ds.instance_shape == (1, 4, 4) and ds.num_features == 16
    assert ds[1].x.shape == (3, 1, 4, 4)


def test_subset_keeps_everything_and_reindexes() -> None:
    bags = _bags()
    inst = [np.arange(n) for n in (3, 1, 4, 2)]
    ds = BagDataset(bags, [0, 1, 1, 0], instance_labels=inst, names=list("abcd"), class_names=["neg", "pos"])
    sub = ds.subset([2, 0])
    assert len(sub) == 2
    assert sub.names == ["c", "a"]
    assert sub.labels.tolist() == [1, 0]
    assert sub.bag_sizes.tolist() == [4, 3]
    assert sub.num_classes == 2 and sub.class_names == ["neg", "pos"]
    assert sub[0].index == 0 and sub[1].index == 1
    assert torch.equal(sub[0].x, ds[2].x)
    assert sub[0].instance_labels.tolist() == [0, 1, 2, 3]
    assert sub.source_index.tolist() == [4, 5, 6, 7, 0, 1, 2]
    # shares storage, no copy of features
    assert sub._data.data_ptr() == ds._data.data_ptr()
    sub2 = sub.subset(np.array([False, True]))
    assert sub2.names == ["a"] and torch.equal(sub2[0].x, ds[0].x)
    assert sub.subset([1])[0].name == "a"
    with pytest.raises(IndexError):
        ds.subset([7])
    with pytest.raises(ValueError):
        ds.subset([])


def test_subset_keeps_num_classes_when_a_class_is_missing() -> None:
    ds = BagDataset(_bags(), [0, 1, 2, 1])
    sub = ds.subset([0])
    assert sub.num_classes == 3
    assert sub.class_counts().tolist() == [1, 0, 0]


@pytest.mark.parametrize(
    ("bags", "labels", "kwargs", "pattern"),
    [
        (
            [np.ones((2, 3)), np.ones((0, 3))],
            [0, 1],
            {"names": ["x", "empty-one"]},
            r"'empty-one' \(index 1\) has no instances",
        ),
        ([np.ones((2, 3)), np.ones((2, 4))], [0, 1], {"names": ["x", "wide"]}, r"'wide'.*\(4,\).*\(3,\).*inconsistent"),
        ([np.ones((2, 3)), np.ones(3)], [0, 1], {}, r"bag '1' \(index 1\) has shape \(3,\)"),
        (
            [np.ones((2, 3)), np.ones((2, 3))],
            [0, 5],
            {"num_classes": 2, "names": ["x", "y"]},
            r"'y' \(index 1\) has label 5; expected a class in 0..1",
        ),
        ([np.ones((2, 3)), np.ones((2, 3))], [0, -1], {"names": ["x", "neg"]}, r"'neg' \(index 1\) has label -1"),
        ([np.ones((2, 3)), np.ones((2, 3))], [0, 0.5], {}, r"label 0.5; expected an integer"),
        ([np.ones((2, 3))], [0, 1], {}, r"2 bag labels .* for 1 bags"),
        ([np.ones((2, 3))], [0], {"instance_labels": [np.array([0, 1, 1])]}, r"3 instance labels for 2 instances"),
        ([np.ones((2, 3))], [0], {"instance_labels": [np.array([0, -2])]}, r"instance label -2"),
        ([], [], {}, r"no bags"),
    ],
)
def test_validation_errors(bags, labels, kwargs, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        BagDataset(bags, labels, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_the_bag(bad: float) -> None:
    bags = [np.ones((2, 3)), np.ones((3, 3))]
    bags[1][2, 1] = bad
    with pytest.raises(
        ValueError, match=r"bag 'b2' \(index 1\) has a non-finite feature value .*instance 2, flat feature 1"
    ):
        BagDataset(bags, [0, 1], names=["b1", "b2"])
    flat = np.concatenate(bags)
    with pytest.raises(ValueError, match=r"bag '1' \(index 1\)"):
        BagDataset.from_flat(flat, [0, 2, 5], [0, 1])


def test_from_flat_offset_errors() -> None:
    with pytest.raises(ValueError, match="offsets must start at 0"):
        BagDataset.from_flat(np.ones((5, 2)), [0, 2, 4], [0, 1])
    with pytest.raises(ValueError, match="no instances"):
        BagDataset.from_flat(np.ones((4, 2)), [0, 2, 2, 4], [0, 1, 0], names=["a", "b", "c"])


def test_class_names_length_checked() -> None:
    with pytest.raises(ValueError, match="class names"):
        BagDataset([np.ones((1, 2))], [0], class_names=["a", "b", "c"])
