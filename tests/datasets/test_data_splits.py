"""Stratified k-fold and train/validation splits by bag."""

from __future__ import annotations

import numpy as np
import pytest

from lossattn.datasets import BagDataset, repeated_stratified_kfold, stratified_kfold, train_val_split

LABELS = np.array([0] * 47 + [1] * 45)[np.random.default_rng(0).permutation(92)]  # MUSK1-like


def test_kfold_partitions_and_stratifies() -> None:
    folds = stratified_kfold(LABELS, n_splits=10, seed=0)
    assert len(folds) == 10
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(92))
    for tr, te in folds:
        assert np.intersect1d(tr, te).size == 0
        assert np.union1d(tr, te).size == 92
        assert tr.dtype == np.int64 and te.dtype == np.int64
        counts = np.bincount(LABELS[te], minlength=2)
        assert abs(counts[0] - 4.7) <= 1 and abs(counts[1] - 4.5) <= 1


def test_kfold_is_repeatable_by_seed() -> None:
    a = stratified_kfold(LABELS, 10, seed=1)
    b = stratified_kfold(LABELS, 10, seed=1)
    c = stratified_kfold(LABELS, 10, seed=2)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


def test_kfold_accepts_a_dataset() -> None:
    ds = BagDataset([np.ones((1, 2))] * 6, [0, 1, 0, 1, 0, 1])
    assert len(stratified_kfold(ds, 3, 0)) == 3


def test_kfold_too_few_bags_in_a_class() -> None:
    y = np.array([0] * 20 + [1] * 3)
    with pytest.raises(ValueError, match=r"class 1 has only 3 bag\(s\).*n_splits=10"):
        stratified_kfold(y, 10, 0)
    with pytest.raises(ValueError, match="n_splits must be >= 2"):
        stratified_kfold(y, 1, 0)


def test_repeated_kfold() -> None:
    folds = repeated_stratified_kfold(LABELS, n_splits=10, n_repeats=5, seed=0)
    assert len(folds) == 50
    for r in range(5):
        tests = np.concatenate([te for _, te in folds[r * 10 : (r + 1) * 10]])
        assert sorted(tests.tolist()) == list(range(92))
    assert not np.array_equal(folds[0][1], folds[10][1])
    again = repeated_stratified_kfold(LABELS, 10, 5, seed=0)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(folds, again, strict=True))
    with pytest.raises(ValueError):
        repeated_stratified_kfold(LABELS, 10, 0)


def test_train_val_split_from_training_fold() -> None:
    tr, te = stratified_kfold(LABELS, 10, 0)[0]
    a, v = train_val_split(LABELS, tr, val_fraction=0.2, seed=3)
    assert np.intersect1d(a, v).size == 0
    assert sorted(np.concatenate([a, v]).tolist()) == sorted(tr.tolist())
    assert np.intersect1d(v, te).size == 0
    for c in (0, 1):
        n_c = int((LABELS[tr] == c).sum())
        assert int((LABELS[v] == c).sum()) == round(0.2 * n_c)
    a2, v2 = train_val_split(LABELS, tr, val_fraction=0.2, seed=3)
    assert np.array_equal(v, v2) and np.array_equal(a, a2)
    _, v3 = train_val_split(LABELS, tr, val_fraction=0.2, seed=4)
    assert not np.array_equal(v, v3)
    all_tr, all_v = train_val_split(LABELS, val_fraction=0.1, seed=0)
    assert all_tr.size + all_v.size == 92


def test_train_val_split_errors() -> None:
    with pytest.raises(ValueError, match=r"class 1 has only 1 bag"):
        train_val_split(np.array([0, 0, 0, 1]), val_fraction=0.25)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(LABELS, val_fraction=1.0)
    with pytest.raises(ValueError, match="duplicates"):
        train_val_split(LABELS, [0, 0, 1])
