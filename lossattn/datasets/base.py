"""The interface of every bag dataset (:class:`BaseBagDataset`), one bag (:class:`Bag`), and the checks of
labels and per-bag columns that every dataset shares.

A *bag* is a set of ``n_i >= 1`` instances of a common ``instance_shape`` (a feature vector ``(D,)`` or an
image ``(C, H, W)``), with an integer bag label in ``0 .. num_classes - 1`` and optional per-instance labels
(``-1`` = unknown). A dataset is either *labelled* (every bag has a label ``>= 0``) or *unlabeled* (every
label is ``-1``, e.g. a user's table without a label column, loaded to predict on);
:attr:`BaseBagDataset.has_labels` tells which. Per-bag metadata travels with the bags through
:meth:`~BaseBagDataset.subset`: ``splits`` (a split column's value), ``groups`` (a case or patient id; bags of
one group must never be split apart) and ``label_values`` (the user's value of each class, for writing
predictions back).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "Bag",
    "BaseBagDataset",
    "as_index_array",
    "check_label_values",
    "per_bag_strings",
    "to_label_array",
    "unlabeled_classes_error",
    "validate_labels",
]


@dataclass(frozen=True)
class Bag:
    """One bag of instances.

    Attributes:
        x: Instances, float32 tensor of shape ``(n_i, *instance_shape)``.
        label: Bag label in ``0 .. num_classes - 1``; ``-1`` in an unlabeled dataset.
        instance_labels: Long tensor ``(n_i,)``; ``-1`` where the instance label is unknown.
        index: Position of the bag in the dataset it was taken from.
        name: Bag name (bag id from the source file, or a generated name).
    """

    x: torch.Tensor
    label: int
    instance_labels: torch.Tensor
    index: int
    name: str

    @property
    def size(self) -> int:
        """Number of instances ``n_i``."""
        return int(self.x.shape[0])


def as_index_array(indices: Any, length: int, what: str = "index") -> np.ndarray:
    """Converts indices (ints, a sequence, a bool mask, a tensor) into validated int64 positions."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    arr = np.asarray(indices)
    if arr.dtype == bool:
        if arr.shape != (length,):
            raise ValueError(f"boolean {what} mask has shape {arr.shape}, expected ({length},)")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} values must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64).ravel()
    bad = (arr < -length) | (arr >= length)
    if bad.any():
        raise IndexError(f"{what} {int(arr[bad][0])} is out of range for a dataset of {length} bags")
    return np.where(arr < 0, arr + length, arr)


