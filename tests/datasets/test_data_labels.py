"""encode_labels (user label values -> classes 0..K-1), unlabeled datasets, check_trainable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lossattn.datasets import (
    BagDataset,
    BucketBatchSampler,
    Standardizer,
    check_trainable,
    collate_bags,
    encode_labels,
    normalize_label,
    stratified_kfold,
    train_val_split,
)


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("1", 1),
        (" 1.0 ", 1),
        ("+1", 1),
        ("-1.", -1),
        (True, 1),
        (np.int32(7), 7),
        (3.0, 3),
        ("tumor", "tumor"),
        ("", None),
        ("NaN", None),
        ("n/a", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_normalize_label(cell, value) -> None:
    assert normalize_label(cell) == value
    assert type(normalize_label(cell)) is type(value)


@pytest.mark.parametrize("cell", ["0.5", 2.5, "inf", float("-inf")])
def test_normalize_label_rejects_fractions(cell) -> None:
    with pytest.raises(ValueError, match="is not an integer"):
        normalize_label(cell)


@pytest.mark.parametrize(
    ("values", "kwargs", "codes", "label_values", "k"),
    [
        ([0, 7, 7, 0], {}, [0, 1, 1, 0], [0, 7], 2),
        ([-1, 1, 1], {}, [0, 1, 1], [-1, 1], 2),
        ([1, 1], {}, [1, 1], [0, 1], 2),  # a file of positives only keeps the binary classes
        ([-1, -1], {}, [0, 0], [-1, 1], 2),
        (["tumor", "benign"], {}, [1, 0], ["benign", "tumor"], 2),
        ([10, 2, 33], {}, [1, 0, 2], [2, 10, 33], 3),  # numeric order, not "10" < "2"
        (["b", 1], {}, [1, 0], ["1", "b"], 2),  # mixed: strings, lexicographic
        ([0, 2], {"num_classes": 3}, [0, 2], [0, 1, 2], 3),  # already classes of a K-class problem
        ([2], {"class_names": ["a", "b", "c"]}, [2], [0, 1, 2], 3),
        (["c", "a"], {"class_names": ["a", "b", "c"]}, [2, 0], ["a", "b", "c"], 3),
        (["M", "B"], {"class_names": ["benign", "malignant"]}, [1, 0], ["B", "M"], 2),
        (["x", "y"], {"label_values": ["y", "x"]}, [1, 0], ["y", "x"], 2),
        (["1", "-1"], {"label_values": [1, -1]}, [0, 1], [1, -1], 2),
    ],
)
def test_encode_labels_rules(values, kwargs, codes, label_values, k) -> None:
    enc = encode_labels(values, **kwargs)
    assert enc.codes.tolist() == codes
    assert enc.label_values == label_values and enc.num_classes == k and enc.has_labels
    assert len(enc.class_names) == k
    if "class_names" not in kwargs:
        assert enc.class_names == [str(v) for v in label_values]
    # decoding gives back the user's values
    norm = [normalize_label(v) for v in values]
    assert [enc.label_values[c] for c in enc.codes] == [
        str(v) if isinstance(enc.label_values[0], str) else v for v in norm
    ]


def test_encode_labels_unlabeled_and_errors() -> None:
    enc = encode_labels([None, "", "nan"])
    assert enc.codes.tolist() == [-1, -1, -1] and not enc.has_labels
    assert enc.label_values is None and enc.num_classes is None and enc.class_names is None
    hinted = encode_labels(["", ""], label_values=["neg", "pos"])
    assert hinted.num_classes == 2 and hinted.class_names == ["neg", "pos"]
    with pytest.raises(ValueError, match=r"t.csv: bag 'b2' has no label, but other bags do \(e.g. 'b1' = 'x'\)"):
        encode_labels(["x", None], names=["b1", "b2"], where="t.csv")
    with pytest.raises(ValueError, match=r"bag '1' has label 'z', which is not one of label_values \['x', 'y'\]"):
        encode_labels(["x", "z"], label_values=["x", "y"])
    with pytest.raises(ValueError, match=r"3 distinct values \[1, 4, 9\], which are not the classes 0..1"):
        encode_labels([1, 4, 9], num_classes=2)
    with pytest.raises(ValueError, match=r"3 class_names"):
        encode_labels(["a", "b"], class_names=["x", "y", "z"])
    with pytest.raises(ValueError, match=r"bag 'q': label '0.5' is not an integer"):
        encode_labels(["0.5"], names=["q"])


def _unlabeled(**kw) -> BagDataset:
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(n, 3)) for n in (2, 4, 3)]
    return BagDataset(bags, None, names=["a", "b", "c"], name="u", **kw)


def test_unlabeled_bag_dataset() -> None:
    ds = _unlabeled()
    assert not ds.has_labels and ds.labels.tolist() == [-1, -1, -1]
    assert ds[1].label == -1 and ds.label_values is None
    assert repr(ds) == "BagDataset(name='u', bags=3, instances=9, instance_shape=(3,), unlabeled)"
    with pytest.raises(ValueError, match="dataset 'u' is unlabeled"):
        _ = ds.num_classes
    with pytest.raises(ValueError, match=r"dataset 'u' is unlabeled \(no bag labels\): class_counts\(\) needs"):
        ds.class_counts()
    with pytest.raises(ValueError, match="cannot stratify: dataset 'u' has bags with label -1"):
        stratified_kfold(ds, 2)
    with pytest.raises(ValueError, match="cannot stratify"):
        train_val_split(ds)
    # everything that does not need labels works: subsets, standardising, batching
    sub = ds.subset([2, 0])
    assert not sub.has_labels and sub.names == ["c", "a"]
    z = Standardizer().fit_transform(ds)
    assert not z.has_labels
    batch = next(iter(DataLoader(ds, batch_sampler=BucketBatchSampler(ds, 3, seed=0), collate_fn=collate_bags)))
    assert batch.labels.tolist() == [-1, -1, -1]
    assert BagDataset([np.zeros((1, 2))], [-1]).has_labels is False  # all -1 is the same as None
    assert ds.coords(0) is None and not ds.has_coords  # in-memory bags have no coordinates
    hinted = _unlabeled(num_classes=3)
    assert hinted.num_classes == 3 and hinted.label_values == [0, 1, 2] and hinted.subset([0]).num_classes == 3


def test_mixed_known_and_unknown_labels_name_the_bag() -> None:
    with pytest.raises(ValueError, match=r"bag 'b' \(index 1\) has label -1 \(unknown\), but other bags are labelled"):
        BagDataset([np.zeros((1, 2))] * 3, [1, -1, 0], names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"bag '0' \(index 0\) has label -2"):
        BagDataset([np.zeros((1, 2))], [-2])


def test_label_values_travel_with_subsets_and_views() -> None:
    ds = BagDataset(
        [np.ones((2, 2)), np.zeros((1, 2)), np.full((3, 2), 2.0)],
        [1, 0, 1],
        label_values=["benign", "tumor"],
        class_names=["B", "T"],
        splits=["train", "test", "train"],
        groups=["p1", "p2", "p1"],
    )
    assert ds.label_values == ["benign", "tumor"] and ds.has_labels
    sub = ds.subset([2, 1])
    assert sub.label_values == ["benign", "tumor"] and sub.splits == ["train", "test"] and sub.groups == ["p1", "p2"]
    z = Standardizer().fit_transform(sub)
    assert z.label_values == ["benign", "tumor"] and z.groups == ["p1", "p2"] and z.splits == ["train", "test"]
    assert BagDataset([np.ones((1, 1))] * 2, [0, 1]).label_values == [0, 1]  # default: the classes themselves
    with pytest.raises(ValueError, match=r"got 3 label_values"):
        BagDataset([np.ones((1, 1))] * 2, [0, 1], label_values=["a", "b", "c"])
    with pytest.raises(ValueError, match="got 1 group ids for 2 bags"):
        BagDataset([np.ones((1, 1))] * 2, [0, 1], groups=["g"])


def test_check_trainable() -> None:
    ok = BagDataset([np.ones((1, 2))] * 3, [0, 1, 0], name="ok")
    check_trainable(ok)
    one = BagDataset([np.ones((1, 2))] * 3, [1, 1, 1], class_names=["neg", "pos"], name="one")
    with pytest.raises(
        ValueError,
        match=r"fold 2 training bags \('one'\) has bags of only one class \(bags per class: neg: 0, pos: 3\)",
    ):
        check_trainable(one, what="fold 2 training bags")
    with pytest.raises(ValueError, match="training set .* is unlabeled"):
        check_trainable(_unlabeled())
    two_of_three = BagDataset([np.ones((1, 2))] * 2, torch.tensor([0, 2]), num_classes=3)
    check_trainable(two_of_three)  # two classes present is enough
