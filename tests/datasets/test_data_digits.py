"""digits-bags: the embedded dataset (scikit-learn digits), fixed disjoint train/test images."""

from __future__ import annotations

import numpy as np

from lossattn.datasets import load_digits_split, make_digits_bags


def test_fixed_disjoint_partition() -> None:
    tr_img, tr_lab, tr_ids = load_digits_split("train")
    te_img, te_lab, te_ids = load_digits_split("test")
    assert len(tr_ids) == 1352 and len(te_ids) == 445
    assert np.intersect1d(tr_ids, te_ids).size == 0
    assert np.union1d(tr_ids, te_ids).tolist() == list(range(1797))
    assert tr_img.shape == (1352, 1, 8, 8) and tr_img.dtype == np.float32
    assert 0.0 <= tr_img.min() and tr_img.max() <= 1.0
    assert set(np.bincount(te_lab).tolist()) <= {43, 44, 45}  # every class in the test split
    assert np.array_equal(load_digits_split("test")[2], te_ids)  # fixed


def test_train_and_test_bags_never_share_an_image(check_label_rules) -> None:
    tr = make_digits_bags("train", 300, seed=0)
    te = make_digits_bags("test", 300, seed=0)
    assert np.intersect1d(tr.source_index, te.source_index).size == 0
    _, _, te_ids = load_digits_split("test")
    assert np.isin(te.source_index, te_ids).all()
    assert tr.instance_shape == (1, 8, 8) and tr.name == "digits-bags"
    from sklearn.datasets import load_digits

    all_labels = load_digits().target.astype(np.int64)
    check_label_rules(tr, all_labels, (9,))
    check_label_rules(te, all_labels, (9,))
    x, _ = tr.to_flat()
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_multiclass_and_size_distribution(check_label_rules) -> None:
    from sklearn.datasets import load_digits

    ds = make_digits_bags("train", 1000, target_digits=(3, 5, 9), seed=2)
    check_label_rules(ds, load_digits().target.astype(np.int64), (3, 5, 9))
    assert ds.num_classes == 4 and ds.class_counts().min() > 50
    assert abs(ds.bag_sizes.mean() - 10) < 0.25 and abs(ds.bag_sizes.std() - 2.02) < 0.2


def test_determinism() -> None:
    a = make_digits_bags("train", 50, seed=5)
    b = make_digits_bags("train", 50, seed=5)
    assert np.array_equal(a.source_index, b.source_index)
    assert all(np.array_equal(x.x.numpy(), y.x.numpy()) for x, y in zip(a, b, strict=True))
