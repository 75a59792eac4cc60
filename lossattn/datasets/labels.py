"""Bag labels as the user writes them (``0/7``, ``-1/+1``, ``benign/tumor``) mapped to classes ``0 .. K-1``.

Every model and metric works with integer classes ``0 .. K-1``; user files hold whatever values their authors
chose. :func:`encode_labels` maps one to the other and keeps the user's values (``label_values``) so
predictions can be written back in them. A bag without a label (an empty cell, ``nan``, ``None``) is
*unknown* and stored as ``-1``; a dataset whose bags are all unknown is *unlabeled* (fine for prediction,
refused for training by :func:`check_trainable`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LabelEncoding", "normalize_label", "encode_labels", "check_trainable", "MISSING_LABEL_TEXTS"]

#: cell texts read as "no label" (compared case-insensitively after stripping)
MISSING_LABEL_TEXTS = ("", "nan", "na", "n/a", "none", "null")

LabelValue = int | str


@dataclass(frozen=True)
class LabelEncoding:
    """Result of :func:`encode_labels`.

    Attributes:
        codes: int64 ``(B,)`` classes in ``0 .. num_classes - 1``, or all ``-1`` for unlabeled bags.
        label_values: The user's value of each class, ``label_values[k]`` for class ``k`` (ints stay ints,
            anything else is a string); ``None`` when unlabeled and nothing says what the classes are.
        class_names: Display name of each class (given, else ``str`` of the label values); ``None`` when
            unknown.
        num_classes: ``K``; ``None`` when unlabeled and no hint gives it.
    """

    codes: np.ndarray
    label_values: list[LabelValue] | None
    class_names: list[str] | None
    num_classes: int | None

    @property
    def has_labels(self) -> bool:
        """Whether the bags carry labels (they are then all known)."""
        return bool(self.codes.size and (self.codes >= 0).all())


def normalize_label(value: Any) -> LabelValue | None:
    """One label cell as the value it stands for.

    Integral numbers (``1``, ``1.0``, ``"1."``, ``"+1"``, ``True``) become ``int``; other text becomes the stripped
    string; a missing value (``None``, ``nan``, an empty cell or one of :data:`MISSING_LABEL_TEXTS`) becomes
    ``None``.

    Raises:
        ValueError: A non-integral number such as ``0.5`` (class labels are integers or names; a column of
            fractions is a feature column, not labels) or an infinite one.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
    else:
        text = str(value).strip()
        if text.lower() in MISSING_LABEL_TEXTS:
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        if math.isnan(number):
            return None
    if not math.isfinite(number) or number != round(number):
        raise ValueError(f"label {value!r} is not an integer; class labels must be integers or names")
    return int(number)


def _sorted_values(values: set[LabelValue]) -> list[LabelValue]:
    if all(isinstance(v, int) for v in values):
        return sorted(values)  # numerically
    return sorted(str(v) for v in values)  # lexicographically


