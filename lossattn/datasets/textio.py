"""Low-level readers shared by the loaders: (gzipped) files, CSV rows, numeric parsing, grouping rows into bags."""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataFormatError

__all__ = ["read_bytes", "read_csv_rows", "read_csv_with_lines", "parse_float_matrix", "group_rows", "sniff_delimiter"]

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """Reads a whole file, transparently gunzipping it when it starts with the gzip magic bytes.

    Raises:
        DataFormatError: The file is gzip-compressed but corrupt or truncated.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(
            f"{path}: the gzip data is corrupt or truncated ({e}); download or copy the file again"
        ) from e


def read_csv_rows(path: str | Path, delimiter: str = ",") -> list[list[str]]:
    """Reads a (possibly gzipped) CSV file into rows of stripped strings, checking every row has the same
    number of fields.

    Blank lines are skipped.

    Args:
        path: File path (``.csv``, ``.data``, ``.csv.gz`` ...).
        delimiter: Field separator.

    Returns:
        The rows (the header, if any, is the first row).

    Raises:
        DataFormatError: Ragged rows (the message gives the line number and both field counts), corrupt gzip,
            or undecodable text.
    """
    return read_csv_with_lines(path, delimiter)[0]


_SPREADSHEET_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # xlsx/ods (zip), legacy xls (OLE2)


def _decode_table_text(path: Path, raw: bytes) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataFormatError(f"{path}: UTF-16 text (a spreadsheet's 'Unicode text' export); save it as UTF-8 CSV")
    if raw.startswith(_SPREADSHEET_MAGIC) or b"\x00" in raw[:4096]:
        kind = "a spreadsheet workbook (Excel / ODS)" if raw.startswith(_SPREADSHEET_MAGIC) else "a binary file"
        raise DataFormatError(
            f"{path}: not a text table, it looks like {kind}; save it as CSV (one row per instance: bag id, "
            "label, features) or Parquet"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not a UTF-8 text file ({e})") from e


def sniff_delimiter(text: str) -> str:
    """The field separator of a text table: ``,`` unless the first non-blank line has more ``;`` or tabs.

    Spreadsheets saved in locales with a decimal comma write ``;``-separated "CSV"; a first line with more
    semicolons or tabs than commas is read with those.
    """
    first = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ","))  # ties go to the comma
    return best if counts[best] > 0 else ","


def read_csv_with_lines(path: str | Path, delimiter: str | None = ",") -> tuple[list[list[str]], np.ndarray]:
    """:func:`read_csv_rows` plus the 1-based line number of each row (blank lines are skipped, so row ``i`` is
    not always line ``i + 1``). ``delimiter=None`` detects it (:func:`sniff_delimiter`).

    Returns:
        ``(rows, lines)``: the rows and an int64 array ``(len(rows),)`` of their line numbers.

    Raises:
        DataFormatError: ragged rows, malformed CSV, a spreadsheet or binary file, undecodable text, no rows.
    """
    path = Path(path)
    text = _decode_table_text(path, read_bytes(path))
    if delimiter is None:
        delimiter = sniff_delimiter(text)
    rows: list[list[str]] = []
    lines: list[int] = []
    width = None
    first_line = 0
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if width is None:
                width, first_line = len(row), reader.line_num
            elif len(row) != width:
                raise DataFormatError(
                    f"{path}, line {reader.line_num}: ragged row with {len(row)} fields, expected {width} "
                    f"(as on line {first_line})"
                )
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataFormatError(f"{path}, line {reader.line_num}: malformed CSV ({e})") from e
    if not rows:
        raise DataFormatError(f"{path}: the file holds no data rows")
    return rows, np.asarray(lines, dtype=np.int64)


def parse_float_matrix(
    rows: Sequence[Sequence[str]],
    columns: Sequence[int],
    path: str | Path,
    first_line: int = 1,
    *,
    lines: Sequence[int] | None = None,
    column_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Parses the given columns of string rows into a float64 matrix.

    Args:
        rows: String rows.
        columns: Column positions to parse.
        path: File name, for error messages.
        first_line: 1-based line number of ``rows[0]`` in the file, for error messages (when ``lines`` is not
            given, row ``i`` is taken to be line ``first_line + i``).
        lines: 1-based line number of every row, for error messages.
        column_names: The table's header, to name a bad column in messages.

    Returns:
        float64 array ``(len(rows), len(columns))``. ``nan``/``inf`` spellings are parsed (and rejected
        later, by bag).

    Raises:
        DataFormatError: A cell is not a number (the message gives line, column and value).
    """
    cols = list(columns)
    try:
        arr = np.array([[r[c] for c in cols] for r in rows], dtype=object)
        return arr.astype(np.float64).reshape(len(rows), len(cols))
    except ValueError:
        for li, r in enumerate(rows):
            for c in cols:
                try:
                    float(r[c])
                except ValueError:
                    line = int(lines[li]) if lines is not None else first_line + li
                    named = f" ({column_names[c]!r})" if column_names is not None else ""
                    decimal_comma = " (a decimal comma? write numbers with a decimal point)" if "," in r[c] else ""
                    label_hint = (
                        f"; if {column_names[c]!r} holds the bag label, name it with --label-column {column_names[c]}"
                        if column_names is not None and not decimal_comma
                        else ""
                    )
                    raise DataFormatError(
                        f"{path}, line {line}, column {c + 1}{named}: {r[c]!r} is not a number{decimal_comma}; "
                        f"feature columns must be numeric (choose them with --feature-columns; Python: "
                        f"feature_columns=[...]){label_hint}"
                    ) from None
        raise


def group_rows(keys: Sequence[object]) -> tuple[np.ndarray, np.ndarray, list[object]]:
    """Groups row keys (bag ids) into bags, in order of first appearance.

    Args:
        keys: One bag key per row, length ``N``.

    Returns:
        ``(order, offsets, unique_keys)``: ``order`` int64 ``(N,)`` puts rows bag by bag (stable within a
        bag), ``offsets`` int64 ``(B + 1,)``, and the ``B`` keys in first-appearance order.
    """
    key_arr = np.asarray([str(k) for k in keys])
    uniq, first, inverse = np.unique(key_arr, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    bag_of_row = rank[inverse.ravel()]
    order = np.argsort(bag_of_row, kind="stable").astype(np.int64)
    counts = np.bincount(bag_of_row, minlength=len(uniq))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    keys_in_order = [keys[int(i)] for i in np.sort(first)]
    return order, offsets, keys_in_order
