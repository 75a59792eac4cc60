"""Images as a dataset of one-image bags: arrays (or lazy sources) of images with labels, and their transforms.

An image classification run (ResNet18-MIL, the paper's Tables 4 and 5) treats every image as one bag whose
instances are the positions of the last feature map; the data side is an ordinary image dataset returning
``(image, label, index)`` (``index`` addresses the temporal ensemble of the weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageArrayDataset", "class_balanced_subset", "image_transforms", "take_images"]


def class_balanced_subset(labels: Any, size: int | None, seed: int = 0) -> np.ndarray:
    """A seeded subset with the same number of images of every class (``size / K`` each).

    Args:
        labels: int ``(n,)`` labels of the pool (classes ``0 … K−1``; the classes present define K).
        size: subset size, a multiple of the number of classes; None = every image.
        seed: the same seed gives the same subset.

    Returns:
        sorted int64 positions.

    Raises:
        ValueError: ``size`` not a positive multiple of K, or a class with fewer than ``size / K`` images.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    if size is None:
        return np.arange(len(y), dtype=np.int64)
    classes = np.unique(y)
    k = len(classes)
    if int(size) < k or int(size) % k:
        raise ValueError(f"subset size must be a positive multiple of the {k} classes, got {size}")
    per = int(size) // k
    rng = np.random.default_rng(seed)
    parts = []
    for c in classes.tolist():
        pool = np.flatnonzero(y == c)
        if pool.size < per:
            raise ValueError(
                f"class {c} has {pool.size} images, fewer than the {per} a balanced subset of {size} needs"
            )
        parts.append(rng.choice(pool, per, replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def image_transforms(
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    size: int | tuple[int, int],
    padding: int = 4,
) -> Callable[[Tensor], Tensor]:
    """torchvision transforms for uint8 image tensors ``(C, H, W)``.

    Training: random crop of ``size`` after zero padding of ``padding`` pixels, random horizontal flip;
    both: conversion to float in [0, 1] and per-channel normalisation with ``mean``/``std``.
    """
    from torchvision.transforms import v2

    ops: list[Any] = []
    if train:
        ops += [v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    tf = v2.Compose(ops)
    tf.deterministic = not train  # type: ignore[attr-defined]  # evaluation may apply it to whole batches
    return tf


class ImageArrayDataset(torch.utils.data.Dataset):
    """Images + labels (+ optional boxes) as a torch dataset returning ``(image, label, index)``.

    Args:
        images: uint8 ``(n, C, H, W)`` array, or a lazy source with ``image(i)`` (e.g.
            :class:`~lossattn.datasets.tinyimagenet.TinyImageNetSplit`) or ``source[[i]] -> (1, C, H, W)``
            (e.g. :class:`~lossattn.datasets.cifar.JpegZipImages`).
        labels: int ``(n,)``.
        transform: applied to the uint8 tensor ``(C, H, W)`` (see :func:`image_transforms`).
        boxes: optional int ``(n, 4)`` ground-truth boxes (for localization AP).

    ``index`` is the position in this dataset; the temporal ensemble is addressed by it.
    """

    def __init__(self, images: Any, labels: Any, transform: Callable | None = None, boxes: Any = None) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64).ravel()
        if len(images) != len(self.labels):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        self.transform = transform
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        if self.boxes is not None and len(self.boxes) != len(self.labels):
            raise ValueError(f"{len(self.labels)} images but {len(self.boxes)} boxes")

    def __len__(self) -> int:
        return len(self.labels)

    def raw(self, i: int) -> np.ndarray:
        """The uint8 image ``(C, H, W)`` at position ``i``."""
        if hasattr(self.images, "image"):
            return np.asarray(self.images.image(i))
        img = np.asarray(self.images[i] if isinstance(self.images, np.ndarray) else self.images[[i]])
        return img[0] if img.ndim == 4 else img

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.raw(0).shape[1:])  # type: ignore[return-value]

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        x = torch.from_numpy(np.ascontiguousarray(self.raw(int(i))))
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i]), int(i)


def take_images(images: Any, idx: np.ndarray) -> np.ndarray:
    """Decode/gather ``images[idx]`` → uint8 ``(len(idx), C, H, W)``."""
    return np.ascontiguousarray(np.asarray(images[np.asarray(idx, dtype=np.int64)]))
