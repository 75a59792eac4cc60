"""The user's own bags as a folder of per-bag feature files plus a CSV manifest (CLAM / TransMIL style).

Layout::

    folder/
      manifest.csv          bag_id,label[,split][,file]
      <bag_id>.pt | .npy | .npz | .h5      (also looked up in pt_files/, h5_files/, features/)

Each file holds one bag's instance features ``(n_i, D)`` (or ``(n_i, *shape)``):

* ``.npy``: the array;
* ``.npz`` / ``.h5`` / ``.pt`` (dict): key ``features`` (or ``x``, ``feats``, ``data``), optionally
  ``instance_labels`` ``(n_i,)``; a ``.pt`` may also hold the tensor itself, and an ``.npz`` a single array.

Bags are read lazily, one at a time, so a dataset larger than memory works; every bag is validated when it
is loaded (and file shapes are checked when ``bag_sizes`` is first needed, which reads only headers).
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bags import BaseBagDataset, _as_index_array, _validate_labels
from .errors import DataFormatError, DataNotFoundError

__all__ = ["FeatureFolderDataset", "load_feature_folder", "BAG_FILE_EXTENSIONS"]

BAG_FILE_EXTENSIONS = (".pt", ".npy", ".npz", ".h5", ".hdf5")
_SUBFOLDERS = ("", "pt_files", "h5_files", "features")
_FEATURE_KEYS = ("features", "x", "feats", "data")


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading .h5 bags needs h5py: pip install 'lossattn[formats]' (or pip install h5py)") from e
    return h5py


def _pick_key(keys: Sequence[str], feature_key: str | None, inst_key: str, path: Path) -> str:
    if feature_key is not None:
        if feature_key not in keys:
            raise DataFormatError(f"{path}: no feature entry {feature_key!r}; found {sorted(keys)}")
        return feature_key
    for k in _FEATURE_KEYS:
        if k in keys:
            return k
    others = [k for k in keys if k != inst_key]
    if len(others) == 1:
        return others[0]
    raise DataFormatError(
        f"{path}: cannot tell which entry holds the features (found {sorted(keys)}); name it 'features' or pass "
        f"feature_key="
    )


def _npy_header_shape(fp: Any) -> tuple[int, ...]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, _ = np.lib.format.read_array_header_1_0(fp)
    else:
        shape, _, _ = np.lib.format.read_array_header_2_0(fp)
    return tuple(shape)


def read_bag_file(
    path: Path, feature_key: str | None = None, instance_label_key: str = "instance_labels", header_only: bool = False
) -> tuple[Any, Any]:
    """Reads one bag file.

    Args:
        path: ``.pt``, ``.npy``, ``.npz``, ``.h5`` or ``.hdf5`` file.
        feature_key: Entry holding the features (default: ``features``, ``x``, ``feats``, ``data``, or the only
            entry).
        instance_label_key: Entry holding instance labels, if any.
        header_only: Return ``(shape tuple, has_instance_labels bool)`` without reading the data.

    Returns:
        ``(features, instance_labels or None)`` as arrays/tensors, or the header information.

    Raises:
        DataFormatError: Unreadable, truncated or corrupt file, or no feature entry.
    """
    ext = path.suffix.lower()
    try:
        if ext == ".npy":
            arr = np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
            return (tuple(arr.shape), False) if header_only else (arr, None)
        if ext == ".npz":
            with zipfile.ZipFile(path) as z:
                keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
                key = _pick_key(keys, feature_key, instance_label_key, path)
                if header_only:
                    with z.open(key + ".npy") as f:
                        return _npy_header_shape(f), instance_label_key in keys
            with np.load(path, allow_pickle=False) as npz:
                inst = npz[instance_label_key] if instance_label_key in keys else None
                return npz[key], inst
        if ext in (".h5", ".hdf5"):
            with _h5py().File(path, "r") as f:
                keys = list(f.keys())
                key = _pick_key(keys, feature_key, instance_label_key, path)
                if header_only:
                    return tuple(f[key].shape), instance_label_key in keys
                inst = np.asarray(f[instance_label_key]) if instance_label_key in keys else None
                return np.asarray(f[key]), inst
        if ext == ".pt":
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=header_only)
            except RuntimeError:
                if not header_only:
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, torch.Tensor):
                return (tuple(obj.shape), False) if header_only else (obj, None)
            if isinstance(obj, dict):
                keys = [str(k) for k in obj]
                key = _pick_key(keys, feature_key, instance_label_key, path)
                feats = torch.as_tensor(obj[key])
                if header_only:
                    return tuple(feats.shape), instance_label_key in obj
                inst = obj.get(instance_label_key)
                return feats, None if inst is None else torch.as_tensor(inst)
            raise DataFormatError(f"{path}: holds a {type(obj).__name__}; expected a tensor or a dict of tensors")
    except DataFormatError:
        raise
    except Exception as e:  # numpy/h5py/torch/zipfile raise many types on damaged files
        raise DataFormatError(f"{path}: cannot read the bag file, it is truncated or corrupt ({e})") from e
    raise DataFormatError(f"{path}: unsupported bag file type {ext!r}; expected one of {BAG_FILE_EXTENSIONS}")


class FeatureFolderDataset(BaseBagDataset):
    """Lazy bag dataset over per-bag feature files; same interface as :class:`~lossattn.datasets.BagDataset`.

    Build it with :func:`load_feature_folder`. Bags are loaded (and validated: empty bags, non-finite values,
    inconsistent instance shapes, bad instance labels) on access.

    Attributes:
        files: Path of each bag file.
        splits: Value of the manifest's split column per bag, or ``None`` if there is none.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: np.ndarray,
        names: Sequence[str],
        *,
        splits: Sequence[str] | None = None,
        num_classes: int | None = None,
        name: str = "bags",
        class_names: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        feature_key: str | None = None,
        instance_label_key: str = "instance_labels",
    ) -> None:
        self.files = [Path(f) for f in files]
        self._labels = np.asarray(labels, dtype=np.int64).ravel()
        self._names = [str(n) for n in names]
        if not (len(self.files) == len(self._names) == self._labels.shape[0]):
            raise ValueError("files, labels and names must have the same length")
        if not self.files:
            raise ValueError(f"dataset '{name}': no bags")
        self.splits = None if splits is None else [str(s) for s in splits]
        self.name = str(name)
        self.meta = dict(meta) if meta else {}
        self._num_classes = _validate_labels(self._labels, num_classes, self._names, self.name)
        self.class_names = list(class_names) if class_names is not None else None
        self.feature_key = feature_key
        self.instance_label_key = instance_label_key
        self._sizes: np.ndarray | None = None
        self._has_inst: bool | None = None
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
            shape, inst = read_bag_file(f, self.feature_key, self.instance_label_key, header_only=True)
            self._check_shape(i, shape)
            sizes[i] = shape[0]
            has_inst = has_inst or bool(inst)
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
            shape, _ = read_bag_file(self.files[0], self.feature_key, self.instance_label_key, header_only=True)
            self._check_shape(0, shape)
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

    def split_indices(self, split: str) -> np.ndarray:
        """Positions of the bags whose manifest split equals ``split``.

        Raises:
            ValueError: The manifest has no split column.
        """
        if self.splits is None:
            raise ValueError(f"dataset '{self.name}': the manifest has no split column")
        return np.flatnonzero(np.asarray(self.splits) == split).astype(np.int64)

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        feats, inst = read_bag_file(self.files[i], self.feature_key, self.instance_label_key)
        x = feats.detach().cpu() if isinstance(feats, torch.Tensor) else torch.from_numpy(np.array(feats))
        self._check_shape(i, tuple(x.shape))
        if self._sizes is not None and x.shape[0] != self._sizes[i]:
            raise DataFormatError(
                f"{self._where(i)}: now has {x.shape[0]} instances, {self._sizes[i]} when first read (file changed)"
            )
        x = x.to(torch.float32)
        finite = torch.isfinite(x.reshape(x.shape[0], -1))
        if not bool(finite.all()):
            j, k = (int(v) for v in torch.nonzero(~finite)[0])
            value = float(x.reshape(x.shape[0], -1)[j, k])
            raise DataFormatError(
                f"{self._where(i)}: non-finite feature value {value} (instance {j}, flat feature {k}); "
                f"expected finite numbers"
            )
        if inst is None:
            labels = torch.full((x.shape[0],), -1, dtype=torch.long)
        else:
            labels = torch.as_tensor(np.asarray(inst)).reshape(-1).to(torch.long)
            if labels.shape[0] != x.shape[0]:
                raise DataFormatError(f"{self._where(i)}: {labels.shape[0]} instance labels for {x.shape[0]} instances")
            if labels.numel() and int(labels.min()) < -1:
                raise DataFormatError(
                    f"{self._where(i)}: instance label {int(labels.min())}; expected -1 (unknown) or >= 0"
                )
        if self._scale is not None:
            x = x * self._scale + self._shift
        return x, labels

    def _copy(self, idx: np.ndarray) -> FeatureFolderDataset:
        out = FeatureFolderDataset(
            [self.files[i] for i in idx],
            self._labels[idx],
            [self._names[i] for i in idx],
            splits=None if self.splits is None else [self.splits[i] for i in idx],
            num_classes=self._num_classes,
            name=self.name,
            class_names=self.class_names,
            meta=self.meta,
            feature_key=self.feature_key,
            instance_label_key=self.instance_label_key,
        )
        out._sizes = None if self._sizes is None else self._sizes[idx]
        same = idx.shape[0] == len(self) and bool((idx == np.arange(len(self))).all())
        out._has_inst = self._has_inst if same else None
        out._shape = self._shape
        out._scale, out._shift = self._scale, self._shift
        return out

    def subset(self, indices: Any) -> FeatureFolderDataset:
        """Returns the bags at ``indices`` (still lazy); positions in the subset become the new indices."""
        idx = _as_index_array(indices, len(self))
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