class BaseBagDataset(Dataset):
    """Interface shared by in-memory and lazy bag datasets.

    Subclasses implement ``__len__``, :attr:`labels`, :attr:`names`, :attr:`bag_sizes`,
    :attr:`instance_shape`, :attr:`num_classes`, :meth:`subset`, :attr:`has_instance_labels` and
    ``_load(i) -> (x float32 (n_i, *shape), instance_labels long (n_i,))``; they store per-bag split and
    group values in ``_splits`` / ``_groups`` (lists of strings or ``None``) and may override
    :meth:`coords`.

    Attributes:
        name: Dataset name (e.g. ``"musk1"``, ``"mnist-bags"``).
        class_names: Optional names of the classes ``0 .. num_classes - 1``.
        label_values: The user's value of each class (``label_values[k]`` for class ``k``, e.g. ``[-1, 1]`` or
            ``["benign", "tumor"]``), so predictions can be written in the user's values; ``None`` when
            unknown (an unlabeled dataset loaded without hints).
        meta: Free-form provenance (source file, generator settings...). Never per-instance data.
    """

    name: str
    class_names: list[str] | None
    label_values: list[Any] | None = None
    meta: dict[str, Any]
    _splits: list[str] | None = None
    _groups: list[str] | None = None

    # -- to implement -------------------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def labels(self) -> np.ndarray:  # pragma: no cover - abstract
        """Bag labels, int64 array ``(B,)``."""
        raise NotImplementedError

    @property
    def names(self) -> list[str]:  # pragma: no cover - abstract
        """Bag names, ``list[str]`` of length ``B``."""
        raise NotImplementedError

    @property
    def bag_sizes(self) -> np.ndarray:  # pragma: no cover - abstract
        """Number of instances per bag, int64 array ``(B,)``."""
        raise NotImplementedError

    @property
    def instance_shape(self) -> tuple[int, ...]:  # pragma: no cover - abstract
        """Shape of one instance, e.g. ``(166,)`` or ``(1, 28, 28)``."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:  # pragma: no cover - abstract
        """Number of bag classes ``K`` (labels lie in ``0 .. K-1``).

        Raises:
            ValueError: The dataset is unlabeled and nothing gave ``K``.
        """
        raise NotImplementedError

    @property
    def has_instance_labels(self) -> bool:  # pragma: no cover - abstract
        """Whether at least one instance label is known (not ``-1``)."""
        raise NotImplementedError

    def subset(self, indices: Any) -> BaseBagDataset:  # pragma: no cover - abstract
        """Returns the bags at ``indices`` as a new dataset (see :meth:`BagDataset.subset`)."""
        raise NotImplementedError

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _with_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> BaseBagDataset:  # pragma: no cover
        """Returns a view of the dataset whose instances are ``x * scale + shift`` (per feature)."""
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Bag:
        """Returns bag ``index`` (negative indices count from the end).

        Raises:
            IndexError: ``index`` is out of range.
        """
        i = self._position(index)
        x, inst = self._load(i)
        return Bag(x=x, label=int(self.labels[i]), instance_labels=inst, index=i, name=self.names[i])

    def get(self, index: int, *, allocate: Any = None) -> Bag:
        """Bag ``index``; a lazy dataset reads its features into ``allocate(shape)`` (a float32 array).

        ``allocate`` lets a caller hand out recycled memory (:class:`lossattn.engine.buffers.RecycledBuffers`);
        datasets that keep their bags in memory, or read formats that map their own arrays, ignore it.
        """
        return self[index]

    def _position(self, index: Any) -> int:
        """Validates one bag index (negative counts from the end) and returns it in ``0 .. B-1``."""
        if isinstance(index, torch.Tensor):
            index = int(index.item())
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"bag index must be an int, got {type(index).__name__}; use subset() for many")
        n = len(self)
        i = int(index)
        if i < -n or i >= n:
            raise IndexError(f"bag index {i} is out of range for dataset '{self.name}' with {n} bags")
        return i + n if i < 0 else i

    def __iter__(self) -> Iterator[Bag]:
        for i in range(len(self)):
            yield self[i]

    @property
    def num_features(self) -> int:
        """Flat width of one instance, ``prod(instance_shape)``."""
        return int(math.prod(self.instance_shape))

    @property
    def num_instances(self) -> int:
        """Total number of instances over all bags."""
        return int(self.bag_sizes.sum())

    @property
    def has_labels(self) -> bool:
        """Whether the bags carry labels (then every label is a class ``>= 0``); ``False`` for an unlabeled
        dataset, whose labels are all ``-1``."""
        labels = self.labels
        return bool(labels.size and labels[0] >= 0)

    @property
    def splits(self) -> list[str] | None:
        """Each bag's value of the source's split column (e.g. ``"train"``/``"test"``), or ``None`` if the
        source has no split column. See :func:`~lossattn.datasets.split_indices`."""
        return None if self._splits is None else list(self._splits)

    @property
    def groups(self) -> list[str] | None:
        """Each bag's group (case / patient id) as a string, or ``None`` if the source has no group column.
        Bags of one group must stay on one side of every split (see
        :func:`~lossattn.datasets.stratified_group_kfold`)."""
        return None if self._groups is None else list(self._groups)

    @property
    def has_coords(self) -> bool:
        """Whether every bag has instance coordinates (see :meth:`coords`)."""
        return False

    def coords(self, index: int) -> np.ndarray | None:
        """Coordinates of bag ``index``'s instances, int64 ``(n_i, 2)`` (for whole-slide patches: the ``(x, y)``
        top-left pixel of each patch at level 0), or ``None`` when the source has none."""
        self._position(index)
        return None

    def _require_labels(self, what: str) -> None:
        if not self.has_labels:
            raise ValueError(
                f"dataset '{self.name}' is unlabeled (no bag labels): {what} needs labelled bags; load the data "
                f"with its label column (label_column=...) to train or evaluate"
            )

    def class_counts(self) -> np.ndarray:
        """Number of bags per class, int64 array ``(num_classes,)``.

        Raises:
            ValueError: The dataset is unlabeled.
        """
        self._require_labels("class_counts()")
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def to_arrays(self) -> tuple[list[np.ndarray], np.ndarray]:
        """All bags as NumPy arrays, the input of :mod:`lossattn.sklearn` and of most MIL toolkits.

        Returns:
            ``(bags, labels)``: a list of float32 arrays ``(n_i, num_features)`` (instances flattened) and
            the int64 bag labels ``(num_bags,)`` (``-1`` for an unlabeled dataset). Reads every bag: for a
            feature folder larger than memory, iterate the dataset instead.
        """
        bags = []
        for i in range(len(self)):
            x, _ = self._load(i)
            bags.append(x.reshape(x.shape[0], -1).numpy())
        return bags, np.asarray(self.labels, dtype=np.int64).copy()

    def iter_instance_chunks(self, chunk_size: int = 65536) -> Iterator[torch.Tensor]:
        """Yields all instances, flattened, in chunks.

        Args:
            chunk_size: Approximate number of instances per chunk.

        Yields:
            float32 tensors ``(m, num_features)``, in bag order.
        """
        buf: list[torch.Tensor] = []
        count = 0
        for i in range(len(self)):
            x, _ = self._load(i)
            buf.append(x.reshape(x.shape[0], -1))
            count += x.shape[0]
            if count >= chunk_size:
                yield torch.cat(buf)
                buf, count = [], 0
        if buf:
            yield torch.cat(buf)

    def __repr__(self) -> str:
        head = f"{type(self).__name__}(name={self.name!r}, bags={len(self)}, instances={self.num_instances}, "
        head += f"instance_shape={self.instance_shape}, "
        if not self.has_labels:
            return head + "unlabeled)"
        counts = ", ".join(str(int(c)) for c in self.class_counts())
        return head + f"num_classes={self.num_classes}, class_counts=[{counts}])"


def unlabeled_classes_error(dataset: str) -> ValueError:
    """The error for asking the number of classes of an unlabeled dataset that was given none."""
    return ValueError(
        f"dataset '{dataset}' is unlabeled (no bag labels), so its number of classes is unknown; pass "
        f"num_classes= (or label_values=/class_names=) when loading it, or load it with its label column"
    )


def per_bag_strings(values: Sequence[Any] | None, n: int, what: str, dataset: str) -> list[str] | None:
    """Validates an optional per-bag column (splits, groups): ``n`` values, returned as strings."""
    if values is None:
        return None
    out = [str(v) for v in values]
    if len(out) != n:
        raise ValueError(f"dataset '{dataset}': got {len(out)} {what} for {n} bags")
    return out


def check_label_values(label_values: Sequence[Any] | None, num_classes: int | None, dataset: str) -> list[Any] | None:
    """``label_values`` as a list (default ``0 .. K-1`` when ``K`` is known), checked to have ``K`` entries."""
    if label_values is None:
        return None if num_classes is None else list(range(num_classes))
    out = list(label_values)
    if num_classes is not None and len(out) != num_classes:
        raise ValueError(f"dataset '{dataset}': got {len(out)} label_values {out!r} for {num_classes} classes")
    return out


def validate_labels(labels: np.ndarray, num_classes: int | None, names: Sequence[str], dataset: str) -> int | None:
    """Checks bag labels are integers in ``0 .. num_classes - 1``, or all ``-1`` (unlabeled).

    Returns:
        ``num_classes`` (inferred as ``max(2, max label + 1)`` for labelled bags when not given), or ``None``
        for unlabeled bags without a given ``num_classes``.
    """
    if labels.size and labels.min() < -1:
        i = int(np.flatnonzero(labels < -1)[0])
        raise ValueError(
            f"dataset '{dataset}': bag '{names[i]}' (index {i}) has label {int(labels[i])}; expected an integer "
            f"class in 0..K-1 (0 = negative), or -1 for an unknown label. To use other label values, map them to "
            f"0..K-1 first (lossattn.datasets.encode_labels does), or load the file with load_table/"
            f"load_feature_folder, which map any label values"
        )
    unknown = labels < 0
    if labels.size and unknown.all():
        if num_classes is None:
            return None
        if int(num_classes) < 1:
            raise ValueError(f"dataset '{dataset}': num_classes must be >= 1, got {num_classes}")
        return int(num_classes)
    if unknown.any():
        i, j = int(np.flatnonzero(unknown)[0]), int(np.flatnonzero(~unknown)[0])
        raise ValueError(
            f"dataset '{dataset}': bag '{names[i]}' (index {i}) has label -1 (unknown), but other bags are "
            f"labelled (e.g. '{names[j]}' = {int(labels[j])}); label every bag, or none (unlabeled data to "
            f"predict on). If -1/+1 are your class values, map them to 0/1 first (load_table and "
            f"load_feature_folder do)"
        )
    inferred = max(2, int(labels.max()) + 1) if labels.size else 2
    if num_classes is None:
        return inferred
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"dataset '{dataset}': num_classes must be >= 1, got {num_classes}")
    bad = labels >= num_classes
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"dataset '{dataset}': bag '{names[i]}' (index {i}) has label {int(labels[i])}; "
            f"expected a class in 0..{num_classes - 1} (num_classes={num_classes})"
        )
    return num_classes


def to_label_array(labels: Any, n: int, dataset: str) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"dataset '{dataset}': got {arr.size} bag labels (shape {arr.shape}) for {n} bags")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.bool_):
            return arr.astype(np.int64)
        try:
            as_float = arr.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"dataset '{dataset}': bag labels must be integers, got dtype {arr.dtype}") from e
        bad = ~np.isfinite(as_float) | (as_float != np.round(as_float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"dataset '{dataset}': bag at index {i} has label {arr[i].item()!r}; expected an integer class"
            )
        arr = as_float
    return arr.astype(np.int64)
