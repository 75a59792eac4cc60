"""Stratified splits *by bag* (never by instance), repeatable by seed."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["stratified_kfold", "repeated_stratified_kfold", "train_val_split"]


def _labels_of(labels: Any) -> np.ndarray:
    arr = np.asarray(getattr(labels, "labels", labels))
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D (one per bag), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_class_counts(labels: np.ndarray, needed: int, reason: str) -> None:
    classes, counts = np.unique(labels, return_counts=True)
    small = counts < needed
    if small.any():
        c, k = int(classes[small][0]), int(counts[small][0])
        raise ValueError(f"class {c} has only {k} bag(s); {reason}")


def stratified_kfold(labels: Any, n_splits: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold split of bags.

    Args:
        labels: Bag labels, int array ``(B,)`` (or a dataset with ``.labels``).
        n_splits: Number of folds (>= 2).
        seed: Shuffling seed; the same seed gives the same folds.

    Returns:
        ``n_splits`` pairs ``(train_idx, test_idx)`` of sorted int64 bag positions; the test folds partition
        ``0 .. B-1`` and each keeps the class proportions.

    Raises:
        ValueError: ``n_splits < 2``, or a class has fewer than ``n_splits`` bags.
    """
    from sklearn.model_selection import StratifiedKFold

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
    labels: Any, n_splits: int = 10, n_repeats: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold repeated with different shuffles (the classic-MIL protocol: 10 folds x 5).

    Args:
        labels: Bag labels ``(B,)`` (or a dataset).
        n_splits: Folds per repeat.
        n_repeats: Number of repeats (>= 1).
        seed: Base seed; repeat ``r`` uses a seed derived from ``(seed, r)``.

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
        out.extend(stratified_kfold(labels, n_splits, sub_seed))
    return out


def train_val_split(
    labels: Any, indices: Any = None, val_fraction: float = 0.1, seed: int = 0
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

    Returns:
        ``(train_idx, val_idx)``: sorted int64 bag positions, disjoint, together equal to ``indices``.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``, duplicate indices, or a class with fewer than 2 bags.
    """
    y = _labels_of(labels)
    pool = np.arange(len(y), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if np.unique(pool).size != pool.size:
        raise ValueError("indices contain duplicates")
    if pool.size and (pool.min() < 0 or pool.max() >= len(y)):
        raise ValueError(f"indices must lie in 0..{len(y) - 1}")
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
