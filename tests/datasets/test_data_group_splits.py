"""Grouped splits: stratified_group_kfold and train_val_split(groups=) never split a group, stratify as well as
the groups allow, and are deterministic per seed (property-style tests over many seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from lossattn.datasets import (
    BagDataset,
    repeated_stratified_kfold,
    stratified_group_kfold,
    stratified_kfold,
    train_val_split,
)


def _random_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (K = 2 or 3) and groups of 1-6 bags each; a group's bags mostly share a label, as a patient's slides do."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    n_groups = int(rng.integers(10, 40))
    labels, groups = [], []
    for g in range(n_groups):
        size = int(rng.integers(1, 7))
        main = int(rng.integers(k))
        for _ in range(size):
            labels.append(main if rng.random() < 0.8 else int(rng.integers(k)))
            groups.append(f"case-{g}")
    return np.asarray(labels, dtype=np.int64), np.asarray(groups)


@pytest.mark.parametrize("seed", range(40))
def test_group_kfold_properties(seed: int) -> None:
    y, g = _random_problem(seed)
    n_splits = int(np.random.default_rng(seed + 1000).integers(2, 6))
    folds = stratified_group_kfold(y, g, n_splits=n_splits, seed=seed)
    assert len(folds) == n_splits
    tests = [te for _, te in folds]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(len(y)))  # test folds partition the bags
    for train, test in folds:
        assert test.size > 0 and train.size > 0
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
        assert not set(g[train]) & set(g[test])  # no group on both sides
    fold_of_group: dict[str, int] = {}
    for f, te in enumerate(tests):
        for name in set(g[te]):
            assert fold_of_group.setdefault(name, f) == f  # each group in exactly one test fold
    again = stratified_group_kfold(y, g, n_splits=n_splits, seed=seed)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))  # deterministic


def test_group_kfold_stratifies_better_than_chance() -> None:
    """Mean absolute deviation of fold class counts from their targets, greedy vs random group assignment."""
    greedy, chance = [], []
    for seed in range(20):
        y, g = _random_problem(seed)
        classes = np.unique(y)
        target = np.array([(y == c).sum() for c in classes]) / 4
        folds = stratified_group_kfold(y, g, n_splits=4, seed=seed)
        greedy.append(np.mean([np.abs([(y[te] == c).sum() for c in classes] - target).mean() for _, te in folds]))
        rng = np.random.default_rng(seed)
        names = np.unique(g)
        fold = dict(zip(names, rng.integers(0, 4, len(names)), strict=True))
        assign = np.array([fold[x] for x in g])
        chance.append(
            np.mean([np.abs([(y[assign == f] == c).sum() for c in classes] - target).mean() for f in range(4)])
        )
    assert np.mean(greedy) < 0.5 * np.mean(chance)


def test_singleton_groups_give_a_stratified_kfold() -> None:
    y = np.array([0] * 23 + [1] * 11 + [2] * 6)
    g = np.arange(len(y))
    for seed in range(5):
        folds = stratified_group_kfold(y, g, n_splits=5, seed=seed)
        for c in range(3):
            per_fold = [int((y[te] == c).sum()) for _, te in folds]
            assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
        assert len({tuple(te) for _, te in folds}) == 5


def test_stratified_kfold_and_repeats_accept_groups() -> None:
    y, g = _random_problem(3)
    a = stratified_kfold(y, 3, seed=1, groups=g)
    b = stratified_group_kfold(y, g, 3, seed=1)
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b, strict=True))
    rep = repeated_stratified_kfold(y, 3, n_repeats=2, seed=0, groups=g)
    assert len(rep) == 6
    for train, test in rep:
        assert not set(g[train]) & set(g[test])
    assert not all(np.array_equal(rep[k][1], rep[k + 3][1]) for k in range(3))  # repeats differ


def test_group_kfold_errors() -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="3 folds need at least 3 groups, but the 4 bags belong to only 2"):
        stratified_group_kfold(y, ["a", "a", "b", "b"], n_splits=3)
    with pytest.raises(ValueError, match="n_splits must be >= 2"):
        stratified_group_kfold(y, ["a", "b", "c", "d"], n_splits=1)
    with pytest.raises(ValueError, match="got 3 group ids for 4 bags"):
        stratified_group_kfold(y, ["a", "b", "c"], n_splits=2)
    with pytest.raises(ValueError, match="needs groups"):
        stratified_group_kfold(y, None, n_splits=2)
    with pytest.raises(ValueError, match="cannot stratify"):
        stratified_group_kfold(np.array([-1, -1]), ["a", "b"], n_splits=2)
    ds = BagDataset([np.ones((1, 2))] * 4, y, groups=["a", "b", "c", "a"])
    folds = stratified_group_kfold(ds, n_splits=3, seed=0)
    assert sorted(len(te) for _, te in folds) == [1, 1, 2]


@pytest.mark.parametrize("seed", range(30))
def test_grouped_train_val_split_properties(seed: int) -> None:
    y, g = _random_problem(seed)
    pool = np.random.default_rng(seed).permutation(len(y))[: int(0.8 * len(y))]
    frac = [0.1, 0.2, 0.3][seed % 3]
    train, val = train_val_split(y, pool, val_fraction=frac, seed=seed, groups=g)
    assert train.size and val.size
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.sort(pool))
    assert not set(g[train]) & set(g[val])
    again = train_val_split(y, pool, val_fraction=frac, seed=seed, groups=g)
    assert np.array_equal(again[1], val)
    # the validation share of each class is close to the fraction asked, within what one group can change
    biggest = max(int((g[pool] == name).sum()) for name in np.unique(g[pool]))
    for c in np.unique(y[pool]):
        n_c = int((y[pool] == c).sum())
        assert abs(int((y[val] == c).sum()) - frac * n_c) <= biggest + 1


def test_grouped_train_val_split_errors_and_singletons() -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(
        ValueError, match="needs bags of at least 2 groups; the 4 bags to split all belong to group 'p'"
    ):
        train_val_split(y, groups=["p"] * 4)
    y = np.array([0] * 30 + [1] * 10)
    train, val = train_val_split(y, val_fraction=0.2, seed=0, groups=np.arange(40))
    assert (y[val] == 0).sum() == 6 and (y[val] == 1).sum() == 2  # singletons: exactly stratified
