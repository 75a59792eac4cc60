"""MNIST images (standard IDX files) and the MNIST-bags generator (Ilse et al. 2018; Shi et al. 2020, Sec. 5)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bags import BagDataset
from .catalog import get_spec, mnist_candidates
from .errors import DataFormatError
from .generators import make_bags_from_pool
from .idx import read_idx
from .sources import data_root, find_data_file, missing_data_error

__all__ = ["load_mnist", "make_mnist_bags", "MNIST_MEAN", "MNIST_STD"]

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, size: int, mtime_ns: int) -> np.ndarray:
    del size, mtime_ns  # part of the cache key only
    return read_idx(path)


def _read(path: Path) -> np.ndarray:
    st = path.stat()
    return _read_idx_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def load_mnist(split: str, root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads one MNIST split from the standard IDX files.

    Files are looked up in ``<root>/mnist/`` and in torchvision's ``<root>/MNIST/raw/``, gzipped or not.
    Parsed arrays are cached in memory (keyed by path, size and modification time).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: Data root (default: :func:`~lossattn.datasets.data_root`).

    Returns:
        ``(images, labels)``: read-only uint8 ``(n, 28, 28)`` and uint8 ``(n,)``.

    Raises:
        DataNotFoundError: A file is missing (the message lists where it was looked for and how to fetch it).
        DataFormatError: Corrupt/truncated file, or images and labels that do not match.
    """
    split = _check_split(split)
    base = data_root(root)
    spec = get_spec("mnist-bags")
    out = []
    for stem in _STEMS[split]:
        cands = mnist_candidates(stem)
        p = find_data_file(base, cands)
        if p is None:
            raise missing_data_error(spec, base, cands, f"MNIST file {stem}[.gz]")
        out.append((p, _read(p)))
    (ip, images), (lp, labels) = out
    if images.ndim != 3 or labels.ndim != 1:
        raise DataFormatError(
            f"{ip} / {lp}: expected images (n, rows, cols) and labels (n,), got {images.shape} and {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(f"{ip} has {images.shape[0]} images but {lp} has {labels.shape[0]} labels")
    if labels.size and int(labels.max()) > 9:
        raise DataFormatError(f"{lp}: label {int(labels.max())} outside the digits 0..9")
    return images, labels


def make_mnist_bags(
    split: str,
    num_bags: int,
    target_digits: Sequence[int] = (9,),
    mean_bag_size: float = 10.0,
    std_bag_size: float = 2.0,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    *,
    balance: bool = False,
) -> BagDataset:
    """MNIST-bags: bags of MNIST digits drawn from one split.

    One target digit gives binary bags (label 1 iff the bag holds the digit); several (e.g. ``(3, 5, 9)``) give
    labels ``0 .. k`` with at most one target digit class per bag (label = position + 1 of the digit present,
    0 if none). Instance labels are ``j`` for an image of the ``j``-th target digit, else 0. See
    :func:`~lossattn.datasets.make_bags_from_pool` for the sampling.

    Args:
        split: ``"train"`` (bags from the 60,000 training images) or ``"test"`` (from the 10,000 test images).
        num_bags: Number of bags.
        target_digits: Target digits.
        mean_bag_size: Mean bag size (normal, rounded, at least 1).
        std_bag_size: Standard deviation of the bag size.
        seed: Seed of the private generator (same seed, same bags).
        root: Data root holding the MNIST files.
        balance: Draw bag labels uniformly instead of from the random-draw distribution.

    Returns:
        A :class:`BagDataset` named ``"mnist-bags"`` with instances float32 ``(n_i, 1, 28, 28)`` normalised
        with the MNIST mean/std (0.1307, 0.3081) and ``source_index`` = image index in the split.
    """
    images, labels = load_mnist(split, root)
    targets = tuple(int(d) for d in target_digits)
    bad = [d for d in targets if not 0 <= d <= 9]
    if bad:
        raise ValueError(f"target_digits must be digits 0..9, got {bad}")
    return make_bags_from_pool(
        images[:, None],
        labels,
        num_bags,
        targets,
        mean_bag_size,
        std_bag_size,
        seed,
        balance=balance,
        normalize=(MNIST_MEAN, MNIST_STD),
        name="mnist-bags",
        split=split,
        class_names=["none"] + [str(d) for d in targets] if len(targets) > 1 else ["negative", "positive"],
    )
