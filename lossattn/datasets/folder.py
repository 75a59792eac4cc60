"""The user's own bags as a folder of per-bag feature files plus a CSV manifest (CLAM / TRIDENT / TransMIL style).

Layout::

    folder/
      manifest.csv          slide_id|bag_id, [case_id|patient_id,] [label,] [split,] [file]
      <bag_id>.pt | .npy | .npz | .h5      (also looked up in pt_files/, h5_files/, features/, then in the
                                            one other subfolder that has it: feats/, features_<encoder>/ ...)

The whole-slide layouts of CLAM and TRIDENT work as they are: ``h5_files/<slide_id>.h5`` with ``features
(N, D)`` (float32 or float16) and ``coords (N, 2)``, and/or ``pt_files/<slide_id>.pt`` holding the bare
tensor, whose coordinates then come from the ``.h5`` of the same slide (``h5_files/``, the folder itself or
``patches/``). A slide id written with its slide file extension (``slide1.svs``) finds ``slide1.pt``.

Bags are read lazily, one at a time, so a dataset larger than memory works. Each bag file is validated once,
when it is first read (non-finite values, shape, instance labels); later reads of the same unchanged file (by
the dataset, its subsets or its standardised views) skip the checks. File shapes are checked when
``bag_sizes`` is first needed, which reads only headers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bagfiles import (
    BAG_FILE_EXTENSIONS,
    read_bag_features,
    read_bag_file,
    read_bag_header,
    read_coords,
    read_coords_shape,
)
from .bagpaths import SLIDE_EXTENSIONS, find_bag_file, find_coords_file, find_named_file, other_subfolders
from .base import (
    Bag,
    BaseBagDataset,
    as_index_array,
    check_label_values,
    per_bag_strings,
    unlabeled_classes_error,
    validate_labels,
)
from .columns import AUTO, Column, resolve_columns
from .errors import DataFormatError, DataNotFoundError
from .labels import encode_labels
from .textio import read_csv_with_lines

__all__ = [
    "FeatureFolderDataset",
    "load_feature_folder",
    "read_bag_file",
    "BAG_FILE_EXTENSIONS",
    "MANIFEST_COLUMN_NAMES",
    "SLIDE_EXTENSIONS",
]

#: names tried, in order, for a manifest column left at AUTO
MANIFEST_COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "bag": ("bag_id", "slide_id"),
    "label": ("label",),
    "split": ("split",),
    "group": ("case_id", "patient_id"),
    "file": ("file",),
}


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class _FileChecks:
    """Which bag files were validated, shared by a dataset, its subsets and its standardised views.

    Keyed by path; the value is the file's ``(mtime_ns, size)`` when it was validated, so a file that changes
    on disk is validated again.
    """

    def __init__(self) -> None:
        self.validated: dict[Path, tuple[int, int]] = {}


class FeatureFolderDataset(BaseBagDataset):
    """Lazy bag dataset over per-bag feature files; same interface as :class:`~lossattn.datasets.BagDataset`.

    Build it with :func:`load_feature_folder`. A bag is validated (empty bags, non-finite values, inconsistent
    instance shapes, bad instance labels) the first time its file is read, once for the dataset and every
    subset or standardised view of it; later reads only check the shape.

    Args:
        files: Bag file of each bag.
        labels: ``B`` classes in ``0 .. K-1``, or ``None`` / all ``-1`` for unlabeled bags.
        names: ``B`` bag names.
        splits: Optional ``B`` split values.
        groups: Optional ``B`` group ids (case / patient).
        num_classes, name, class_names, meta, label_values: As in :class:`~lossattn.datasets.BagDataset`.
        feature_key: Entry holding the features in dict-like files.
        instance_label_key: Entry holding optional instance labels.
        coords_key: Entry holding optional instance coordinates.
        coords_files: Optional file to read each bag's coordinates from (``None`` entries: the bag file).

    Attributes:
        files: Path of each bag file.
        coords_files: Path of the file holding each bag's coordinates (the bag file unless another was found).
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Any,
        names: Sequence[str],
        *,
        splits: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        num_classes: int | None = None,
        name: str = "bags",
        class_names: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        label_values: Sequence[Any] | None = None,
        feature_key: str | None = None,
        instance_label_key: str = "instance_labels",
        coords_key: str = "coords",
        coords_files: Sequence[Path | None] | None = None,
    ) -> None:
        self.files = [Path(f) for f in files]
        n = len(self.files)
        self._labels = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).ravel()
        self._names = [str(x) for x in names]
        if not (n == len(self._names) == self._labels.shape[0]):
            raise ValueError("files, labels and names must have the same length")
        if not self.files:
            raise ValueError(f"dataset '{name}': no bags")
        self.name = str(name)
        self.meta = dict(meta) if meta else {}
        if num_classes is None and not (self._labels >= 0).any():
            num_classes = len(label_values) if label_values is not None else None
            if num_classes is None and class_names is not None:
                num_classes = len(class_names)
        self._num_classes = validate_labels(self._labels, num_classes, self._names, self.name)
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
        self._splits = per_bag_strings(splits, n, "split values", self.name)
        self._groups = per_bag_strings(groups, n, "group ids", self.name)
        self.feature_key = feature_key
        self.instance_label_key = instance_label_key
        self.coords_key = coords_key
        cf = [None] * n if coords_files is None else list(coords_files)
        if len(cf) != n:
            raise ValueError(f"dataset '{self.name}': got {len(cf)} coords files for {n} bags")
        self.coords_files = [self.files[i] if c is None else Path(c) for i, c in enumerate(cf)]
        self._checks = _FileChecks()
        self._sizes: np.ndarray | None = None
        self._has_inst: bool | None = None
        self._has_coords: bool | None = None
        self._shape: tuple[int, ...] | None = None
        self._scale: torch.Tensor | None = None
        self._shift: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            raise unlabeled_classes_error(self.name)
        return self._num_classes

    def _where(self, i: int) -> str:
        return f"dataset '{self.name}', bag '{self._names[i]}' (index {i}, file {self.files[i]})"

    def _check_shape(self, i: int, shape: tuple[int, ...]) -> None:
        if len(shape) < 2:
            raise DataFormatError(f"{self._where(i)}: features have shape {shape}; expected (n_instances, n_features)")
        if shape[0] == 0:
            raise DataFormatError(f"{self._where(i)}: the bag has no instances (shape {shape})")
        if self._shape is None:
            self._shape = tuple(int(s) for s in shape[1:])
        elif tuple(shape[1:]) != self._shape:
            raise DataFormatError(
                f"{self._where(i)}: instances of shape {tuple(shape[1:])}, but other bags have {self._shape} "
                f"(inconsistent feature widths)"
            )

    def _scan(self) -> None:
        sizes = np.empty(len(self), dtype=np.int64)
        has_inst = False
        for i, f in enumerate(self.files):
            h = read_bag_header(f, self.feature_key, self.instance_label_key, self.coords_key)
            self._check_shape(i, h.shape)
            sizes[i] = h.shape[0]
            has_inst = has_inst or h.has_instance_labels
        self._sizes, self._has_inst = sizes, has_inst

    @property
    def bag_sizes(self) -> np.ndarray:
        """Instances per bag (read from file headers on first use, then cached)."""
        if self._sizes is None:
            self._scan()
        return self._sizes.copy()  # type: ignore[union-attr]

    @property
    def instance_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            h = read_bag_header(self.files[0], self.feature_key, self.instance_label_key, self.coords_key)
            self._check_shape(0, h.shape)
        return self._shape  # type: ignore[return-value]

    @property
    def has_instance_labels(self) -> bool:
        """Whether any bag file carries instance labels (checked from headers)."""
        if self._has_inst is None:
            self._scan()
        return bool(self._has_inst)

    @property
    def instance_labels(self) -> torch.Tensor:
        """All instance labels, flat ``(N,)`` long (loads every bag)."""
        return torch.cat([self._load(i)[1] for i in range(len(self))])

    @property
    def has_coords(self) -> bool:
        """Whether every bag has coordinates (checked from file headers once; their shapes are checked by
        :meth:`coords`)."""
        if self._has_coords is None:
            self._has_coords = all(self._coords_shape(i) is not None for i in range(len(self)))
        return self._has_coords

    def _coords_shape(self, i: int) -> tuple[int, ...] | None:
        return read_coords_shape(self.coords_files[i], self.coords_key)

    def coords(self, index: int) -> np.ndarray | None:
        """Coordinates of bag ``index``'s instances, read from its coordinates file without the features.

        Returns:
            int64 ``(n_i, 2)`` (for whole-slide patches: the ``(x, y)`` top-left pixel of each patch at level
            0), or ``None`` when the bag's file has no coordinates entry.

        Raises:
            DataFormatError: The coordinates do not have shape ``(n_i, 2)``.
        """
        i = self._position(index)
        src = self.coords_files[i]
        arr = read_coords(src, self.coords_key)
        if arr is None:
            return None
        n = int(self._sizes[i]) if self._sizes is not None else None
        if n is None:
            n = read_bag_header(self.files[i], self.feature_key, self.instance_label_key, self.coords_key).shape[0]
        if arr.shape != (n, 2):
            raise DataFormatError(
                f"{self._where(i)}: coordinates {self.coords_key!r} in {src} have shape {arr.shape}; expected "
                f"({n}, 2), one (x, y) per instance"
            )
        return arr

    def split_indices(self, split: str) -> np.ndarray:
        """Positions of the bags whose manifest split equals ``split`` (see
        :func:`~lossattn.datasets.split_indices`)."""
        from .splits import split_indices

        return split_indices(self, split)

    def _validate_bag(self, i: int, x: torch.Tensor, inst: Any) -> None:
        flat = x.reshape(x.shape[0], -1)
        # numpy's isfinite is several times faster than torch's on CPU (5 vs 140 ms for 20,000 x 1024 float32)
        if not bool(np.isfinite(flat.numpy()).all()):
            j, k = (int(v) for v in torch.nonzero(~torch.isfinite(flat))[0])
            raise DataFormatError(
                f"{self._where(i)}: non-finite feature value {float(flat[j, k])} (instance {j}, flat feature {k}); "
                f"expected finite numbers"
            )
        if inst is not None:
            labels = np.asarray(inst).reshape(-1)
            if labels.shape[0] != x.shape[0]:
                raise DataFormatError(f"{self._where(i)}: {labels.shape[0]} instance labels for {x.shape[0]} instances")
            if labels.size and not np.issubdtype(labels.dtype, np.integer):
                bad = labels != np.round(labels)
                if bad.any():
                    raise DataFormatError(f"{self._where(i)}: instance label {labels[bad][0]!r} is not an integer")
            if labels.size and labels.min() < -1:
                raise DataFormatError(
                    f"{self._where(i)}: instance label {int(labels.min())}; expected -1 (unknown) or >= 0"
                )

    def get(self, index: int, *, allocate: Any = None) -> Bag:
        """Bag ``index``, its features read into ``allocate(shape)`` (see :meth:`BaseBagDataset.get`)."""
        i = self._position(index)
        x, inst = self._load(i, allocate)
        return Bag(x=x, label=int(self._labels[i]), instance_labels=inst, index=i, name=self._names[i])

    def _load(self, i: int, allocate: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.files[i]
        x, inst = read_bag_features(path, self.feature_key, self.instance_label_key, self.coords_key, allocate)
        self._check_shape(i, tuple(x.shape))
        if self._sizes is not None and x.shape[0] != self._sizes[i]:
            raise DataFormatError(
                f"{self._where(i)}: now has {x.shape[0]} instances, {self._sizes[i]} when first read (file changed)"
            )
        stamp = _stamp(path)
        if self._checks.validated.get(path) != stamp:
            self._validate_bag(i, x, inst)
            self._checks.validated[path] = stamp
        if inst is None:
            labels = torch.full((x.shape[0],), -1, dtype=torch.long)
        else:
            labels = torch.as_tensor(np.asarray(inst)).reshape(-1).to(torch.long)
            if labels.shape[0] != x.shape[0]:  # the file changed since it was validated
                raise DataFormatError(f"{self._where(i)}: {labels.shape[0]} instance labels for {x.shape[0]} instances")
        if self._scale is not None:
            # an HDF5 bag was read into memory of its own (allocate's or new): standardise it in place
            own = path.suffix.lower() in (".h5", ".hdf5")
            x = x.mul_(self._scale).add_(self._shift) if own else x * self._scale + self._shift
        return x, labels

    def _copy(self, idx: np.ndarray) -> FeatureFolderDataset:
        out = FeatureFolderDataset(
            [self.files[i] for i in idx],
            self._labels[idx],
            [self._names[i] for i in idx],
            splits=None if self._splits is None else [self._splits[i] for i in idx],
            groups=None if self._groups is None else [self._groups[i] for i in idx],
            num_classes=self._num_classes,
            name=self.name,
            class_names=self.class_names,
            meta=self.meta,
            label_values=self.label_values,
            feature_key=self.feature_key,
            instance_label_key=self.instance_label_key,
            coords_key=self.coords_key,
            coords_files=[self.coords_files[i] for i in idx],
        )
        out._checks = self._checks  # validation is per file: shared with the parent
        out._sizes = None if self._sizes is None else self._sizes[idx]
        same = idx.shape[0] == len(self) and bool((idx == np.arange(len(self))).all())
        out._has_inst = self._has_inst if same else None
        out._has_coords = self._has_coords if same or self._has_coords else None
        out._shape = self._shape
        out._scale, out._shift = self._scale, self._shift
        return out

    def subset(self, indices: Any) -> FeatureFolderDataset:
        """Returns the bags at ``indices`` (still lazy); positions in the subset become the new indices."""
        idx = as_index_array(indices, len(self))
        if idx.size == 0:
            raise ValueError(f"dataset '{self.name}': subset() needs at least one bag index")
        return self._copy(idx)

    def _with_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> FeatureFolderDataset:
        out = self._copy(np.arange(len(self)))
        shape = self.instance_shape
        scale = scale.to(torch.float32).reshape(shape)
        shift = shift.to(torch.float32).reshape(shape)
        if self._scale is not None:
            shift = self._shift * scale + shift
            scale = self._scale * scale
        out._scale, out._shift = scale, shift
        return out


def _missing(message: str) -> DataNotFoundError:
    err = DataNotFoundError(message)
    err.hint = (  # type: ignore[attr-defined]
        "a manifest's bag ids must match the file names (with or without the extension), or a 'file' column names "
        "each bag's file; `lossattn data info FOLDER` shows what is found"
    )
    return err


def load_feature_folder(
    folder: str | os.PathLike[str],
    manifest: str | os.PathLike[str] = "manifest.csv",
    *,
    split: str | None = None,
    bag_column: Column | None = AUTO,
    label_column: Column | None = AUTO,
    split_column: Column | None = AUTO,
    group_column: Column | None = AUTO,
    file_column: Column | None = AUTO,
    feature_key: str | None = None,
    instance_label_key: str = "instance_labels",
    coords_key: str = "coords",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    label_values: Sequence[Any] | None = None,
    name: str | None = None,
) -> FeatureFolderDataset:
    """Opens a folder of per-bag feature files described by a CSV manifest (lazy).

    Manifest columns are given by name or 0-based position, :data:`~lossattn.datasets.columns.AUTO` detects
    them and ``None`` means absent: bag ``bag_id``/``slide_id`` (required), label ``label``, split ``split``,
    group ``case_id``/``patient_id``, file ``file``; other columns are ignored.

    Args:
        folder: Folder holding the bag files (and, by default, the manifest).
        manifest: Manifest CSV (optionally gzipped), relative to ``folder`` unless absolute.
        split: Keep only the bags whose split column equals this value (labels are mapped over the whole
            manifest first, so every split gets the same classes).
        bag_column: Bag id; the file is ``<bag_id>.{pt,npy,npz,h5,hdf5}`` in ``folder``, ``pt_files/``,
            ``h5_files/``, ``features/`` or else the one other subfolder that has it (a slide extension such as ``.svs`` is dropped if needed).
        label_column: Bag label, any integers or names (see :func:`~lossattn.datasets.encode_labels`); absent
            (or ``None``): unlabeled bags.
        split_column: Split value of each bag (see :func:`~lossattn.datasets.split_indices`).
        group_column: Group (case / patient id) of each bag; ``dataset.groups``.
        file_column: Path of the bag file relative to ``folder`` (overrides the lookup).
        feature_key: Entry holding the features in dict-like files.
        instance_label_key: Entry holding optional instance labels.
        coords_key: Entry holding instance coordinates (``dataset.coords(i)``).
        num_classes: Number of classes, when known.
        class_names: Class names.
        label_values: The user's value of each class, fixing the label mapping.
        name: Dataset name (default: the folder name).

    Returns:
        A :class:`FeatureFolderDataset`.

    Raises:
        DataNotFoundError: The manifest or a bag file it names does not exist (the message gives the manifest
            line and the paths tried).
        DataFormatError: Missing columns, empty or duplicate bag ids, invalid or mixed labels, unknown split,
            empty group ids.
        ValueError: A column given two roles.
    """
    folder = Path(folder)
    mpath = Path(manifest) if Path(manifest).is_absolute() else folder / manifest
    if not mpath.is_file():
        others = sorted(p.name for p in folder.glob("*.csv*")) if folder.is_dir() else []
        found = (
            f"; CSV files in the folder: {', '.join(others[:5])} (pass manifest=<name>, --manifest on the command line)"
            if others
            else ""
        )
        raise DataNotFoundError(
            f"manifest not found: {mpath} (expected a CSV with a bag_id or slide_id column, and label for "
            f"training){found}"
        )
    rows, lines = read_csv_with_lines(mpath)
    header = rows[0]
    body, body_lines = rows[1:], lines[1:]
    if not body:
        raise DataFormatError(f"{mpath}: the manifest lists no bags")
    roles = {
        "bag": bag_column,
        "label": label_column,
        "split": split_column,
        "group": group_column,
        "file": file_column,
    }
    cols = resolve_columns(
        roles,
        header=header,
        width=len(header),
        where=mpath,
        auto_names=MANIFEST_COLUMN_NAMES,
        required=("bag",),
        with_features=False,
    )
    pos = cols.positions

    def column(role: str) -> list[str] | None:
        c = pos[role]
        return None if c is None else [r[c] for r in body]

    bag_ids = column("bag") or []  # the bag column is required: resolve_columns raised if it is absent
    seen: dict[str, int] = {}
    for bag_id, line in zip(bag_ids, body_lines, strict=True):
        if not bag_id:
            raise DataFormatError(f"{mpath}, line {line}: empty {header[pos['bag']]}")  # type: ignore[index]
        if bag_id in seen:
            raise DataFormatError(f"{mpath}, line {line}: bag {bag_id!r} is listed twice (also on line {seen[bag_id]})")
        seen[bag_id] = int(line)
    raw_labels = column("label") or [None] * len(body)
    try:
        enc = encode_labels(
            raw_labels,
            names=bag_ids,
            num_classes=num_classes,
            class_names=class_names,
            label_values=label_values,
            where=str(mpath),
        )
    except ValueError as e:
        raise DataFormatError(str(e)) from e
    splits = column("split")
    if split is not None and splits is None:
        raise DataFormatError(
            f"{mpath}: split={split!r} requested but the manifest has no 'split' column (header: {header}); pass "
            f"split_column=<its name>"
        )
    groups = column("group")
    if groups is not None:
        blank = [k for k, g in enumerate(groups) if not g]
        if blank:
            raise DataFormatError(
                f"{mpath}, line {int(body_lines[blank[0]])}: empty group id in {cols.label_of(pos['group'])} "  # type: ignore[arg-type]
                f"for bag {bag_ids[blank[0]]!r}; every bag needs its group (case / patient id)"
            )
    files_col = column("file")
    keep = [k for k in range(len(body)) if split is None or splits[k] == split]  # type: ignore[index]
    if not keep:
        raise DataFormatError(f"{mpath}: no bag has split {split!r}; splits present: {sorted(set(splits or []))}")
    files: list[Path] = []
    coords_files: list[Path | None] = []
    others = other_subfolders(folder)
    for k in keep:
        bag_id, line = bag_ids[k], int(body_lines[k])
        rel = files_col[k] if files_col is not None else ""
        if rel:
            found = find_named_file(folder, rel, others)
            if found is None:
                raise _missing(f"{mpath}, line {line}: bag {bag_id!r}: file {folder / rel} does not exist (also "
                               f"looked in pt_files/, h5_files/, features/ and any other subfolder)")  # fmt: skip
        else:
            found, _ = find_bag_file(folder, bag_id, others)
            if found is None:
                raise _missing(
                    f"{mpath}, line {line}: no file for bag {bag_id!r}; expected {folder / bag_id}"
                    f"{{{','.join(BAG_FILE_EXTENSIONS)}}} (also looked in pt_files/, h5_files/, features/ and "
                    f"any other subfolder)"
                )
        path = found
        files.append(path)
        coords_files.append(find_coords_file(folder, bag_id, path))
    meta = {
        "source_folder": str(folder),
        "manifest": str(mpath),
        "columns": cols.names(),
        "label_column": cols.names()["label"],
    }
    try:
        return FeatureFolderDataset(
            files,
            enc.codes[keep],
            [bag_ids[k] for k in keep],
            splits=None if splits is None else [splits[k] for k in keep],
            groups=None if groups is None else [groups[k] for k in keep],
            num_classes=enc.num_classes,
            name=name or folder.resolve().name,
            class_names=enc.class_names,
            meta=meta,
            label_values=enc.label_values,
            feature_key=feature_key,
            instance_label_key=instance_label_key,
            coords_key=coords_key,
            coords_files=coords_files,
        )
    except ValueError as e:
        raise DataFormatError(f"{mpath}: {e}") from e
