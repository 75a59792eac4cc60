"""Bag and instance metrics: accuracy, balanced accuracy, ROC AUC, instance retrieval by weight (Shi et al. 2020, Sec. 5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "accuracy",
    "balanced_accuracy",
    "best_threshold",
    "instance_retrieval",
    "roc_auc",
    "summarize",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Share of bags whose predicted class equals the label."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and predictions must be 1-D of equal length, got {labels.shape} and {predictions.shape}"
        )
    if labels.size == 0:
        raise ValueError("accuracy of zero bags is undefined")
    return float((labels == predictions).mean())


def balanced_accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Mean over the classes present in ``labels`` of the share of their bags predicted correctly (recall).

    On imbalanced data it does not reward predicting the majority class: that scores ``1 / K`` here (0.5 for
    two classes), whatever the prior. Equals ``sklearn.metrics.balanced_accuracy_score``.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    accuracy(labels, predictions)  # same shape checks
    return float(np.mean([(predictions[labels == k] == k).mean() for k in np.unique(labels)]))


def best_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The decision threshold on positive-class scores that maximises balanced accuracy (Youden's J statistic).

    A bag is predicted positive when ``score >= threshold``. Candidates are the midpoints between consecutive
    distinct scores (and the ends); ties are broken towards 0.5, so a threshold is only moved away from the usual
    one when that helps. Choose it on validation bags, never on test bags.

    Raises:
        ValueError: labels that are not binary 0/1, or a class missing (nothing to balance).
    """
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or not np.isin(y, (0, 1)).all():
        raise ValueError(f"best_threshold needs binary 0/1 labels and one score per bag, got {y.shape} / {s.shape}")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("best_threshold needs bags of both classes")
    values = np.unique(s)
    candidates = np.concatenate([[values[0] - 1e-9], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-9]])
    tpr = np.array([(s[y == 1] >= t).sum() / n_pos for t in candidates])
    tnr = np.array([(s[y == 0] < t).sum() / n_neg for t in candidates])
    score = (tpr + tnr) / 2
    best = np.flatnonzero(np.isclose(score, score.max(), rtol=0, atol=1e-12))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def roc_auc(labels: Sequence[int], probabilities: np.ndarray) -> float:
    """ROC AUC: binary (positive class 1) or one-vs-rest macro for more classes.

    Args:
        labels: ``(B,)`` classes.
        probabilities: ``(B, K)`` class probabilities.

    Returns:
        The AUC, or NaN when only one class is present (AUC undefined).
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
        raise ValueError(f"probabilities must be (B, K) with B={labels.shape[0]}, got {probabilities.shape}")
    K = probabilities.shape[1]
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    if K == 2:
        return _binary_auc(labels == 1, probabilities[:, 1])
    # one-vs-rest over the classes present; renormalise so the columns used sum to 1
    cols = probabilities[:, present]
    cols = cols / cols.sum(axis=1, keepdims=True).clip(min=1e-12)
    if present.size == 2:
        return _binary_auc(labels == present[1], cols[:, 1])
    return float(np.mean([_binary_auc(labels == k, cols[:, j]) for j, k in enumerate(present)]))


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann–Whitney form of the ROC AUC, ties counted half (= ``sklearn.metrics.roc_auc_score``).

    The Trainer computes the validation AUC after every epoch; scikit-learn's input validation costs
    ~8 ms a call, several times the whole forward pass of a classic-MIL validation split.
    """
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, ties share their mean rank
    rank_sum = float(average_rank[inverse.ravel()][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def instance_retrieval(
    weights: Sequence[np.ndarray],
    instance_labels: Sequence[np.ndarray],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[float, dict[str, float]]:
    """Precision, recall and F-score of retrieving the relevant instances by ``α > τ``.

    An instance is relevant when its label is > 0 (a target class); instances with unknown label
    (< 0) are ignored. Counts are pooled over all bags (micro average). Precision is 0 when nothing
    is retrieved; F is 0 when precision + recall is 0.

    Args:
        weights: per bag, ``(n_i,)`` instance weights.
        instance_labels: per bag, ``(n_i,)`` instance labels.
        thresholds: the τ values.

    Returns:
        ``{τ: {"precision", "recall", "f1", "retrieved", "relevant"}}``.
    """
    if len(weights) != len(instance_labels):
        raise ValueError(f"got weights for {len(weights)} bags but instance labels for {len(instance_labels)}")
    w_all, y_all = [], []
    for i, (w, y) in enumerate(zip(weights, instance_labels, strict=True)):
        w, y = np.asarray(w, dtype=np.float64).ravel(), np.asarray(y).ravel()
        if w.shape != y.shape:
            raise ValueError(f"bag {i}: {w.size} weights but {y.size} instance labels")
        known = y >= 0
        w_all.append(w[known])
        y_all.append(y[known] > 0)
    w = np.concatenate(w_all) if w_all else np.zeros(0)
    relevant = np.concatenate(y_all) if y_all else np.zeros(0, bool)
    out: dict[float, dict[str, float]] = {}
    for tau in thresholds:
        retrieved = w > tau
        tp = int((retrieved & relevant).sum())
        n_ret, n_rel = int(retrieved.sum()), int(relevant.sum())
        precision = tp / n_ret if n_ret else 0.0
        recall = tp / n_rel if n_rel else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if (precision + recall) > 0 else 0.0
        out[float(tau)] = {"precision": precision, "recall": recall, "f1": f1, "retrieved": n_ret, "relevant": n_rel}
    return out


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation (ddof=0, as usually reported), min, max and count, ignoring NaN."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }
