"""The in-memory bag dataset: every instance of every bag in one tensor with CSR offsets.

:class:`BagDataset` keeps all instances of all bags in one tensor with CSR-style offsets (bag ``i`` owns the
instances ``offsets[i]:offsets[i + 1]``), so indexing, subsetting and standardising never copy feature
data. Its interface, :class:`~lossattn.datasets.base.BaseBagDataset`, is shared with the lazy, file-backed
dataset of :mod:`lossattn.datasets.folder`; see there for bags, labels and per-bag columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .base import (
    Bag,
    BaseBagDataset,
    as_index_array,
    check_label_values,
    per_bag_strings,
    to_label_array,
    unlabeled_classes_error,
    validate_labels,
)

__all__ = ["Bag", "BagDataset", "BaseBagDataset"]


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
        self._labels = to_label_array(labels, n_bags, self.name)
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
        return validate_labels(self._labels, num_classes, self._names, self.name)

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
        idx = as_index_array(indices, len(self))
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
