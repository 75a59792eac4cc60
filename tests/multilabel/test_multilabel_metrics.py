"""Multi-label metrics: F1, mAP, Hamming, per-label instance retrieval and instance AP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossattn.multilabel.metrics import instance_average_precision, instance_retrieval_per_label, multilabel_scores


def test_perfect_and_known_scores():
    Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = multilabel_scores(Y, Y * 0.9 + 0.05)
    assert s["micro_f1"] == s["macro_f1"] == s["map"] == s["subset_accuracy"] == s["macro_auc"] == 1.0
    assert s["hamming"] == 0.0
    # predict label 0 everywhere, label 1 nowhere
    P = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    s = multilabel_scores(Y, P)
    assert math.isclose(s["f1_0"], 2 / 3) and s["f1_1"] == 0.0
    assert math.isclose(s["macro_f1"], 1 / 3) and math.isclose(s["hamming"], 4 / 8)
    tp, fp, fn = 2, 2, 2
    assert math.isclose(s["micro_f1"], 2 * tp / (2 * tp + fp + fn))
    assert s["subset_accuracy"] == 0.25  # only the bag [1, 0]


def test_label_without_positives_is_left_out_of_map():
    Y = np.array([[1, 0], [0, 0]])
    s = multilabel_scores(Y, np.array([[0.8, 0.3], [0.2, 0.1]]))
    assert math.isnan(s["ap_1"]) and s["map"] == 1.0 and s["macro_auc"] == 1.0
    with pytest.raises(ValueError, match="multi-hot"):
        multilabel_scores(np.array([[2]]), np.array([[0.5]]))
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        multilabel_scores(np.array([1, 0]), np.array([0.5, 0.5]))


def test_instance_retrieval_per_label_and_ap():
    # two bags, labels 0 and 1; instance labels are c + 1
    weights = [np.array([[0.8, 0.1], [0.1, 0.1], [0.1, 0.8]]), np.array([[0.5, 0.6], [0.5, 0.4]])]
    inst = [np.array([1, 0, 2]), np.array([0, -1])]
    out = instance_retrieval_per_label(weights, inst, 2, thresholds=(0.7, 0.45))
    assert out[0][0.7] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "retrieved": 1, "relevant": 1}
    assert out[0][0.45]["retrieved"] == 2 and out[0][0.45]["precision"] == 0.5  # the unknown instance is ignored
    assert out[1][0.7]["precision"] == 1.0 and out[1][0.45]["retrieved"] == 2
    targets = np.array([[1, 1], [0, 1]])
    pos = instance_retrieval_per_label(weights, inst, 2, thresholds=(0.45,), bag_targets=targets, bags="positive")
    assert pos[0][0.45]["retrieved"] == 1 and pos[0][0.45]["precision"] == 1.0
    # shared (n_i,) weights serve every label
    shared = instance_retrieval_per_label([np.array([0.9, 0.05, 0.05])], [np.array([1, 0, 2])], 2, (0.5,))
    assert shared[0][0.5]["f1"] == 1.0 and shared[1][0.5]["recall"] == 0.0
    ap = instance_average_precision(weights, inst, 2)
    assert ap[0] == 1.0 and ap[1] == 1.0
    assert math.isnan(instance_average_precision([np.array([0.5, 0.5])], [np.array([0, 1])], 2)[1])
    with pytest.raises(ValueError, match="bag_targets"):
        instance_retrieval_per_label(weights, inst, 2, bags="positive")
    with pytest.raises(ValueError, match="weights"):
        instance_retrieval_per_label([np.zeros((3, 3))], [np.zeros(3)], 2)
