"""Classic MIL benchmarks: MUSK1, MUSK2, FOX, TIGER, ELEPHANT.

Three file formats are read (see ``shared/data/SOURCES.md``):

* Andrews et al. MATLAB files (``*_matlab.mat``): ``features`` (sparse ``(N, D)``), ``labels`` (sparse
  ``(1, N)``, the bag label +1/-1 copied to every instance) and ``bag_ids`` (``(1, N)``).
* UCI ``clean1.data`` / ``clean2.data``: ``molecule, conformation, f1..f166, class`` per line.
* The ``mil`` package CSV (optionally gzipped), no header: ``label, bag id, features...``.

Labels are 1 = positive, 0 = negative. Instance labels are unknown (``-1``). Features are returned as stored;
standardisation belongs to the training pipeline (:class:`~lossattn.datasets.Standardizer`, fitted on the
training bags only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .bags import BagDataset
from .catalog import BENCHMARKS, get_spec
from .errors import DataFormatError, DataNotFoundError
from .sources import data_root, find_data_file, missing_data_error
from .table import bags_from_columns, load_table
from .textio import parse_float_matrix, read_csv_rows

__all__ = ["load", "read_andrews_mat", "read_uci_clean", "read_mil_csv"]

_CLASS_NAMES = ["negative", "positive"]


def _dense(value: object) -> np.ndarray:
    if hasattr(value, "toarray"):
        return np.asarray(value.toarray())
    return np.asarray(value)


def read_andrews_mat(path: str | Path, name: str | None = None) -> BagDataset:
    """Reads an Andrews et al. MIL ``.mat`` file (``features``, ``labels`` +/-1, ``bag_ids``).

    Args:
        path: The ``.mat`` file.
        name: Dataset name (default: file name).

    Returns:
        A :class:`BagDataset` with float32 features ``(n_i, D)``, labels 1 (positive) / 0 (negative), bag
        names = the bag ids.

    Raises:
        DataNotFoundError: No such file.
        DataFormatError: Truncated or corrupt file, missing variables, inconsistent sizes, labels other than
            +/-1 (or 0/1), or a bag whose instances carry different labels.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"MATLAB file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as e:
        raise DataFormatError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7 ({e})") from e
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/zlib.error/... on damaged files
        raise DataFormatError(f"{path}: not a readable MATLAB file, it is truncated or corrupt ({e})") from e
    missing = [k for k in ("features", "labels", "bag_ids") if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataFormatError(f"{path}: missing MATLAB variable(s) {missing}; found {found}")
    features = _dense(mat["features"]).astype(np.float64)
    raw_labels = _dense(mat["labels"]).ravel()
    bag_ids = _dense(mat["bag_ids"]).ravel()
    if features.ndim != 2:
        raise DataFormatError(f"{path}: 'features' has shape {features.shape}, expected (instances, features)")
    n = features.shape[0]
    if raw_labels.shape[0] != n or bag_ids.shape[0] != n:
        raise DataFormatError(
            f"{path}: {n} feature rows but {raw_labels.shape[0]} labels and {bag_ids.shape[0]} bag ids"
        )
    values = set(np.unique(raw_labels).tolist())
    if not (values <= {-1.0, 1.0} or values <= {0.0, 1.0}):
        raise DataFormatError(f"{path}: 'labels' holds {sorted(values)}; expected bag labels +1/-1 (or 1/0)")
    keys = [str(int(b)) if float(b).is_integer() else str(b) for b in bag_ids]
    return bags_from_columns(
        features=features,
        bag_keys=keys,
        labels=(raw_labels > 0).astype(np.int64),
        instance_labels=None,
        path=path,
        name=name or path.stem,
        num_classes=2,
        class_names=_CLASS_NAMES,
        meta={"source_file": str(path), "format": "andrews_mat"},
    )


def read_uci_clean(path: str | Path, name: str | None = None) -> BagDataset:
    """Reads the UCI MUSK ``clean1.data`` / ``clean2.data`` text file.

    Each line is ``molecule_name, conformation_name, f1..fD, class`` (class written ``1.`` or ``0.``); the
    molecule is the bag.

    Args:
        path: The ``.data`` file (optionally gzipped).
        name: Dataset name (default: file name).

    Returns:
        A :class:`BagDataset` with raw integer-valued features as float32, bag names = molecule names.

    Raises:
        DataNotFoundError: No such file.
        DataFormatError: Ragged rows, non-numeric features or class, or a molecule with mixed classes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"UCI MUSK file not found: {path}")
    rows = read_csv_rows(path)
    width = len(rows[0])
    if width < 4:
        raise DataFormatError(f"{path}: {width} fields per line; expected molecule, conformation, features..., class")
    features = parse_float_matrix(rows, range(2, width - 1), path)
    classes = parse_float_matrix(rows, [width - 1], path).ravel()
    bad = ~np.isin(classes, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}, line {i + 1}: class {rows[i][-1]!r}; expected 1. (musk) or 0. (non-musk)")
    return bags_from_columns(
        features=features,
        bag_keys=[r[0] for r in rows],
        labels=classes.astype(np.int64),
        instance_labels=None,
        path=path,
        name=name or path.name.split(".")[0],
        num_classes=2,
        class_names=_CLASS_NAMES,
        meta={"source_file": str(path), "format": "uci_clean"},
    )


def read_mil_csv(path: str | Path, name: str | None = None) -> BagDataset:
    """Reads a ``mil``-package CSV (no header; ``label, bag id, features...``), optionally gzipped.

    Raises:
        DataNotFoundError: No such file.
        DataFormatError: Ragged rows, non-numeric cells, mixed labels within a bag, labels outside 0/1.
    """
    path = Path(path)
    ds = load_table(
        path, bag_column=1, label_column=0, header=False, num_classes=2, name=name, class_names=_CLASS_NAMES
    )
    ds.meta["format"] = "mil_csv"
    return ds


def _reader_for(path: Path):
    lower = path.name.lower()
    if lower.endswith(".mat"):
        return read_andrews_mat
    if lower.endswith((".data", ".data.gz")):
        return read_uci_clean
    if lower.endswith((".csv", ".csv.gz")):
        return read_mil_csv
    raise DataFormatError(f"{path}: unknown benchmark file type (expected .mat, .data, .csv or .csv.gz)")


def load(
    name: str, root: str | os.PathLike[str] | None = None, *, file: str | os.PathLike[str] | None = None
) -> BagDataset:
    """Loads a classic MIL benchmark.

    Files are looked up as ``<root>/<name>/<file>``; the first present of the catalogue's files is read
    (MUSK1: ``musk1norm_matlab.mat``, ``clean1.data``, ``musk1.csv[.gz]``; MUSK2: ``musk2norm_matlab.mat``,
    ``clean2.data``, ``musk2.csv[.gz]``; animals: ``<name>_100x100_matlab.mat``, ``<name>.csv[.gz]``).

    Args:
        name: ``"musk1"``, ``"musk2"``, ``"fox"``, ``"tiger"`` or ``"elephant"`` (case-insensitive).
        root: Data root (default: :func:`~lossattn.datasets.data_root`).
        file: Read this file instead of the first present one: a file name inside ``<root>/<name>/`` or a
            path to a file anywhere.

    Returns:
        A :class:`BagDataset` named ``name``: features float32 ``(n_i, D)``, labels 1 = positive,
        0 = negative, instance labels unknown (``-1``), ``meta["source_file"]`` = the file read.

    Raises:
        UnknownDatasetError: Unknown dataset name (a ``ValueError``; the message lists every valid name).
        ValueError: ``name`` is a generated or image dataset (use its ``make_*`` / ``load_*`` function).
        DataNotFoundError: No file present; the message lists where it was looked for and how to get it.
        DataFormatError: The file is corrupt, truncated or malformed.

    Example:
        >>> ds = load("musk1")                      # doctest: +SKIP
        >>> len(ds), ds.num_instances, ds.num_features  # doctest: +SKIP
        (92, 476, 166)
    """
    spec = get_spec(name)
    if spec.name not in BENCHMARKS:
        if spec.kind == "images":
            raise ValueError(
                f"{spec.name} is an image classification set, not a fixed benchmark: use "
                f"load_{spec.name.split('-')[0]}(...) (fixed benchmarks: {', '.join(BENCHMARKS)})"
            )
        raise ValueError(
            f"{spec.name} is not a fixed benchmark; its bags are generated: use "
            f"make_{spec.name.split('-')[0]}_bags(...) (fixed benchmarks: {', '.join(BENCHMARKS)})"
        )
    base = data_root(root)
    if file is not None:
        path = Path(file)
        if not path.is_absolute() and not path.is_file():
            path = base / spec.name / path
        if not path.is_file():
            raise DataNotFoundError(f"{spec.name}: file {path} not found")
    else:
        group = spec.requirements[0]
        found = find_data_file(base, group)
        if found is None:
            raise missing_data_error(spec, base, group, "data file")
        path = found
    ds = _reader_for(path)(path, spec.name)
    ds.name = spec.name
    return ds
