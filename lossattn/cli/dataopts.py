"""Options for the user's own tables and feature folders, shared by every command that reads data.

``--bag-column``, ``--label-column``, ``--feature-columns``, ``--split-column``, ``--group-column`` and
``--header/--no-header`` choose the columns of a table (or a feature folder's manifest) by name or 0-based
position; ``none`` means the table has no such column (``--label-column none``: unlabeled bags, e.g. to
predict). Options left out are detected (see :func:`lossattn.datasets.load_table`). They become the data
config's loader arguments, so a run's ``config.yaml`` and ``best.pt`` remember them.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_data_options", "column", "data_kwargs"]

_COLUMNS = {
    "bag_column": "bag id",
    "label_column": "bag label (any values: mapped to classes 0..K-1 and back); none = unlabeled bags",
    "split_column": "split (train/test values; train --protocol fixed, predict --split)",
    "group_column": "group: case / patient id (folds and validation splits keep a group together)",
}


def column(text: str) -> str | int | None:
    """A column given on the command line: ``none`` → None, an integer → a 0-based position, else a name."""
    value = text.strip()
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    if not value:
        raise argparse.ArgumentTypeError("empty column name; give a name, a 0-based position or none")
    return value


def _columns(text: str) -> list[str | int]:
    parts = [column(part) for part in text.split(",") if part.strip()]
    if not parts or any(p is None for p in parts):
        raise argparse.ArgumentTypeError(f"expected column names or positions separated by commas, got {text!r}")
    return parts  # type: ignore[return-value]


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "your own data (a CSV/Parquet table, or a feature folder's manifest)",
        "columns by name or 0-based position; without these options they are detected: a header row's names "
        "(bag_id/slide_id, label, split, case_id/patient_id), or without a header the mil package convention "
        "(column 0 = label, column 1 = bag id, the rest features)",
    )
    for name, what in _COLUMNS.items():
        flag = "--" + name.replace("_", "-")
        g.add_argument(
            flag, dest=name, type=column, metavar="COL", default=argparse.SUPPRESS, help=f"column of the {what}"
        )
    g.add_argument(
        "--feature-columns",
        dest="feature_columns",
        type=_columns,
        metavar="COL,COL",
        default=argparse.SUPPRESS,
        help="feature columns (default: every column no other option names)",
    )
    g.add_argument(
        "--manifest",
        dest="manifest",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="a feature folder's manifest CSV, relative to the folder or absolute (default: manifest.csv)",
    )
    h = g.add_mutually_exclusive_group()
    h.add_argument("--header", dest="header", action="store_const", const=True, default=argparse.SUPPRESS,
                   help="the first row holds column names")  # fmt: skip
    h.add_argument("--no-header", dest="header", action="store_const", const=False, default=argparse.SUPPRESS,
                   help="the first row is data (default: detected)")  # fmt: skip


def data_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The loader arguments the user gave; options left out are absent (detected), ``none`` gives None."""
    return {
        key: getattr(args, key) for key in (*_COLUMNS, "feature_columns", "header", "manifest") if key in vars(args)
    }
