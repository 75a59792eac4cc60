"""Reading one bag file: ``.pt``, ``.npy``, ``.npz``, ``.h5``/``.hdf5`` (the CLAM / TRIDENT feature layouts).

A file holds one bag's instance features ``(n_i, D)`` (or ``(n_i, *shape)``):

* ``.npy``: the array;
* ``.npz`` / ``.h5`` / ``.pt`` (dict): entry ``features`` (or ``x``, ``feats``, ``data``, or the only entry),
  optionally ``instance_labels`` ``(n_i,)`` and ``coords`` ``(n_i, 2)`` (the top-left pixel of each patch at
  level 0, as CLAM and TRIDENT write it); a ``.pt`` may also hold the bare tensor.

Features are returned as float32 with at most one conversion: float32 ``.npy`` and ``.pt`` files are memory-mapped
(copy-on-write: the tensor is writable and writing never touches the file; pages are read when used, so a bag
is copied once, by its consumer, instead of twice), ``.h5`` data is read straight into its final array
(``read_direct``), ``.npz`` without a copy, and float16/float64/integer data is converted once. Headers
(shapes, which entries exist) are read without the data.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataFormatError, MissingDependencyError

__all__ = [
    "BAG_FILE_EXTENSIONS",
    "BagFileHeader",
    "read_bag_file",
    "read_bag_header",
    "read_bag_features",
    "read_coords",
    "read_coords_shape",
]

BAG_FILE_EXTENSIONS = (".pt", ".npy", ".npz", ".h5", ".hdf5")
FEATURE_KEYS = ("features", "x", "feats", "data")
_H5 = (".h5", ".hdf5")


def h5py_module(path: Path | None = None) -> Any:
    """Imports h5py, or raises :class:`MissingDependencyError` saying how to install it."""
    try:
        import h5py
    except ImportError as e:
        what = f"{path}: reading" if path is not None else "Reading"
        raise MissingDependencyError(
            f"{what} .h5 bag files needs the h5py package, which is not installed; install it with "
            f"pip install 'lossattn[formats]' (or pip install h5py)",
            package="h5py",
        ) from e
    return h5py


@dataclass(frozen=True)
class BagFileHeader:
    """What a bag file holds, read without its data.

    Attributes:
        shape: Shape of the features ``(n_i, *instance_shape)``.
        dtype: Stored dtype of the features (e.g. ``"float16"``).
        has_instance_labels: Whether the file has an instance-label entry.
        coords_shape: Shape of the coordinates entry, or ``None`` if there is none.
    """

    shape: tuple[int, ...]
    dtype: str
    has_instance_labels: bool
    coords_shape: tuple[int, ...] | None


def _pick_key(keys: Sequence[str], feature_key: str | None, ignore: Sequence[str], path: Path) -> str:
    if feature_key is not None:
        if feature_key not in keys:
            raise DataFormatError(f"{path}: no feature entry {feature_key!r}; found {sorted(keys)}")
        return feature_key
    for k in FEATURE_KEYS:
        if k in keys:
            return k
    others = [k for k in keys if k not in ignore]
    if len(others) == 1:
        return others[0]
    raise DataFormatError(
        f"{path}: cannot tell which entry holds the features (found {sorted(keys)}); name it 'features' or pass "
        f"feature_key="
    )


def _npy_header(fp: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    return tuple(shape), dtype


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turns the many error types numpy/h5py/torch/zipfile raise on damaged files into DataFormatError."""
    try:
        yield
    except (DataFormatError, MissingDependencyError):
        raise
    except Exception as e:
        raise DataFormatError(f"{path}: cannot read the bag file, it is truncated or corrupt ({e})") from e


def _unsupported(path: Path) -> DataFormatError:
    return DataFormatError(
        f"{path}: unsupported bag file type {path.suffix.lower()!r}; expected one of {BAG_FILE_EXTENSIONS}"
    )


