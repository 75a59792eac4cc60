"""digits-bags: the MNIST-bags construction on scikit-learn's bundled 8x8 digits (no download needed)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from .bags import BagDataset
from .generators import make_bags_from_pool

__all__ = ["load_digits_split", "make_digits_bags"]

_TEST_EVERY = 4  # within each digit class, every 4th image (positions 3, 7, 11, ...) is a test image


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (np.asarray(d.images, dtype=np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    labels = np.asarray(d.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@functools.lru_cache(maxsize=1)
def _partition() -> tuple[np.ndarray, np.ndarray]:
    _, labels = _digits()
    test = np.zeros(labels.shape[0], dtype=bool)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        test[members[_TEST_EVERY - 1 :: _TEST_EVERY]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split of the fixed, deterministic partition of the 1,797 scikit-learn digits.

    Within each digit class (in scikit-learn's order) every 4th image is a test image: 1,352 training and
    445 test images; no image is in both.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels, ids)``: float32 ``(n, 1, 8, 8)`` in ``[0, 1]``, int64 digits ``(n,)``, and the
        int64 positions ``(n,)`` of the images in ``load_digits()``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _digits()
    ids = _partition()[0 if split == "train" else 1]
    return images[ids], labels[ids], ids


@functools.lru_cache(maxsize=1)
def digits_mean_std() -> tuple[float, float]:
    """Pixel mean and std of the training images (in ``[0, 1]`` units), used to normalise both splits."""
    images, _, _ = load_digits_split("train")
    return float(images.mean()), float(images.std())


def make_digits_bags(
    split: str,
    num_bags: int,
    target_digits: Sequence[int] = (9,),
    mean_bag_size: float = 10.0,
    std_bag_size: float = 2.0,
    seed: int = 0,
    *,
    balance: bool = False,
) -> BagDataset:
    """digits-bags: MNIST-bags rules on scikit-learn's 8x8 digits; train and test bags never share an image.

    Args:
        split: ``"train"`` (bags from the 1,352 training images) or ``"test"`` (from the 445 test images).
        num_bags: Number of bags.
        target_digits: One digit (binary) or several (multi-class, at most one target class per bag).
        mean_bag_size: Mean bag size.
        std_bag_size: Standard deviation of the bag size.
        seed: Seed of the private generator.
        balance: Draw bag labels uniformly.

    Returns:
        A :class:`BagDataset` named ``"digits-bags"`` with float32 instances ``(n_i, 1, 8, 8)`` normalised
        with the training-image mean/std; ``source_index`` = position of each image in ``load_digits()``.
    """
    images, labels, ids = load_digits_split(split)
    targets = tuple(int(d) for d in target_digits)
    bad = [d for d in targets if not 0 <= d <= 9]
    if bad:
        raise ValueError(f"target_digits must be digits 0..9, got {bad}")
    mean, std = digits_mean_std()
    return make_bags_from_pool(
        images,
        labels,
        num_bags,
        targets,
        mean_bag_size,
        std_bag_size,
        seed,
        balance=balance,
        normalize=((mean,), (std,)),
        name="digits-bags",
        split=split,
        class_names=["none"] + [str(d) for d in targets] if len(targets) > 1 else ["negative", "positive"],
        pool_ids=ids,
    )
