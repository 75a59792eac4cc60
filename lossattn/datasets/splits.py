"""Stratified splits *by bag* (never by instance), optionally by group (case / patient), repeatable by seed.

With groups, every bag of a group lands on the same side of a split: in whole-slide pathology several slides
of one patient are near-duplicates, and splitting them apart leaks the test set into training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "stratified_kfold",
    "repeated_stratified_kfold",
    "stratified_group_kfold",
    "train_val_split",
    "split_indices",
]


def _labels_of(labels: Any) -> np.ndarray:
    arr = np.asarray(getattr(labels, "labels", labels))
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D (one per bag), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        name = getattr(labels, "name", None)
        what = f"dataset '{name}'" if name is not None else "the labels"
        raise ValueError(
            f"cannot stratify: {what} has bags with label {int(arr.min())} (unknown; an unlabeled dataset); "
            f"stratified splits need every bag's label"
        )
    return arr.astype(np.int64)


def _groups_of(groups: Any, n: int) -> np.ndarray:
    """Group ids as strings ``(n,)``."""
    arr = np.asarray([str(g) for g in groups])
    if arr.shape != (n,):
        raise ValueError(f"got {arr.size} group ids for {n} bags; expected one group (case / patient id) per bag")
    return arr


def split_indices(dataset: Any, split: str) -> np.ndarray:
    """Positions of the bags whose split column value equals ``split`` (tables and manifests with a split column).

    Args:
        dataset: A bag dataset with ``splits`` (``None`` when its source has no split column).
        split: The value to select, e.g. ``"train"`` or ``"test"``.

    Returns:
        Sorted int64 bag positions (at least one).

    Raises:
        ValueError: The dataset has no split column, or no bag has this split (the message lists those present).
    """
    name = getattr(dataset, "name", "?")
    splits = getattr(dataset, "splits", None)
    if splits is None:
        raise ValueError(
            f"dataset '{name}' has no split column, so there is no {split!r} split; add a column 'split' (values "
            f"such as train/test) to the table or manifest, or pass split_column=<its name> when loading, or use "
            f"cross-validation instead"
        )
    values = np.asarray(splits)
    idx = np.flatnonzero(values == split).astype(np.int64)
    if idx.size == 0:
        present = ", ".join(repr(v) for v in sorted(set(values.tolist())))
        raise ValueError(f"dataset '{name}' has no bags with split {split!r}; its split column holds {present}")
    return idx


def _check_class_counts(labels: np.ndarray, needed: int, reason: str) -> None:
    classes, counts = np.unique(labels, return_counts=True)
    small = counts < needed
    if small.any():
        c, k = int(classes[small][0]), int(counts[small][0])
        raise ValueError(f"class {c} has only {k} bag(s); {reason}")


def stratified_kfold(
    labels: Any, n_splits: int = 10, seed: int = 0, *, groups: Any = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold split of bags.

    Args:
        labels: Bag labels, int array ``(B,)`` (or a dataset with ``.labels``).
        n_splits: Number of folds (>= 2).
        seed: Shuffling seed; the same seed gives the same folds.
        groups: Optional group id per bag ``(B,)``; given, the split is :func:`stratified_group_kfold`.

    Returns:
        ``n_splits`` pairs ``(train_idx, test_idx)`` of sorted int64 bag positions; the test folds partition
        ``0 .. B-1`` and each keeps the class proportions.

    Raises:
        ValueError: ``n_splits < 2``, or a class has fewer than ``n_splits`` bags.
    """
    from sklearn.model_selection import StratifiedKFold

    if groups is not None:
        return stratified_group_kfold(labels, groups, n_splits, seed)
    y = _labels_of(labels)
    n_splits = int(n_splits)
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    _check_class_counts(
        y,
        n_splits,
        f"stratified {n_splits}-fold splitting needs at least n_splits={n_splits} bags of every class so each "
        f"test fold holds one (use fewer folds, or merge/drop the class)",
    )
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=int(seed) % (2**32))
    return [(np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64)) for tr, te in skf.split(np.zeros(len(y)), y)]


