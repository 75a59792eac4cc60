"""Multi-label bags: a bag carries a *set* of labels (several target classes may co-occur).

Storage: a multi-label dataset is a plain :class:`~lossattn.datasets.BagDataset` whose integer bag label is
the *bit code* of the label set, ``code = Σ_c y_c · 2^c`` (so ``num_classes = 2^K``), with
``meta["multilabel"] = {"num_labels": K, "label_names": [...]}``. Everything that works on a
:class:`BagDataset` keeps working — :meth:`~BagDataset.subset`, :class:`~lossattn.datasets.Standardizer`,
:func:`~lossattn.datasets.collate_bags`, and stratified splits, which then stratify by label set — and
:func:`multilabel_targets` / :func:`decode_label_codes` give the multi-hot ``(B, K)`` targets back.

Instance labels follow the single-label generators: ``j`` (1 … K) for an instance of the j-th target class
(label ``j − 1``), ``0`` for a non-target instance, ``-1`` for unknown.

Generators (:func:`make_multilabel_bags_from_pool`, :func:`make_multilabel_mnist_bags`,
:func:`make_multilabel_digits_bags`): bag size ``max(1, round(Normal(mean, std)))`` as in MNIST-bags; then

* ``label_probability=p`` (default 0.5): each target class is in the bag's label set independently with
  probability ``p`` (with ``p = 0.5`` all ``2^K`` label sets are equally likely). The bag gets one image of
  each class of its set, and its other ``n − |S|`` instances are drawn uniformly from the images of the
  non-target classes and of the classes in ``S`` (so a class of ``S`` may appear several times, a class
  outside ``S`` never). A bag smaller than its label set is enlarged to ``|S|`` instances.
* ``label_probability=None``: instances are drawn uniformly from the whole pool and the label set is whatever
  target classes turn up (with MNIST digits (3, 5, 9) and 10 instances, each label is present in about
  two bags of three).

Within a bag images are drawn without replacement; every generator owns a private
``numpy.random.Generator``, so the same arguments give the same bags.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .bags import BagDataset
from .digits import digits_mean_std, load_digits_split
from .generators import bags_from_pool_indices, sample_bag_sizes
from .mnist import MNIST_MEAN, MNIST_STD, load_mnist

__all__ = [
    "MAX_LABELS",
    "encode_label_sets",
    "decode_label_codes",
    "is_multilabel",
    "num_labels_of",
    "multilabel_targets",
    "make_multilabel_dataset",
    "make_multilabel_bags_from_pool",
    "make_multilabel_mnist_bags",
    "make_multilabel_digits_bags",
]

MAX_LABELS = 16  # codes live in 0 .. 2^K - 1; BagDataset keeps per-class counts of that length


def _check_num_labels(K: int) -> int:
    K = int(K)
    if not 1 <= K <= MAX_LABELS:
        raise ValueError(f"multi-label bags need 1 <= K <= {MAX_LABELS} labels, got {K}")
    return K


def encode_label_sets(targets: Any) -> np.ndarray:
    """Multi-hot ``(B, K)`` label sets → int64 bit codes ``(B,)`` (``Σ_c y_c 2^c``)."""
    y = np.asarray(targets.numpy() if isinstance(targets, torch.Tensor) else targets)
    if y.ndim != 2:
        raise ValueError(f"label sets must be a multi-hot array of shape (B, K), got shape {y.shape}")
    _check_num_labels(y.shape[1])
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("label sets must be multi-hot: every value 0 or 1")
    return (y.astype(np.int64) << np.arange(y.shape[1], dtype=np.int64)).sum(axis=1).astype(np.int64)


def decode_label_codes(codes: Any, num_labels: int) -> np.ndarray:
    """Bit codes ``(B,)`` → multi-hot int64 ``(B, K)``."""
    K = _check_num_labels(num_labels)
    c = np.asarray(codes.numpy() if isinstance(codes, torch.Tensor) else codes, dtype=np.int64).ravel()
    if c.size and (c.min() < 0 or c.max() >= 2**K):
        raise ValueError(f"label codes must lie in 0..{2**K - 1} for K={K}, got {c.min()}..{c.max()}")
    return (c[:, None] >> np.arange(K, dtype=np.int64)) & 1


def is_multilabel(dataset: Any) -> bool:
    """Whether ``dataset`` is a multi-label dataset of this module (its ``meta`` says so)."""
    return isinstance(getattr(dataset, "meta", None), dict) and "multilabel" in dataset.meta


def num_labels_of(dataset: Any) -> int:
    """K of a multi-label dataset."""
    if not is_multilabel(dataset):
        raise ValueError(
            f"dataset {getattr(dataset, 'name', dataset)!r} is not multi-label "
            "(build it with make_multilabel_dataset or a make_multilabel_* generator)"
        )
    return int(dataset.meta["multilabel"]["num_labels"])


def multilabel_targets(dataset: Any) -> np.ndarray:
    """Multi-hot bag targets ``(B, K)`` int64 of a multi-label dataset, in dataset order."""
    return decode_label_codes(dataset.labels, num_labels_of(dataset))


def _ml_meta(K: int, label_names: Sequence[str] | None) -> dict[str, Any]:
    names = [str(c) for c in range(K)] if label_names is None else [str(n) for n in label_names]
    if len(names) != K:
        raise ValueError(f"got {len(names)} label names for {K} labels")
    return {"num_labels": K, "label_names": names}


def make_multilabel_dataset(
    bags: Sequence[Any],
    label_sets: Any,
    *,
    instance_labels: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    name: str = "multilabel-bags",
    meta: dict[str, Any] | None = None,
) -> BagDataset:
    """A multi-label dataset from per-bag arrays and multi-hot label sets.

    Args:
        bags: ``B`` arrays ``(n_i, *instance_shape)``.
        label_sets: multi-hot ``(B, K)``.
        instance_labels: optional per-bag int arrays ``(n_i,)`` (``c + 1`` = instance of label ``c``, 0 = none,
            -1 = unknown).
        names: optional bag names.
        label_names: optional names of the K labels.
        name: dataset name.
        meta: extra provenance.

    Returns:
        A :class:`BagDataset` with bit-coded labels (see the module doc).
    """
    codes = encode_label_sets(label_sets)
    K = int(np.asarray(label_sets).shape[1])
    info = dict(meta or {})
    info["multilabel"] = _ml_meta(K, label_names)
    return BagDataset(bags, codes, instance_labels=instance_labels, names=names, num_classes=2**K, name=name, meta=info)


def make_multilabel_bags_from_pool(
    images: Any,
    labels: Any,
    num_bags: int,
    target_classes: Sequence[int] = (3, 5, 9),
    mean_bag_size: float = 10.0,
    std_bag_size: float = 2.0,
    seed: int = 0,
    *,
    label_probability: float | None = 0.5,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    name: str = "multilabel-bags",
    split: str | None = None,
    label_names: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
    pool_ids: Any = None,
) -> BagDataset:
    """Draws multi-label bags from a labelled pool of instances (see the module doc for the rules).

    Args:
        images: pool ``(P, *instance_shape)`` (array, tensor, or object with ``len()`` and ``obj[int_array]``).
        labels: class of each pool image ``(P,)``.
        num_bags: number of bags.
        target_classes: the K target classes ``(t_1, …, t_K)``; label ``c`` = "the bag holds class t_{c+1}".
        mean_bag_size: mean of the bag-size normal.
        std_bag_size: its standard deviation.
        seed: seed of the private generator.
        label_probability: probability that each target class is in a bag's label set, in ``(0, 1]``; None
            draws instances uniformly from the pool instead.
        normalize: optional ``(mean, std)`` per channel, applied after the /255 of uint8 pixels.
        name: dataset name.
        split: split tag (``meta["split"]``, bag names ``"train-00000"``).
        label_names: names of the K labels (default: the target classes).
        meta: extra provenance.
        pool_ids: optional ids of the pool images, stored as ``source_index``.

    Returns:
        A multi-label :class:`BagDataset` (bit-coded labels, ``meta["multilabel"]``); instance labels ``0 … K``.
    """
    pool_labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).ravel()
    n_pool = pool_labels.shape[0]
    if len(images) != n_pool:
        raise ValueError(f"{name}: {len(images)} images but {n_pool} labels")
    targets = tuple(int(t) for t in target_classes)
    K = len(targets)
    if K == 0:
        raise ValueError(f"{name}: target_classes must hold at least one class")
    _check_num_labels(K)
    if len(set(targets)) != K:
        raise ValueError(f"{name}: target_classes {targets} has duplicates")
    present = set(np.unique(pool_labels).tolist())
    absent = [t for t in targets if t not in present]
    if absent:
        raise ValueError(f"{name}: target class(es) {absent} do not occur in the pool (classes {sorted(present)})")
    if int(num_bags) < 1:
        raise ValueError(f"{name}: num_bags must be >= 1, got {num_bags}")
    if label_probability is not None and not 0.0 < float(label_probability) <= 1.0:
        raise ValueError(f"{name}: label_probability must be in (0, 1] or None, got {label_probability}")
    inst_of_pool = np.zeros(n_pool, dtype=np.int64)
    for j, t in enumerate(targets, start=1):
        inst_of_pool[pool_labels == t] = j
    groups = [np.flatnonzero(inst_of_pool == j) for j in range(K + 1)]

    rng = np.random.default_rng(seed)
    sizes = sample_bag_sizes(rng, int(num_bags), mean_bag_size, std_bag_size)
    restricted: dict[tuple[int, ...], np.ndarray] = {}
    parts: list[np.ndarray] = []
    for i, n in enumerate(sizes.tolist()):
        if label_probability is None:
            if n > n_pool:
                raise ValueError(f"{name}: cannot draw a bag of {n} instances from a pool of {n_pool} images")
            idx = rng.choice(n_pool, n, replace=False)
        else:
            S = tuple(int(c) for c in np.flatnonzero(rng.random(K) < float(label_probability)))
            n = max(n, len(S))
            sizes[i] = n
            if S not in restricted:
                restricted[S] = np.concatenate([groups[0]] + [groups[c + 1] for c in S])
            allowed = restricted[S]
            if allowed.size < n:
                raise ValueError(f"{name}: cannot draw a bag of {n} instances from {allowed.size} allowed images")
            forced = np.array([rng.choice(groups[c + 1]) for c in S], dtype=np.int64)
            candidates = rng.choice(allowed, n, replace=False)
            rest = candidates[~np.isin(candidates, forced)][: n - len(S)]
            idx = np.concatenate([forced, rest])[rng.permutation(n)]
        parts.append(idx.astype(np.int64))
    flat = np.concatenate(parts)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    inst = inst_of_pool[flat]
    label_sets = np.zeros((len(parts), K), dtype=np.int64)
    for i in range(len(parts)):
        present_j = np.unique(inst[offsets[i] : offsets[i + 1]])
        label_sets[i, present_j[present_j > 0] - 1] = 1
    info = {
        "seed": seed,
        "target_classes": list(targets),
        "mean_bag_size": float(mean_bag_size),
        "std_bag_size": float(std_bag_size),
        "label_probability": None if label_probability is None else float(label_probability),
        "pool_size": int(n_pool),
    }
    info.update(meta or {})
    info["multilabel"] = _ml_meta(K, [str(t) for t in targets] if label_names is None else label_names)
    return bags_from_pool_indices(
        images,
        flat,
        offsets,
        encode_label_sets(label_sets),
        inst,
        num_classes=2**K,
        normalize=normalize,
        name=name,
        split=split,
        meta=info,
        pool_ids=pool_ids,
    )


def _check_digits(target_digits: Sequence[int]) -> tuple[int, ...]:
    targets = tuple(int(d) for d in target_digits)
    bad = [d for d in targets if not 0 <= d <= 9]
    if bad:
        raise ValueError(f"target_digits must be digits 0..9, got {bad}")
    return targets


def make_multilabel_mnist_bags(
    split: str,
    num_bags: int,
    target_digits: Sequence[int] = (3, 5, 9),
    mean_bag_size: float = 10.0,
    std_bag_size: float = 2.0,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    *,
    label_probability: float | None = 0.5,
) -> BagDataset:
    """Multi-label MNIST-bags: label ``c`` = "the bag holds the digit ``target_digits[c]``" (several may co-occur).

    Args:
        split: ``"train"`` (bags from the 60,000 training images) or ``"test"`` (the 10,000 test images).
        num_bags: number of bags.
        target_digits: the K target digits.
        mean_bag_size: mean bag size.
        std_bag_size: standard deviation of the bag size.
        seed: seed of the private generator.
        root: data root holding the MNIST files (see :func:`~lossattn.datasets.load_mnist`).
        label_probability: see :func:`make_multilabel_bags_from_pool`.

    Returns:
        A multi-label dataset named ``"mnist-bags-multilabel"``, instances float32 ``(n_i, 1, 28, 28)``
        normalised with the MNIST mean/std; ``source_index`` = image index in the split.
    """
    targets = _check_digits(target_digits)
    images, labels = load_mnist(split, root)
    return make_multilabel_bags_from_pool(
        images[:, None],
        labels,
        num_bags,
        targets,
        mean_bag_size,
        std_bag_size,
        seed,
        label_probability=label_probability,
        normalize=(MNIST_MEAN, MNIST_STD),
        name="mnist-bags-multilabel",
        split=split,
    )


def make_multilabel_digits_bags(
    split: str,
    num_bags: int,
    target_digits: Sequence[int] = (3, 5, 9),
    mean_bag_size: float = 10.0,
    std_bag_size: float = 2.0,
    seed: int = 0,
    *,
    label_probability: float | None = 0.5,
) -> BagDataset:
    """Multi-label digits-bags: the same construction on scikit-learn's 8×8 digits (no download needed).

    Train and test bags never share an image (see :func:`~lossattn.datasets.load_digits_split`).
    """
    targets = _check_digits(target_digits)
    images, labels, ids = load_digits_split(split)
    mean, std = digits_mean_std()
    return make_multilabel_bags_from_pool(
        images,
        labels,
        num_bags,
        targets,
        mean_bag_size,
        std_bag_size,
        seed,
        label_probability=label_probability,
        normalize=((mean,), (std,)),
        name="digits-bags-multilabel",
        split=split,
        pool_ids=ids,
    )
