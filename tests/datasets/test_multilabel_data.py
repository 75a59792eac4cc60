"""Multi-label bags: label-set codes, the pool generator, digits/MNIST wrappers."""

from __future__ import annotations

import numpy as np
import pytest

from lossattn.datasets import Standardizer, collate_bags, train_val_split
from lossattn.datasets.multilabel import (
    decode_label_codes,
    encode_label_sets,
    is_multilabel,
    make_multilabel_bags_from_pool,
    make_multilabel_dataset,
    make_multilabel_digits_bags,
    make_multilabel_mnist_bags,
    multilabel_targets,
    num_labels_of,
)


def test_codes_round_trip_and_errors():
    Y = np.array([[0, 0, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]])
    codes = encode_label_sets(Y)
    assert codes.tolist() == [0, 5, 7, 2]
    assert np.array_equal(decode_label_codes(codes, 3), Y)
    with pytest.raises(ValueError, match="multi-hot"):
        encode_label_sets(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="shape"):
        encode_label_sets(np.array([1, 0]))
    with pytest.raises(ValueError, match="0..7"):
        decode_label_codes([8], 3)


def test_make_multilabel_dataset_survives_subset_and_standardizer():
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(int(rng.integers(1, 5)), 3)) for _ in range(6)]
    Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
    ds = make_multilabel_dataset(bags, Y, label_names=["a", "b"])
    assert is_multilabel(ds) and num_labels_of(ds) == 2 and ds.num_classes == 4
    assert np.array_equal(multilabel_targets(ds), Y)
    sub = ds.subset([4, 2])
    assert np.array_equal(multilabel_targets(sub), Y[[4, 2]])
    std = Standardizer().fit(sub).transform(sub)
    assert np.array_equal(multilabel_targets(std), Y[[4, 2]]) and std.meta["multilabel"]["label_names"] == ["a", "b"]
    with pytest.raises(ValueError, match="not multi-label"):
        num_labels_of(object())


def _pool(seed=0, per_class=40):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    images = labels[:, None].astype(np.float32) + rng.normal(0, 0.01, (labels.size, 2)).astype(np.float32)
    return images, labels


@pytest.mark.parametrize("p", [0.5, 0.2, 1.0, None])
def test_pool_generator_labels_match_content(p):
    images, labels = _pool()
    ds = make_multilabel_bags_from_pool(images, labels, 60, (3, 5, 9), 6, 2, seed=1, label_probability=p, split="train")
    Y = multilabel_targets(ds)
    assert Y.shape == (60, 3) and ds.meta["multilabel"]["label_names"] == ["3", "5", "9"]
    inst = ds.instance_labels.numpy()
    offsets = ds.offsets
    for i in range(len(ds)):
        il = inst[offsets[i] : offsets[i + 1]]
        digits = ds[i].x[:, 0].round().long().numpy()
        assert set(np.flatnonzero(Y[i]).tolist()) == {j - 1 for j in il if j > 0}
        expected = np.select([digits == 3, digits == 5, digits == 9], [1, 2, 3], 0)
        assert np.array_equal(il, expected)
        assert len(np.unique(ds.source_index[offsets[i] : offsets[i + 1]])) == len(il)  # no repeats in a bag
    if p == 1.0:
        assert Y.all()
    if p == 0.5:
        # several labels co-occur, and every label set shows up
        assert (Y.sum(1) >= 2).mean() > 0.25 and len(np.unique(ds.labels)) == 8


def test_pool_generator_is_deterministic_and_validates():
    images, labels = _pool()
    a = make_multilabel_bags_from_pool(images, labels, 20, (3, 5), seed=7)
    b = make_multilabel_bags_from_pool(images, labels, 20, (3, 5), seed=7)
    c = make_multilabel_bags_from_pool(images, labels, 20, (3, 5), seed=8)
    assert np.array_equal(a.source_index, b.source_index) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.source_index, c.source_index) or not np.array_equal(a.labels, c.labels)
    for kwargs, match in [
        ({"target_classes": ()}, "at least one"),
        ({"target_classes": (3, 3)}, "duplicates"),
        ({"target_classes": (11,)}, "do not occur"),
        ({"num_bags": 0}, "num_bags"),
        ({"label_probability": 0.0}, "label_probability"),
    ]:
        args = {"num_bags": 5, "target_classes": (3,), **kwargs}
        with pytest.raises(ValueError, match=match):
            make_multilabel_bags_from_pool(images, labels, **args)


def test_digits_multilabel_bags_batch_and_split():
    ds = make_multilabel_digits_bags("train", 40, seed=3)
    test = make_multilabel_digits_bags("test", 10, seed=3)
    assert ds.instance_shape == (1, 8, 8) and num_labels_of(ds) == 3
    assert not set(ds.source_index) & set(test.source_index)  # train and test never share an image
    batch = collate_bags([ds[i] for i in range(4)])
    assert np.array_equal(decode_label_codes(batch.labels, 3), multilabel_targets(ds)[:4])
    # stratified splits stratify by label set; classes with one bag would fail, so use a larger set
    big = make_multilabel_digits_bags("train", 120, seed=4)
    tr, va = train_val_split(big.labels, val_fraction=0.25, seed=0)
    assert len(va) >= 8 and not set(tr) & set(va)


def test_mnist_multilabel_bags(mnist_root):
    ds = make_multilabel_mnist_bags("train", 12, (3, 5, 9), seed=0, root=mnist_root)
    assert ds.instance_shape == (1, 28, 28) and ds.name == "mnist-bags-multilabel"
    assert multilabel_targets(ds).shape == (12, 3)


@pytest.fixture
def mnist_root(tmp_path):
    """A tiny fake MNIST in the standard IDX layout (the real files are not needed)."""
    from lossattn.datasets import write_idx

    rng = np.random.default_rng(0)
    root = tmp_path / "mnist"
    root.mkdir()
    for images_name, labels_name, n in [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 200),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 50),
    ]:
        write_idx(root / images_name, rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        write_idx(root / labels_name, np.tile(np.arange(10, dtype=np.uint8), n // 10))
    return tmp_path
