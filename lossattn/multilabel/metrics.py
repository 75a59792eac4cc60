"""Multi-label bag metrics and per-label instance retrieval.

Conventions: bag targets are multi-hot ``(B, K)``; instance labels follow the generators of
:mod:`lossattn.datasets` — ``j`` (1 … K) for an instance of the j-th target class, i.e. of label ``j − 1``,
``0`` for a non-target instance and ``-1`` for unknown (ignored).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from lossattn import metrics as M

__all__ = [
    "multilabel_scores",
    "instance_retrieval_per_label",
    "instance_average_precision",
    "DEFAULT_THRESHOLDS",
]

DEFAULT_THRESHOLDS = M.DEFAULT_THRESHOLDS


def _check(targets: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(targets)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"targets and probabilities must both be (B, K), got {y.shape} and {p.shape}")
    if y.shape[0] == 0:
        raise ValueError("multi-label metrics of zero bags are undefined")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("targets must be multi-hot (values 0 or 1)")
    return y.astype(np.int64), p


def multilabel_scores(targets: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Bag-level multi-label metrics.

    Args:
        targets: ``(B, K)`` multi-hot true label sets.
        probabilities: ``(B, K)`` per-label probabilities.
        threshold: a label is predicted when its probability exceeds it.

    Returns:
        ``micro_f1`` and ``macro_f1`` (at ``threshold``; a label with no positives and no predictions scores
        0 in the macro mean, sklearn's ``zero_division=0``), ``map`` (mean over labels with at least one
        positive of the average precision), ``macro_auc`` (mean ROC AUC over labels with both values
        present; NaN if none), ``hamming`` (share of wrong bag×label decisions), ``subset_accuracy`` (share
        of bags whose whole label set is right), and per-label ``ap_<c>`` and ``f1_<c>``.
    """
    y, p = _check(targets, probabilities)
    pred = (p > threshold).astype(np.int64)
    out: dict[str, float] = {
        "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "hamming": float((pred != y).mean()),
        "subset_accuracy": float((pred == y).all(axis=1).mean()),
    }
    aps, aucs = [], []
    per_f1 = f1_score(y, pred, average=None, zero_division=0)
    for c in range(y.shape[1]):
        if y[:, c].any():
            ap = float(average_precision_score(y[:, c], p[:, c]))
            aps.append(ap)
        else:
            ap = float("nan")
        if 0 < y[:, c].sum() < y.shape[0]:
            aucs.append(float(roc_auc_score(y[:, c], p[:, c])))
        out[f"ap_{c}"] = ap
        out[f"f1_{c}"] = float(per_f1[c])
    out["map"] = float(np.mean(aps)) if aps else float("nan")
    out["macro_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    return out


def _label_weights(w: np.ndarray, K: int, i: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 1:  # one shared distribution: the same weights for every label
        return np.repeat(w[:, None], K, axis=1)
    if w.ndim != 2 or w.shape[1] != K:
        raise ValueError(f"bag {i}: weights must be (n_i,) or (n_i, {K}), got {w.shape}")
    return w


def _per_label_pairs(weights, instance_labels, num_labels, bag_targets, bags):
    """Yields, per label c, the lists of per-bag weights α_·c and per-bag relevance labels (1/0/-1)."""
    if bags not in ("all", "positive"):
        raise ValueError(f"bags must be 'all' or 'positive', got {bags!r}")
    if len(weights) != len(instance_labels):
        raise ValueError(f"got weights for {len(weights)} bags but instance labels for {len(instance_labels)}")
    if bags == "positive":
        if bag_targets is None:
            raise ValueError("bags='positive' needs bag_targets (B, K)")
        bag_targets = np.asarray(bag_targets)
        if bag_targets.shape != (len(weights), num_labels):
            raise ValueError(f"bag_targets must be ({len(weights)}, {num_labels}), got {bag_targets.shape}")
    per_bag = [_label_weights(w, num_labels, i) for i, w in enumerate(weights)]
    for c in range(num_labels):
        ws, ys = [], []
        for i, (w, y) in enumerate(zip(per_bag, instance_labels, strict=True)):
            if bags == "positive" and not bag_targets[i, c]:
                continue
            y = np.asarray(y).ravel()
            if y.shape[0] != w.shape[0]:
                raise ValueError(f"bag {i}: {w.shape[0]} weights but {y.shape[0]} instance labels")
            ws.append(w[:, c])
            ys.append(np.where(y < 0, -1, (y == c + 1).astype(np.int64)))
        yield c, ws, ys


def instance_retrieval_per_label(
    weights: Sequence[np.ndarray],
    instance_labels: Sequence[np.ndarray],
    num_labels: int,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    bag_targets: np.ndarray | None = None,
    bags: str = "all",
) -> dict[int, dict[float, dict[str, float]]]:
    """Per label ``c``: precision, recall and F-score of retrieving the instances of label ``c`` by ``α_·c > τ``.

    Args:
        weights: per bag, ``(n_i, K)`` per-label weights or ``(n_i,)`` shared weights (used for every label).
        instance_labels: per bag, ``(n_i,)`` instance labels (``c + 1`` = an instance of label ``c``).
        num_labels: K.
        thresholds: the τ values.
        bag_targets: ``(B, K)`` multi-hot bag labels (needed for ``bags="positive"``).
        bags: ``"all"`` pools every bag (as the paper's Figure 2 does for single-label retrieval); ``"positive"`` only the
            bags that carry label ``c``.

    Returns:
        ``{c: {τ: {"precision", "recall", "f1", "retrieved", "relevant"}}}`` (see
        :func:`lossattn.metrics.instance_retrieval`).
    """
    return {
        c: M.instance_retrieval(ws, ys, thresholds) if ws else {}
        for c, ws, ys in _per_label_pairs(weights, instance_labels, num_labels, bag_targets, bags)
    }


def instance_average_precision(
    weights: Sequence[np.ndarray],
    instance_labels: Sequence[np.ndarray],
    num_labels: int,
    *,
    bag_targets: np.ndarray | None = None,
    bags: str = "all",
) -> dict[int, float]:
    """Per label: average precision of ranking all instances (pooled over bags) by ``α_·c``.

    A threshold-free companion of :func:`instance_retrieval_per_label`; NaN for a label without relevant
    instances.
    """
    out: dict[int, float] = {}
    for c, ws, ys in _per_label_pairs(weights, instance_labels, num_labels, bag_targets, bags):
        w = np.concatenate(ws) if ws else np.zeros(0)
        y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
        known = y >= 0
        if not (y[known] == 1).any():
            out[c] = float("nan")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[c] = float(average_precision_score(y[known], w[known]))
    return out
