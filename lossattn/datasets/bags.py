"""Bag datasets: the one data type every model, trainer and metric consumes.

A *bag* is a set of ``n_i >= 1`` instances of a common ``instance_shape`` (a feature vector ``(D,)`` or an
image ``(C, H, W)``), with an integer bag label in ``0 .. num_classes - 1`` and optional per-instance labels
(``-1`` = unknown).

A dataset is either *labelled* (every bag has a label ``>= 0``) or *unlabeled* (every label is ``-1``, e.g. a
user's table without a label column, loaded to predict on); :attr:`BaseBagDataset.has_labels` tells which.
Per-bag metadata travels with the bags through :meth:`~BaseBagDataset.subset`: ``splits`` (a split column's
value), ``groups`` (a case or patient id; bags of one group must never be split apart) and ``label_values``
(the user's value of each class, for writing predictions back).

:class:`BagDataset` keeps all instances of all bags in one tensor with CSR-style offsets (bag ``i`` owns the
instances ``offsets[i]:offsets[i + 1]``), so indexing, subsetting and standardising never copy feature
data. :class:`BaseBagDataset` is the interface shared with the lazy, file-backed dataset of
:mod:`lossattn.datasets.folder`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["Bag", "BaseBagDataset", "BagDataset"]


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


def _as_index_array(indices: Any, length: int, what: str = "index") -> np.ndarray:
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


def _validate_labels(labels: np.ndarray, num_classes: int | None, names: Sequence[str], dataset: str) -> int | None:
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


def _to_label_array(labels: Any, n: int, dataset: str) -> np.ndarray:
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


class BagDataset(BaseBagDataset):
    """In-memory bag dataset with CSR storage.

    Build it from a list of per-bag arrays (``BagDataset(bags, labels)``) or from one flat instance array
    plus offsets (:meth:`from_flat`). Construction validates everything once: empty bags, non-finite
    features, inconsistent instance shapes, labels outside ``0 .. num_classes - 1`` and bad instance labels
    all raise ``ValueError`` naming the bag, the value found and what was expected.

    Args:
        bags: Sequence of ``B`` array-likes (numpy arrays or tensors), bag ``i`` of shape
            ``(n_i, *instance_shape)`` with ``n_i >= 1``.
        labels: ``B`` integer bag labels in ``0 .. K-1``; ``None`` (or all ``-1``) for unlabeled bags.
        instance_labels: Optional sequence of ``B`` integer arrays ``(n_i,)``; ``-1`` = unknown.
        names: Optional ``B`` bag names (default ``"0"``, ``"1"``, ...).
        num_classes: Number of classes ``K``; inferred as ``max(2, max(label) + 1)`` when omitted (unknown for
            unlabeled bags unless given).
        name: Dataset name.
        class_names: Optional names of the ``K`` classes.
        meta: Optional provenance dict.
        label_values: Optional user value of each class (default ``0 .. K-1``).
        splits: Optional ``B`` split values (strings).
        groups: Optional ``B`` group ids (case / patient; strings).

    Example:
        >>> ds = BagDataset([np.zeros((3, 4)), np.ones((2, 4))], labels=[0, 1])
        >>> ds[1].x.shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        bags: Sequence[Any],
        labels: Any,
        *,
        instance_labels: Sequence[Any] | None = None,
        names: Sequence[str] | None = None,
        num_classes: int | None = None,
        name: str = "bags",
        class_names: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        label_values: Sequence[Any] | None = None,
        splits: Sequence[Any] | None = None,
        groups: Sequence[Any] | None = None,
    ) -> None:
        bags = list(bags)
        names_list = [str(i) for i in range(len(bags))] if names is None else [str(n) for n in names]
        if len(names_list) != len(bags):
            raise ValueError(f"dataset '{name}': got {len(names_list)} names for {len(bags)} bags")
        arrays: list[torch.Tensor] = []
        shape: tuple[int, ...] | None = None
        for i, b in enumerate(bags):
            t = b.detach().cpu() if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
            if t.ndim < 2:
                raise ValueError(
                    f"dataset '{name}': bag '{names_list[i]}' (index {i}) has shape {tuple(t.shape)}; "
                    f"expected (n_instances, *instance_shape), e.g. (n, n_features)"
                )
            if shape is None:
                shape = tuple(t.shape[1:])
            elif tuple(t.shape[1:]) != shape:
                raise ValueError(
                    f"dataset '{name}': bag '{names_list[i]}' (index {i}) has instances of shape "
                    f"{tuple(t.shape[1:])}, but earlier bags have {shape} (inconsistent feature widths)"
                )
            if t.shape[0] == 0:
                raise ValueError(f"dataset '{name}': bag '{names_list[i]}' (index {i}) has no instances")
            arrays.append(t.to(torch.float32))
        if not arrays:
            raise ValueError(f"dataset '{name}': no bags given")
        sizes = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        inst = None
        if instance_labels is not None:
            inst_list = list(instance_labels)
            if len(inst_list) != len(arrays):
                raise ValueError(
                    f"dataset '{name}': got instance labels for {len(inst_list)} bags, expected {len(arrays)}"
                )
            parts = []
            for i, il in enumerate(inst_list):
                a = np.full(sizes[i], -1, dtype=np.int64) if il is None else np.asarray(il).reshape(-1)
                if a.shape[0] != sizes[i]:
                    raise ValueError(
                        f"dataset '{name}': bag '{names_list[i]}' (index {i}) has {a.shape[0]} instance "
                        f"labels for {sizes[i]} instances"
                    )
                parts.append(a)
            inst = np.concatenate(parts)
        self._init(
            data=torch.cat(arrays),
            rows=None,
            offsets=offsets,
            labels=labels,
            instance_labels=inst,
            names=names_list,
            num_classes=num_classes,
            name=name,
            class_names=class_names,
            meta=meta,
            source_index=None,
            scale=None,
            shift=None,
            validate=True,
            label_values=label_values,
            splits=splits,
            groups=groups,
        )

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_flat(
        cls,
        x: Any,
        offsets: Any,
        labels: Any,
        *,
        instance_labels: Any = None,
        names: Sequence[str] | None = None,
        num_classes: int | None = None,
        name: str = "bags",
        class_names: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        label_values: Sequence[Any] | None = None,
        splits: Sequence[Any] | None = None,
        groups: Sequence[Any] | None = None,
    ) -> BagDataset:
        """Builds a dataset from all instances concatenated plus CSR offsets (no per-bag copies).

        Args:
            x: Instances of all bags, array-like ``(N, *instance_shape)``; converted to float32.
            offsets: int array ``(B + 1,)``, ``offsets[0] == 0``, ``offsets[-1] == N``; bag ``i`` owns
                ``x[offsets[i]:offsets[i + 1]]``.
            labels: ``B`` integer bag labels (``None`` for unlabeled bags).
            instance_labels: Optional int array ``(N,)``, ``-1`` = unknown.
            names, num_classes, name, class_names, meta, label_values, splits, groups: As in
                :class:`BagDataset`.

        Returns:
            The validated dataset.
        """
        data = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        data = data.to(torch.float32)
        offsets = np.asarray(offsets, dtype=np.int64).ravel()
        b = offsets.shape[0] - 1
        names_list = [str(i) for i in range(max(b, 0))] if names is None else [str(n) for n in names]
        if b < 1:
            raise ValueError(f"dataset '{name}': offsets must have at least 2 entries, got {offsets.shape[0]}")
        if data.ndim < 2:
            raise ValueError(
                f"dataset '{name}': instances have shape {tuple(data.shape)}; expected (N, *instance_shape)"
            )
        if offsets[0] != 0 or offsets[-1] != data.shape[0]:
            raise ValueError(
                f"dataset '{name}': offsets must start at 0 and end at the number of instances "
                f"{data.shape[0]}, got {offsets[0]}..{offsets[-1]}"
            )
        ds = cls.__new__(cls)
        ds._init(
            data=data,
            rows=None,
            offsets=offsets,
            labels=labels,
            instance_labels=instance_labels,
            names=names_list,
            num_classes=num_classes,
            name=name,
            class_names=class_names,
            meta=meta,
            source_index=None,
            scale=None,
            shift=None,
            validate=True,
            label_values=label_values,
            splits=splits,
            groups=groups,
        )
        return ds

    @classmethod
    def _from_storage(
        cls,
        *,
        data: torch.Tensor,
        rows: torch.Tensor | None,
        offsets: np.ndarray,
        labels: np.ndarray,
        instance_labels: np.ndarray | torch.Tensor | None,
        names: list[str],
        num_classes: int | None,
        name: str,
        class_names: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        source_index: np.ndarray | None = None,
        scale: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
        validate: bool = True,
        label_values: Sequence[Any] | None = None,
        splits: Sequence[Any] | None = None,
        groups: Sequence[Any] | None = None,
    ) -> BagDataset:
        """Internal constructor over raw storage (``data`` may be uint8 with an affine decode)."""
        ds = cls.__new__(cls)
        ds._init(
            data=data,
            rows=rows,
            offsets=offsets,
            labels=labels,
            instance_labels=instance_labels,
            names=names,
            num_classes=num_classes,
            name=name,
            class_names=class_names,
            meta=meta,
            source_index=source_index,
            scale=scale,
            shift=shift,
            validate=validate,
            label_values=label_values,
            splits=splits,
            groups=groups,
        )
        return ds

    def _init(
        self,
        *,
        data: torch.Tensor,
        rows: torch.Tensor | None,
        offsets: np.ndarray,
        labels: Any,
        instance_labels: Any,
        names: list[str],
        num_classes: int | None,
        name: str,
        class_names: Sequence[str] | None,
        meta: dict[str, Any] | None,
        source_index: np.ndarray | None,
        scale: torch.Tensor | None,
        shift: torch.Tensor | None,
        validate: bool,
        label_values: Sequence[Any] | None = None,
        splits: Sequence[Any] | None = None,
        groups: Sequence[Any] | None = None,
    ) -> None:
        self.name = str(name)
        self.meta = dict(meta) if meta else {}
        self._data = data
        self._rows = rows
        self._offsets = np.asarray(offsets, dtype=np.int64)
        n_bags = self._offsets.shape[0] - 1
        n_inst = int(self._offsets[-1])
        self._names = list(names)
        if len(self._names) != n_bags:
            raise ValueError(f"dataset '{self.name}': got {len(self._names)} names for {n_bags} bags")
        self._labels = _to_label_array(labels, n_bags, self.name)
        self._scale = scale
        self._shift = shift
        self._source_index = source_index
        if instance_labels is None:
            inst = torch.full((n_inst,), -1, dtype=torch.long)
        else:
            inst = torch.as_tensor(np.asarray(instance_labels)).reshape(-1).to(torch.long)
        self._inst = inst
        if num_classes is None and not (self._labels >= 0).any():  # unlabeled: K only from a hint
            num_classes = len(label_values) if label_values is not None else None
            if num_classes is None and class_names is not None:
                num_classes = len(class_names)
        if validate:
            self._num_classes = self._validate(num_classes)
        elif num_classes is not None:
            self._num_classes = int(num_classes)
        else:
            self._num_classes = max(2, int(self._labels.max()) + 1) if self._labels.max() >= 0 else None
        self.class_names = list(class_names) if class_names is not None else None
        if (
            self.class_names is not None
            and self._num_classes is not None
            and len(self.class_names) != self._num_classes
        ):
            raise ValueError(
                f"dataset '{self.name}': got {len(self.class_names)} class names for {self._num_classes} classes"
            )
        self.label_values = check_label_values(label_values, self._num_classes, self.name)
        self._splits = per_bag_strings(splits, n_bags, "split values", self.name)
        self._groups = per_bag_strings(groups, n_bags, "group ids", self.name)

    def _validate(self, num_classes: int | None) -> int:
        sizes = np.diff(self._offsets)
        if (sizes <= 0).any():
            i = int(np.flatnonzero(sizes <= 0)[0])
            raise ValueError(f"dataset '{self.name}': bag '{self._names[i]}' (index {i}) has no instances")
        n_inst = int(self._offsets[-1])
        if self._rows is None and self._data.shape[0] != n_inst:
            raise ValueError(f"dataset '{self.name}': {self._data.shape[0]} instances but offsets end at {n_inst}")
        if self._inst.shape[0] != n_inst:
            raise ValueError(f"dataset '{self.name}': got {self._inst.shape[0]} instance labels for {n_inst} instances")
        if n_inst and int(self._inst.min()) < -1:
            j = int(torch.nonzero(self._inst < -1)[0, 0])
            i = self._bag_of_instance(j)
            raise ValueError(
                f"dataset '{self.name}': bag '{self._names[i]}' (index {i}) has instance label "
                f"{int(self._inst[j])}; expected -1 (unknown) or a class >= 0"
            )
        if self._data.is_floating_point():
            flat = self._data.reshape(self._data.shape[0], -1)
            # numpy's isfinite is much faster than torch's on CPU; torch only locates a bad value
            if not bool(np.isfinite(flat.numpy()).all()):
                bad_row, bad_col = (int(v) for v in torch.nonzero(~torch.isfinite(flat))[0])
                if self._rows is None:
                    j = bad_row
                else:
                    hits = torch.nonzero(self._rows == bad_row)
                    j = int(hits[0, 0]) if hits.numel() else -1
                if j >= 0:
                    i = self._bag_of_instance(j)
                    value = float(self._data.reshape(self._data.shape[0], -1)[bad_row, bad_col])
                    raise ValueError(
                        f"dataset '{self.name}': bag '{self._names[i]}' (index {i}) has a non-finite feature "
                        f"value {value} (instance {j - int(self._offsets[i])}, flat feature {bad_col}); "
                        f"expected finite numbers"
                    )
        return _validate_labels(self._labels, num_classes, self._names, self.name)

    def _bag_of_instance(self, j: int) -> int:
        return int(np.searchsorted(self._offsets, j, side="right") - 1)

    # -- interface ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets.shape[0] - 1)

    @property
    def labels(self) -> np.ndarray:
        """Bag labels, int64 array ``(B,)`` (a copy)."""
        return self._labels.copy()

    @property
    def names(self) -> list[str]:
        """Bag names (a copy)."""
        return list(self._names)

    @property
    def bag_sizes(self) -> np.ndarray:
        """Instances per bag, int64 array ``(B,)``."""
        return np.diff(self._offsets)

    @property
    def offsets(self) -> np.ndarray:
        """CSR offsets, int64 array ``(B + 1,)``: bag ``i`` owns flat instances ``offsets[i]:offsets[i+1]``."""
        return self._offsets.copy()

    @property
    def instance_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._data.shape[1:])

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            raise unlabeled_classes_error(self.name)
        return self._num_classes

    @property
    def num_instances(self) -> int:
        return int(self._offsets[-1])

    @property
    def instance_labels(self) -> torch.Tensor:
        """All instance labels in flat (bag-major) order, long tensor ``(N,)``; ``-1`` = unknown."""
        return self._inst.clone()

    @property
    def has_instance_labels(self) -> bool:
        return bool((self._inst >= 0).any())

    @property
    def source_index(self) -> np.ndarray:
        """For each flat instance, its row in the original source (file rows, or image index in the
        source split for generated bags), int64 ``(N,)``. Survives :meth:`subset`."""
        if self._source_index is not None:
            return self._source_index.copy()
        if self._rows is not None:
            return self._rows.numpy().astype(np.int64)
        return np.arange(self.num_instances, dtype=np.int64)

    def _raw(self, start: int, stop: int) -> torch.Tensor:
        if self._rows is None:
            return self._data[start:stop]
        return self._data[self._rows[start:stop]]

    def _decode(self, raw: torch.Tensor) -> torch.Tensor:
        # A slice of the storage is a view: copy it so callers can never modify the dataset.
        x = raw.to(torch.float32, copy=self._rows is None and self._scale is None)
        if self._scale is not None:
            x = x * self._scale + self._shift
        return x

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, e = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._decode(self._raw(s, e)), self._inst[s:e].clone()

    def iter_instance_chunks(self, chunk_size: int = 65536) -> Iterator[torch.Tensor]:
        n = self.num_instances
        for s in range(0, n, chunk_size):
            x = self._decode(self._raw(s, min(n, s + chunk_size)))
            yield x.reshape(x.shape[0], -1)

    def subset(self, indices: Any) -> BagDataset:
        """Returns the bags at ``indices`` as a new dataset sharing this one's storage.

        Names, labels, instance labels, ``num_classes``, class names, label values, splits and groups are
        kept; the new bags' ``index`` values are their positions in the subset (``0 .. len(indices) - 1``).

        Args:
            indices: Integer positions (any order, repeats allowed) or a boolean mask ``(B,)``.

        Returns:
            A :class:`BagDataset` over the selected bags.
        """
        idx = _as_index_array(indices, len(self))
        if idx.size == 0:
            raise ValueError(f"dataset '{self.name}': subset() needs at least one bag index")
        sizes = np.diff(self._offsets)[idx]
        starts = self._offsets[idx]
        new_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat = np.repeat(starts - new_offsets[:-1], sizes) + np.arange(int(new_offsets[-1]), dtype=np.int64)
        flat_t = torch.from_numpy(flat)
        rows = flat_t if self._rows is None else self._rows[flat_t]
        source = None if self._source_index is None else self._source_index[flat]
        meta = dict(self.meta)
        return BagDataset._from_storage(
            data=self._data,
            rows=rows,
            offsets=new_offsets,
            labels=self._labels[idx],
            instance_labels=self._inst[flat_t],
            names=[self._names[i] for i in idx],
            num_classes=self._num_classes,
            name=self.name,
            class_names=self.class_names,
            meta=meta,
            source_index=source,
            scale=self._scale,
            shift=self._shift,
            validate=False,
            label_values=self.label_values,
            splits=None if self._splits is None else [self._splits[i] for i in idx],
            groups=None if self._groups is None else [self._groups[i] for i in idx],
        )

    def _with_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> BagDataset:
        shape = self.instance_shape
        scale = scale.to(torch.float32).reshape(shape)
        shift = shift.to(torch.float32).reshape(shape)
        if self._scale is not None:
            shift = self._shift * scale + shift
            scale = self._scale * scale
        return BagDataset._from_storage(
            data=self._data,
            rows=self._rows,
            offsets=self._offsets,
            labels=self._labels,
            instance_labels=self._inst,
            names=self._names,
            num_classes=self._num_classes,
            name=self.name,
            class_names=self.class_names,
            meta=dict(self.meta),
            source_index=self._source_index,
            scale=scale,
            shift=shift,
            validate=False,
            label_values=self.label_values,
            splits=self._splits,
            groups=self._groups,
        )

    def to_flat(self) -> tuple[torch.Tensor, np.ndarray]:
        """Returns all instances decoded and concatenated ``(N, *instance_shape)`` and the offsets ``(B+1,)``."""
        return self._decode(self._raw(0, self.num_instances)), self.offsets
