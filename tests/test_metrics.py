"""Metrics agree with scikit-learn and hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from lossattn.metrics import accuracy, instance_retrieval, roc_auc, summarize


def test_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p))


def test_binary_and_multiclass_auc_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    probs = rng.dirichlet([1, 1], 40)
    assert roc_auc(y, probs) == pytest.approx(roc_auc_score(y, probs[:, 1]))
    y4 = rng.integers(0, 4, 60)
    p4 = rng.dirichlet([1, 1, 1, 1], 60)
    assert roc_auc(y4, p4) == pytest.approx(roc_auc_score(y4, p4, multi_class="ovr", average="macro"))


def test_auc_undefined_with_one_class_is_nan():
    assert np.isnan(roc_auc(np.zeros(5, int), np.full((5, 2), 0.5)))


def test_instance_retrieval_matches_sklearn_per_threshold():
    rng = np.random.default_rng(2)
    weights = [rng.dirichlet(np.ones(n)) for n in (3, 5, 8, 2)]
    labels = [rng.integers(0, 3, w.size) for w in weights]
    labels[1][0] = -1  # unknown instance labels are ignored
    out = instance_retrieval(weights, labels, thresholds=(0.5, 0.2, 0.1))
    w_all = np.concatenate(weights)
    y_all = np.concatenate(labels)
    known = y_all >= 0
    for tau, row in out.items():
        p, r, f, _ = precision_recall_fscore_support(
            y_all[known] > 0, w_all[known] > tau, average="binary", zero_division=0
        )
        assert (
            row["precision"] == pytest.approx(p) and row["recall"] == pytest.approx(r) and row["f1"] == pytest.approx(f)
        )


def test_instance_retrieval_hand_count():
    out = instance_retrieval(
        [np.array([0.9, 0.05, 0.05]), np.array([0.6, 0.4])], [np.array([1, 0, 0]), np.array([0, 2])], (0.5,)
    )
    # retrieved: 0.9 (relevant), 0.6 (not relevant) -> precision 1/2; relevant: 2 -> recall 1/2
    assert out[0.5]["precision"] == 0.5 and out[0.5]["recall"] == 0.5 and out[0.5]["f1"] == 0.5


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="bag 0: 2 weights but 3 instance labels"):
        instance_retrieval([np.ones(2)], [np.ones(3)])
    with pytest.raises(ValueError, match="equal length"):
        accuracy([0, 1], [0])


def test_summarize_ignores_nan():
    s = summarize([1.0, float("nan"), 3.0])
    assert s["mean"] == 2.0 and s["n"] == 2 and s["std"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_sklearn_with_ties_and_missing_classes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    # coarse scores: many ties
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]
    p1 = rng.integers(0, 4, size=n) / 4.0
    assert roc_auc(y, np.stack([1 - p1, p1], axis=1)) == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    # four columns, only three classes present (class 2 missing), renormalised over the present ones
    y4 = rng.choice([0, 1, 3], size=n)
    y4[:3] = [0, 1, 3]
    p4 = rng.dirichlet(np.ones(4), size=n).round(1) + 1e-3
    present = p4[:, [0, 1, 3]] / p4[:, [0, 1, 3]].sum(axis=1, keepdims=True)
    expected = roc_auc_score(y4, present, multi_class="ovr", average="macro", labels=[0, 1, 3])
    assert roc_auc(y4, p4) == pytest.approx(expected, abs=1e-12)