def encode_labels(
    values: Sequence[Any],
    *,
    names: Sequence[str] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    label_values: Sequence[Any] | None = None,
    where: str = "dataset",
) -> LabelEncoding:
    """Maps the user's bag labels to classes ``0 .. K-1``.

    Rules, first match wins (values are first normalised by :func:`normalize_label`):

    1. ``label_values`` given: class ``k`` is the bag label ``label_values[k]``; any other value is an error.
    2. ``class_names`` given and every label is one of them: class ``k`` is ``class_names[k]``.
    3. Integer labels already in ``0 .. K-1`` with ``K = num_classes`` (or ``len(class_names)``) given: kept.
    4. Integer labels within ``{0, 1}``: kept, ``K = 2`` (the MIL convention: 1 = positive).
    5. Integer labels within ``{-1, +1}``: ``-1 -> 0``, ``+1 -> 1``, ``K = 2``.
    6. Otherwise the distinct values, sorted numerically when all are integers and lexicographically
       otherwise, become ``0 .. K-1`` (``{0, 7} -> {0, 1}``, ``{"benign", "tumor"} -> {0, 1}``); a
       ``num_classes`` given must then equal the number of distinct values.

    Bags whose label is missing are unknown (``-1``). All bags unknown: the dataset is unlabeled, its
    ``num_classes`` is ``num_classes``, ``len(label_values)`` or ``len(class_names)`` if one is given, else
    ``None``. Some bags unknown and others labelled is an error naming the first unknown bag.

    Args:
        values: ``B`` raw bag labels (strings from a CSV, numbers, ``None``...).
        names: ``B`` bag names, for messages (default: positions).
        num_classes: Number of classes, when known (e.g. from a trained model).
        class_names: Display names of the classes.
        label_values: The user's value of each class, fixing the mapping (e.g. the one saved with a model).
        where: Prefix of error messages (the file or dataset).

    Returns:
        A :class:`LabelEncoding`.

    Raises:
        ValueError: A non-integral number, an unknown value under ``label_values``, mixed known and unknown
            labels, more distinct values than ``num_classes``, or inconsistent ``class_names`` length.
    """
    raw = list(values)
    bag_names = [str(i) for i in range(len(raw))] if names is None else [str(n) for n in names]
    norm: list[LabelValue | None] = []
    for i, v in enumerate(raw):
        try:
            norm.append(normalize_label(v))
        except ValueError as e:
            raise ValueError(f"{where}: bag '{bag_names[i]}': {e}") from None
    given_values = None if label_values is None else [normalize_label(v) for v in label_values]
    if given_values is not None and any(v is None for v in given_values):
        raise ValueError(f"{where}: label_values {list(label_values)!r} contains a missing value")
    known = [v is not None for v in norm]
    names_out = None if class_names is None else [str(c) for c in class_names]
    if raw and not any(known):
        k = num_classes
        if k is None and given_values is not None:
            k = len(given_values)
        if k is None and names_out is not None:
            k = len(names_out)
        lv = given_values if given_values is not None else (list(range(int(k))) if k is not None else None)
        if names_out is None and lv is not None:
            names_out = [str(v) for v in lv]
        return LabelEncoding(np.full(len(raw), -1, dtype=np.int64), lv, names_out, None if k is None else int(k))
    if not all(known):
        i = known.index(False)
        j = known.index(True)
        raise ValueError(
            f"{where}: bag '{bag_names[i]}' has no label, but other bags do (e.g. '{bag_names[j]}' = {norm[j]!r}); "
            f"label every bag (to train or evaluate) or none (to predict)"
        )
    present = set(norm)  # type: ignore[arg-type]
    mapping: dict[Any, int]
    if given_values is not None:
        if len(set(map(str, given_values))) != len(given_values):
            raise ValueError(f"{where}: label_values {given_values!r} has repeated values")
        mapping = {str(v): k for k, v in enumerate(given_values)}
        for i, v in enumerate(norm):
            if str(v) not in mapping:
                raise ValueError(
                    f"{where}: bag '{bag_names[i]}' has label {v!r}, which is not one of label_values {given_values!r}"
                )
        lv: list[LabelValue] = list(given_values)  # type: ignore[arg-type]
        codes = [mapping[str(v)] for v in norm]
    elif names_out is not None and all(str(v) in names_out for v in present):
        lv = list(names_out)
        codes = [names_out.index(str(v)) for v in norm]
    else:
        ints = all(isinstance(v, int) for v in present)
        hint = num_classes if num_classes is not None else (len(names_out) if names_out is not None else None)
        if ints and hint is not None and all(0 <= v < hint for v in present):  # type: ignore[operator]
            lv = list(range(int(hint)))
            codes = [int(v) for v in norm]  # type: ignore[arg-type]
        elif ints and present <= {0, 1}:
            lv, codes = [0, 1], [int(v) for v in norm]  # type: ignore[arg-type]
        elif ints and present <= {-1, 1}:
            lv, codes = [-1, 1], [0 if v == -1 else 1 for v in norm]
        else:
            lv = _sorted_values(present)
            if num_classes is not None and int(num_classes) != len(lv):
                raise ValueError(
                    f"{where}: the bag labels take {len(lv)} distinct values {lv!r}, which are not the classes "
                    f"0..{int(num_classes) - 1} (num_classes={int(num_classes)}); pass label_values=[...] (the value "
                    f"of class 0, 1, ...) to say which value is which class"
                )
            mapping = {str(v): k for k, v in enumerate(lv)}
            codes = [mapping[str(v)] for v in norm]
    k = len(lv)
    if num_classes is not None and int(num_classes) != k:
        raise ValueError(
            f"{where}: num_classes={int(num_classes)} but the labels define {k} classes (label values {lv!r})"
        )
    if names_out is None:
        names_out = [str(v) for v in lv]
    elif len(names_out) != k:
        raise ValueError(f"{where}: {len(names_out)} class_names {names_out!r} for {k} classes (label values {lv!r})")
    return LabelEncoding(np.asarray(codes, dtype=np.int64), lv, names_out, k)


def check_trainable(dataset: Any, what: str = "training set") -> None:
    """Raises unless ``dataset`` can train a classifier: labelled bags of at least two classes.

    Call it on the bags a model is about to be fitted on (after splitting: a fold can lose a class).

    Args:
        dataset: A bag dataset (anything with ``labels``, ``name`` and optionally ``class_names``).
        what: What the dataset is, for the message (``"training set"``, ``"fold 3 training bags"``...).

    Raises:
        ValueError: The bags are unlabeled, or fewer than two classes are present (the message gives the
            number of bags of each class).
    """
    name = getattr(dataset, "name", "?")
    labels = np.asarray(dataset.labels)
    if labels.size == 0:
        raise ValueError(f"the {what} ('{name}') has no bags")
    if not bool((labels >= 0).any()):
        column = getattr(dataset, "meta", {}).get("label_column") or "label"
        raise ValueError(
            f"the {what} ('{name}') is unlabeled: none of its {labels.size} bags has a label (no {column!r} "
            f"column, or every cell empty). Training needs labelled bags: add a label column, or pass "
            f"label_column= naming it; unlabeled bags can only be predicted on"
        )
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    if classes.size < 2:
        names = getattr(dataset, "class_names", None)
        try:
            k = int(dataset.num_classes)
        except (AttributeError, TypeError, ValueError):
            k = int(classes.max()) + 1
        full = np.bincount(labels[labels >= 0], minlength=k)
        shown = ", ".join(
            f"{names[c] if names and c < len(names) else c}: {int(n)}" for c, n in enumerate(full.tolist())
        )
        raise ValueError(
            f"the {what} ('{name}') has bags of only one class (bags per class: {shown}); training a classifier "
            f"needs at least two classes present"
        )