def repeated_stratified_kfold(
    labels: Any, n_splits: int = 10, n_repeats: int = 5, seed: int = 0, *, groups: Any = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold repeated with different shuffles (the classic-MIL protocol: 10 folds x 5).

    Args:
        labels: Bag labels ``(B,)`` (or a dataset).
        n_splits: Folds per repeat.
        n_repeats: Number of repeats (>= 1).
        seed: Base seed; repeat ``r`` uses a seed derived from ``(seed, r)``.
        groups: Optional group id per bag; given, each repeat is a :func:`stratified_group_kfold`.

    Returns:
        ``n_repeats * n_splits`` pairs ``(train_idx, test_idx)``, repeat-major: element ``r * n_splits + k`` is
        fold ``k`` of repeat ``r``.

    Raises:
        ValueError: As :func:`stratified_kfold`, or ``n_repeats < 1``.
    """
    if int(n_repeats) < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for r in range(int(n_repeats)):
        sub_seed = int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0])
        out.extend(stratified_kfold(labels, n_splits, sub_seed, groups=groups))
    return out


def _stratification_cost_increase(current: np.ndarray, add: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Increase of ``sum_k (current_k - target_k)^2 / target_k`` when ``add`` is added to ``current``.

    ``current`` is ``(..., K)``; the cost is a chi-square-like distance from the target class counts, so
    weighting by ``1 / target_k`` makes a rare class as important as a common one.
    """
    return ((2.0 * (current - target) * add + add**2) / target).sum(axis=-1)


def stratified_group_kfold(
    labels: Any, groups: Any = None, n_splits: int = 10, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-fold split of bags by group (case / patient), stratified by label as well as the groups allow.

    No group has bags in two test folds, so no group is ever in both the training and the test bags of a
    fold. Groups are placed greedily, largest first (equal sizes in a seeded random order), each into the fold
    where it brings the per-class bag counts closest to ``class total / n_splits`` (the increase of
    ``sum_k (count_fk - target_k)^2 / target_k``), while a fold is still empty only into an empty fold. With
    one bag per group this is a stratified k-fold (class counts per fold differ by at most one).

    Args:
        labels: Bag labels ``(B,)`` (or a dataset with ``.labels``, and ``.groups`` used when ``groups`` is
            ``None``).
        groups: Group id of each bag ``(B,)`` (strings or ints).
        n_splits: Number of folds (>= 2, at most the number of groups).
        seed: The same seed and inputs give the same folds.

    Returns:
        ``n_splits`` pairs ``(train_idx, test_idx)`` of sorted int64 bag positions; the test folds partition
        ``0 .. B-1``, each is non-empty and holds whole groups.

    Raises:
        ValueError: ``n_splits < 2``, more folds than groups, no groups given, unlabeled bags, or a length
            mismatch.
    """
    y = _labels_of(labels)
    if groups is None:
        groups = getattr(labels, "groups", None)
        if groups is None:
            raise ValueError(
                "stratified_group_kfold needs groups: pass groups=(one case/patient id per bag), or a dataset loaded "
                "with a group column (group_column=)"
            )
    g = _groups_of(groups, len(y))
    n_splits = int(n_splits)
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    group_ids, g_idx = np.unique(g, return_inverse=True)
    n_groups = len(group_ids)
    if n_groups < n_splits:
        raise ValueError(
            f"{n_splits} folds need at least {n_splits} groups, but the {len(y)} bags belong to only {n_groups} "
            f"group(s); use at most {n_groups} folds"
        )
    classes, y_idx = np.unique(y, return_inverse=True)
    counts = np.zeros((n_groups, len(classes)), dtype=np.float64)  # (G, K) bags of each class per group
    np.add.at(counts, (g_idx.ravel(), y_idx.ravel()), 1.0)
    target = counts.sum(axis=0) / n_splits  # (K,)
    rng = np.random.default_rng([int(seed), 0x6A0F])
    order = rng.permutation(n_groups)
    order = order[np.argsort(-counts.sum(axis=1)[order], kind="stable")]
    fold_counts = np.zeros((n_splits, len(classes)), dtype=np.float64)  # (n_splits, K)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    for gi in order:
        empty = np.flatnonzero(fold_counts.sum(axis=1) == 0)
        cand = rng.permutation(empty if empty.size else np.arange(n_splits))  # random among equal costs
        cost = _stratification_cost_increase(fold_counts[cand], counts[gi], target)
        f = int(cand[np.argmin(cost)])
        fold_of_group[gi] = f
        fold_counts[f] += counts[gi]
    fold_of_bag = fold_of_group[g_idx.ravel()]
    everything = np.arange(len(y), dtype=np.int64)
    return [(everything[fold_of_bag != f], everything[fold_of_bag == f]) for f in range(n_splits)]


def train_val_split(
    labels: Any, indices: Any = None, val_fraction: float = 0.1, seed: int = 0, *, groups: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of (a subset of) bags into training and validation bags.

    Typical use: carve the validation split from a fold's training bags, never from its test bags:
    ``tr, va = train_val_split(ds.labels, train_idx, val_fraction=0.1, seed=s)``.

    Args:
        labels: Labels of *all* bags ``(B,)`` (or a dataset with ``.labels``).
        indices: Bag positions to split (default: all bags).
        val_fraction: Share of each class sent to validation, in ``(0, 1)``; each class gets
            ``round(val_fraction * n_c)`` validation bags, at least 1 and at most ``n_c - 1``.
        seed: Seed; the same seed and inputs give the same split.
        groups: Optional group id of *every* bag ``(B,)`` (case / patient). Given, whole groups go to
            validation: groups are visited in a seeded random order and each is sent to validation when that
            brings the validation class counts closer to ``val_fraction`` of the pool's (the same cost as
            :func:`stratified_group_kfold`); at least one group goes to each side.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 bag positions, disjoint, together equal to ``indices``.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``, duplicate indices, a class with fewer than 2 bags
            (without groups), or fewer than 2 groups in the pool (with groups).
    """
    y = _labels_of(labels)
    pool = np.arange(len(y), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if np.unique(pool).size != pool.size:
        raise ValueError("indices contain duplicates")
    if pool.size and (pool.min() < 0 or pool.max() >= len(y)):
        raise ValueError(f"indices must lie in 0..{len(y) - 1}")
    if groups is not None:
        return _grouped_train_val_split(y, pool, _groups_of(groups, len(y)), float(val_fraction), int(seed))
    _check_class_counts(
        y[pool], 2, "a stratified train/validation split needs at least 2 bags of every class (1 train, 1 val)"
    )
    rng = np.random.default_rng([int(seed), 0x5EED])
    val_parts = []
    for c in np.unique(y[pool]):
        members = np.sort(pool[y[pool] == c])
        k = int(np.clip(round(float(val_fraction) * members.size), 1, members.size - 1))
        val_parts.append(rng.permutation(members)[:k])
    val = np.sort(np.concatenate(val_parts)).astype(np.int64)
    train = np.setdiff1d(pool, val).astype(np.int64)
    return train, val


def _grouped_train_val_split(
    y: np.ndarray, pool: np.ndarray, g: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    group_ids, g_idx = np.unique(g[pool], return_inverse=True)
    n_groups = len(group_ids)
    if n_groups < 2:
        raise ValueError(
            f"a grouped train/validation split needs bags of at least 2 groups; the {pool.size} bags to split all "
            f"belong to group {str(group_ids[0])!r}"
            if n_groups
            else "no bags to split"
        )
    classes, y_idx = np.unique(y[pool], return_inverse=True)
    counts = np.zeros((n_groups, len(classes)), dtype=np.float64)  # (G, K)
    np.add.at(counts, (g_idx.ravel(), y_idx.ravel()), 1.0)
    target = val_fraction * counts.sum(axis=0)  # (K,)
    rng = np.random.default_rng([seed, 0x5EED, 1])
    in_val = np.zeros(n_groups, dtype=bool)
    val = np.zeros(len(classes), dtype=np.float64)
    for gi in rng.permutation(n_groups):
        if _stratification_cost_increase(val, counts[gi], target) < 0:
            in_val[gi] = True
            val += counts[gi]
    if not in_val.any():  # every group alone overshoots: take the one that overshoots least
        in_val[int(np.argmin(_stratification_cost_increase(val, counts, target)))] = True
    if in_val.all():
        in_val[int(np.argmin(counts.sum(axis=1)))] = False
    val_bags = np.sort(pool[in_val[g_idx.ravel()]]).astype(np.int64)
    train_bags = np.sort(pool[~in_val[g_idx.ravel()]]).astype(np.int64)
    return train_bags, val_bags