def _load_pt(path: Path, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError:
        if not mmap:
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format: no mmap


def _pt_features(obj: Any, feature_key: str | None, ignore: Sequence[str], path: Path) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        key = _pick_key([str(k) for k in obj], feature_key, ignore, path)
        return torch.as_tensor(obj[key])
    raise DataFormatError(f"{path}: holds a {type(obj).__name__}; expected a tensor or a dict of tensors")


def read_bag_header(
    path: str | Path,
    feature_key: str | None = None,
    instance_label_key: str = "instance_labels",
    coords_key: str = "coords",
) -> BagFileHeader:
    """Reads a bag file's header: feature shape and dtype, and which optional entries exist (no data read).

    Raises:
        DataFormatError: Unreadable, truncated or corrupt file, or no feature entry.
        MissingDependencyError: An ``.h5`` file without h5py installed.
    """
    path = Path(path)
    ext = path.suffix.lower()
    ignore = (instance_label_key, coords_key)
    if ext in _H5:
        h5py = h5py_module(path)
    with _reading(path):
        if ext == ".npy":
            with open(path, "rb") as fp:
                shape, dtype = _npy_header(fp)
            return BagFileHeader(shape, str(dtype), False, None)
        if ext == ".npz":
            with zipfile.ZipFile(path) as z:
                keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
                key = _pick_key(keys, feature_key, ignore, path)
                with z.open(key + ".npy") as f:
                    shape, dtype = _npy_header(f)
                coords = None
                if coords_key in keys:
                    with z.open(coords_key + ".npy") as f:
                        coords = _npy_header(f)[0]
            return BagFileHeader(shape, str(dtype), instance_label_key in keys, coords)
        if ext in _H5:
            with h5py.File(path, "r") as f:
                keys = list(f.keys())
                key = _pick_key(keys, feature_key, ignore, path)
                coords = tuple(f[coords_key].shape) if coords_key in keys else None
                return BagFileHeader(tuple(f[key].shape), str(f[key].dtype), instance_label_key in keys, coords)
        if ext == ".pt":
            obj = _load_pt(path, mmap=True)
            feats = _pt_features(obj, feature_key, ignore, path)
            is_dict = isinstance(obj, dict)
            coords = tuple(torch.as_tensor(obj[coords_key]).shape) if is_dict and coords_key in obj else None
            has_inst = is_dict and instance_label_key in obj
            return BagFileHeader(tuple(feats.shape), str(feats.dtype).removeprefix("torch."), has_inst, coords)
    raise _unsupported(path)


def _as_float32(arr: np.ndarray) -> np.ndarray:
    """float32, native byte order; no copy when it already is."""
    return np.asarray(arr).astype(np.float32, copy=False)


def read_bag_features(
    path: str | Path,
    feature_key: str | None = None,
    instance_label_key: str = "instance_labels",
    coords_key: str = "coords",
    allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Reads one bag's features as float32 and its instance labels, with no copy beyond a dtype conversion.

    Args:
        path: The bag file.
        feature_key: Entry holding the features (default: ``features``, ``x``, ``feats``, ``data``, or the only
            entry besides instance labels and coordinates).
        instance_label_key: Entry holding instance labels, if any.
        coords_key: Entry holding coordinates (never taken for the features).
        allocate: ``allocate(shape)`` → a C-contiguous float32 array of that shape to read an HDF5 file's features
            into (e.g. a recycled buffer: memory that is already mapped costs no page faults); default: a new
            array. Other formats map or decode their own arrays and do not use it.

    Returns:
        ``(x, instance_labels)``: float32 tensor ``(n_i, *instance_shape)`` (not validated: see
        :class:`~lossattn.datasets.FeatureFolderDataset`) and an integer array ``(n_i,)`` or ``None``.

    Raises:
        DataFormatError: Unreadable, truncated or corrupt file, or no feature entry.
        MissingDependencyError: An ``.h5`` file without h5py installed.
    """
    path = Path(path)
    ext = path.suffix.lower()
    ignore = (instance_label_key, coords_key)
    if ext in _H5:
        h5py = h5py_module(path)
    with _reading(path):
        if ext == ".npy":
            try:
                arr = np.load(path, mmap_mode="c", allow_pickle=False)
            except ValueError:  # an empty array cannot be mapped
                arr = np.load(path, allow_pickle=False)
            return torch.from_numpy(_as_float32(arr)), None
        if ext == ".npz":
            # opened here so the file is closed even when numpy fails on a damaged archive
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                key = _pick_key(list(npz.files), feature_key, ignore, path)
                inst = np.asarray(npz[instance_label_key]) if instance_label_key in npz.files else None
                return torch.from_numpy(_as_float32(npz[key])), inst
        if ext in _H5:
            with h5py.File(path, "r") as f:
                key = _pick_key(list(f.keys()), feature_key, ignore, path)
                dset = f[key]
                if dset.ndim == 0 or dset.size == 0 or dset.dtype.kind not in "fiub":
                    out = _as_float32(np.asarray(dset))
                else:
                    out = np.empty(dset.shape, dtype=np.float32) if allocate is None else allocate(dset.shape)
                    dset.read_direct(out)  # HDF5 converts float16/float64/int on the fly, into the final array
                # [()] reads the whole dataset directly (np.asarray goes through the array protocol, 15x slower)
                inst = np.asarray(f[instance_label_key][()]) if instance_label_key in f else None
                return torch.from_numpy(out), inst
        if ext == ".pt":
            obj = _load_pt(path, mmap=True)
            x = _pt_features(obj, feature_key, ignore, path).detach().cpu().to(torch.float32)
            inst = obj.get(instance_label_key) if isinstance(obj, dict) else None
            return x, None if inst is None else np.asarray(torch.as_tensor(inst))
    raise _unsupported(path)


def read_coords(path: str | Path, coords_key: str = "coords") -> np.ndarray | None:
    """Reads a file's instance coordinates without reading its features.

    Args:
        path: A bag file (or a CLAM ``patches/<slide>.h5`` holding only coordinates).
        coords_key: The coordinates entry.

    Returns:
        int64 ``(n, 2)`` (float64 if the file stores non-integer coordinates), or ``None`` if the file has no
        such entry (``.npy`` files never have one).

    Raises:
        DataFormatError: Unreadable, truncated or corrupt file.
        MissingDependencyError: An ``.h5`` file without h5py installed.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext in _H5:
        h5py = h5py_module(path)
    with _reading(path):
        arr: Any = None
        if ext == ".npy":
            return None
        if ext == ".npz":
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                arr = npz[coords_key] if coords_key in npz.files else None
        elif ext in _H5:
            with h5py.File(path, "r") as f:
                arr = f[coords_key][()] if coords_key in f else None
        elif ext == ".pt":
            obj = _load_pt(path, mmap=True)
            arr = obj.get(coords_key) if isinstance(obj, dict) else None
            arr = None if arr is None else torch.as_tensor(arr).numpy()
        else:
            raise _unsupported(path)
    if arr is None:
        return None
    arr = np.asarray(arr)
    return arr.astype(np.int64) if np.issubdtype(arr.dtype, np.integer) else arr.astype(np.float64)


def read_coords_shape(path: str | Path, coords_key: str = "coords") -> tuple[int, ...] | None:
    """Shape of a file's coordinates entry, read from its header (``None`` if there is none); works on bag
    files and on files holding only coordinates (a CLAM ``patches/<slide>.h5``).

    Raises:
        DataFormatError: Unreadable, truncated or corrupt file.
        MissingDependencyError: An ``.h5`` file without h5py installed.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext in _H5:
        h5py = h5py_module(path)
        with _reading(path), h5py.File(path, "r") as f:
            return tuple(f[coords_key].shape) if coords_key in f else None
    with _reading(path):
        if ext == ".npy":
            return None
        if ext == ".npz":
            with zipfile.ZipFile(path) as z:
                if coords_key + ".npy" not in z.namelist():
                    return None
                with z.open(coords_key + ".npy") as f:
                    return _npy_header(f)[0]
        if ext == ".pt":
            obj = _load_pt(path, mmap=True)
            if isinstance(obj, dict) and coords_key in obj:
                return tuple(torch.as_tensor(obj[coords_key]).shape)
            return None
    raise _unsupported(path)


def read_bag_file(
    path: str | Path,
    feature_key: str | None = None,
    instance_label_key: str = "instance_labels",
    header_only: bool = False,
) -> tuple[Any, Any]:
    """Reads one bag file (the older interface of :func:`read_bag_features` / :func:`read_bag_header`).

    Args:
        path: ``.pt``, ``.npy``, ``.npz``, ``.h5`` or ``.hdf5`` file.
        feature_key: Entry holding the features.
        instance_label_key: Entry holding instance labels, if any.
        header_only: Return ``(shape tuple, has_instance_labels bool)`` without reading the data.

    Returns:
        ``(features float32 tensor, instance_labels array or None)``, or the header information.

    Raises:
        DataFormatError: Unreadable, truncated or corrupt file, or no feature entry.
        MissingDependencyError: An ``.h5`` file without h5py installed.
    """
    if header_only:
        h = read_bag_header(path, feature_key, instance_label_key)
        return h.shape, h.has_instance_labels
    return read_bag_features(path, feature_key, instance_label_key)