def _find_bag_file(folder: Path, bag_id: str) -> tuple[Path | None, list[Path]]:
    tried = []
    for sub in _SUBFOLDERS:
        for ext in BAG_FILE_EXTENSIONS:
            p = folder / sub / f"{bag_id}{ext}" if sub else folder / f"{bag_id}{ext}"
            tried.append(p)
            if p.is_file():
                return p, tried
    return None, tried


def load_feature_folder(
    folder: str | os.PathLike[str],
    manifest: str | os.PathLike[str] = "manifest.csv",
    *,
    split: str | None = None,
    bag_column: str = "bag_id",
    label_column: str = "label",
    split_column: str = "split",
    file_column: str = "file",
    feature_key: str | None = None,
    instance_label_key: str = "instance_labels",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> FeatureFolderDataset:
    """Opens a folder of per-bag feature files described by a CSV manifest (lazy).

    Args:
        folder: Folder holding the bag files (and, by default, the manifest).
        manifest: Manifest CSV, relative to ``folder`` unless absolute; columns ``bag_id,label`` plus optional
            ``split`` and ``file`` (path of the bag file relative to ``folder``; default: looked up as
            ``<bag_id>.{pt,npy,npz,h5,hdf5}`` in ``folder``, ``pt_files/``, ``h5_files/``, ``features/``).
        split: Keep only the bags whose split column equals this value.
        bag_column, label_column, split_column, file_column: Manifest column names.
        feature_key: Entry holding the features in dict-like files.
        instance_label_key: Entry holding optional instance labels.
        num_classes: Number of classes (default ``max(2, max label + 1)``).
        class_names: Class names; if given, labels may be written as these names in the manifest.
        name: Dataset name (default: the folder name).

    Returns:
        A :class:`FeatureFolderDataset`.

    Raises:
        DataNotFoundError: The manifest or a bag file it names does not exist (the message gives the manifest
            line and the paths tried).
        DataFormatError: Missing columns, empty or duplicate bag ids, invalid labels, unknown split.
    """
    folder = Path(folder)
    mpath = Path(manifest) if Path(manifest).is_absolute() else folder / manifest
    if not mpath.is_file():
        raise DataNotFoundError(
            f"manifest not found: {mpath} (expected a CSV with columns {bag_column},{label_column})"
        )
    with open(mpath, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = fields
        missing = [c for c in (bag_column, label_column) if c not in fields]
        if missing:
            raise DataFormatError(f"{mpath}: missing column(s) {missing}; the header has {fields}")
        rows = [(reader.line_num, r) for r in reader]
    if not rows:
        raise DataFormatError(f"{mpath}: the manifest lists no bags")
    has_split = split_column in fields
    if split is not None and not has_split:
        raise DataFormatError(f"{mpath}: split={split!r} requested but the manifest has no {split_column!r} column")
    name_to_class = {str(c): i for i, c in enumerate(class_names)} if class_names is not None else {}
    files, labels, names, splits = [], [], [], []
    seen: dict[str, int] = {}
    for line, r in rows:
        if None in r:
            raise DataFormatError(f"{mpath}, line {line}: ragged row with more fields than the header")
        bag_id = (r.get(bag_column) or "").strip()
        if not bag_id:
            raise DataFormatError(f"{mpath}, line {line}: empty {bag_column}")
        if bag_id in seen:
            raise DataFormatError(f"{mpath}, line {line}: bag {bag_id!r} is listed twice (also on line {seen[bag_id]})")
        seen[bag_id] = line
        s = (r.get(split_column) or "").strip() if has_split else ""
        if split is not None and s != split:
            continue
        raw = (r.get(label_column) or "").strip()
        if raw in name_to_class:
            label = name_to_class[raw]
        else:
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not np.isfinite(value) or value != round(value):
                hint = "" if class_names is not None else "; pass class_names=[...] to use class names as labels"
                raise DataFormatError(
                    f"{mpath}, line {line}: bag {bag_id!r} has label {raw!r}; expected an integer class 0..K-1{hint}"
                )
            label = int(value)
        rel = (r.get(file_column) or "").strip() if file_column in fields else ""
        if rel:
            path = folder / rel
            if not path.is_file():
                raise DataNotFoundError(f"{mpath}, line {line}: bag {bag_id!r}: file {path} does not exist")
        else:
            found, tried = _find_bag_file(folder, bag_id)
            if found is None:
                raise DataNotFoundError(
                    f"{mpath}, line {line}: no file for bag {bag_id!r}; expected {folder / bag_id}"
                    f"{{{','.join(BAG_FILE_EXTENSIONS)}}} (also looked in pt_files/, h5_files/, features/)"
                )
            path = found
        files.append(path)
        labels.append(label)
        names.append(bag_id)
        splits.append(s)
    if not files:
        have = sorted({(r.get(split_column) or "").strip() for _, r in rows})
        raise DataFormatError(f"{mpath}: no bag has split {split!r}; splits present: {have}")
    try:
        return FeatureFolderDataset(
            files,
            np.asarray(labels, dtype=np.int64),
            names,
            splits=splits if has_split else None,
            num_classes=num_classes,
            name=name or folder.resolve().name,
            class_names=class_names,
            meta={"source_folder": str(folder), "manifest": str(mpath)},
            feature_key=feature_key,
            instance_label_key=instance_label_key,
        )
    except ValueError as e:
        raise DataFormatError(f"{mpath}: {e}") from e
