"""Patch AP and the CAMELYON16-style FROC of attention weights against lesion masks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from lossattn.slides import (
    average_precision,
    froc,
    local_maxima,
    make_synthetic_slides,
    normalize_weights,
    patch_average_precision,
)


def _row(n: int, s: int = 256) -> np.ndarray:
    return np.c_[np.arange(n) * s, np.zeros(n, dtype=int)]


# --------------------------------------------------------------------------------------------- AP


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 60))
        y = rng.random(n) < 0.3
        if not y.any():
            y[0] = True
        s = np.round(rng.random(n), 1)  # many ties
        assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_average_precision_closed_forms():
    # ranks 1..4 = [+, -, +, -]: AP = 1/2 * 1/1 + 1/2 * 2/3
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # a tie retrieved together: {+, -} then {+}: 1/2 * 1/2 + 1/2 * 2/3
    assert average_precision([1.0, 1.0, 0.0], [1, 0, 1]) == pytest.approx(7 / 12)
    assert np.isnan(average_precision([1.0, 2.0], [0, 0]))


def test_normalisations():
    w = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(normalize_weights(w, "mean"), 4 * w)  # N·w for weights summing to 1
    np.testing.assert_allclose(normalize_weights(w, "max"), w / 0.4)
    np.testing.assert_allclose(normalize_weights(w, "minmax"), [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(normalize_weights([3.0, 1.0, 1.0], "rank"), [1.0, 0.25, 0.25])
    np.testing.assert_allclose(normalize_weights([-1.0, 2.0], "none"), [-1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        normalize_weights([-1.0, 2.0], "mean")
    with pytest.raises(ValueError, match="normalize"):
        normalize_weights(w, "softmax")


def test_perfect_weights_give_ap_one_pooled_and_per_slide():
    rng = np.random.default_rng(1)
    weights, truth = [], []
    for s in range(8):
        n = int(rng.integers(20, 400))
        y = np.zeros(n, dtype=int)
        if s % 2:
            y[rng.choice(n, size=int(rng.integers(1, n // 3)), replace=False)] = 1
        logits = np.where(y > 0, 3.0, 0.0) + 0.1 * rng.random(n)
        w = np.exp(logits) / np.exp(logits).sum()  # softmax attention: sums to 1, tiny for big bags
        weights.append(w)
        truth.append(y)
    res = patch_average_precision(weights, truth)
    assert res.pooled == 1.0 and res.slide_mean == 1.0
    assert res.num_positive_slides == 4 and np.isnan(res.per_slide[::2]).all()


def test_random_weights_give_ap_near_prevalence():
    rng = np.random.default_rng(2)
    weights = [rng.dirichlet(np.ones(2000)) for _ in range(10)]
    truth = [(rng.random(2000) < 0.1).astype(int) for _ in range(10)]
    res = patch_average_precision(weights, truth)
    assert res.prevalence == pytest.approx(0.1, abs=0.01)
    assert res.pooled == pytest.approx(res.prevalence, abs=0.015)
    assert res.slide_mean == pytest.approx(res.prevalence, abs=0.02)


def test_ap_lesion_class_and_errors():
    w = [np.array([0.5, 0.3, 0.2])]
    assert patch_average_precision(w, [np.array([2, 1, 0])], lesion_class=1).pooled == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="2 weights but 3"):
        patch_average_precision([np.array([0.5, 0.5])], [np.array([0, 1, 0])])
    with pytest.raises(ValueError, match="1 slides but truth for 2"):
        patch_average_precision(w, [np.zeros(3), np.zeros(3)])


# --------------------------------------------------------------------------------------------- FROC

# slide A: a row of 10 patches with lesions at patches 1-2 and 6-7; slide B: a negative row of 3
A_W = np.array([0.1, 0.9, 0.5, 0.2, 0.8, 0.1, 0.3, 0.3, 0.1, 0.1])
A_Y = np.array([0, 1, 1, 0, 0, 0, 1, 1, 0, 0])
B_W = np.array([0.7, 0.05, 0.05])
B_Y = np.zeros(3, dtype=int)


def test_local_maxima_with_ties_to_the_earlier_patch():
    assert np.flatnonzero(local_maxima(_row(10), A_W)).tolist() == [1, 4, 6]
    assert np.flatnonzero(local_maxima(_row(3), B_W)).tolist() == [0]
    # a plateau gives one detection, not all of its patches
    xs, ys = np.meshgrid(np.arange(4), np.arange(3))
    grid = np.c_[xs.ravel(), ys.ravel()] * 10
    assert local_maxima(grid, np.ones(12), 10).sum() == 1


def test_froc_closed_form_every_patch_a_detection():
    r = froc([A_W, B_W], [A_Y, B_Y], [_row(10), _row(3)], detection="patch", normalize="none")
    # lesion confidences: max(0.9, 0.5) = 0.9 and max(0.3, 0.3) = 0.3; false positives:
    # A: 0.1 0.2 0.8 0.1 0.1 0.1, B: 0.7 0.05 0.05 (9 in all, over 2 slides)
    np.testing.assert_allclose(r.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05])
    np.testing.assert_allclose(r.sensitivity, [0, 0.5, 0.5, 0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(r.fp_per_slide, [0, 0, 0.5, 1, 1, 1.5, 3.5, 4.5])
    # best sensitivity per FP count: (0, .5), (.5, .5), (1, 1), ...; rates 1/4 .. 8
    np.testing.assert_allclose(r.sensitivity_at, [0.5, 0.5, 1, 1, 1, 1])
    assert r.score == pytest.approx(5 / 6) and r.num_lesions == 2 and r.num_slides == 2


def test_froc_closed_form_local_maxima_and_interpolation():
    w = np.array([0.1, 0.9, 0.5, 0.2, 0.8, 0.01, 0.04, 0.04, 0.01, 0.01])  # lesion 2 is now found last
    r = froc([w, B_W], [A_Y, B_Y], [_row(10), _row(3)], normalize="none")
    # detections: A patches 1 (0.9, lesion 1), 4 (0.8, FP), 6 (0.04, lesion 2; tie with 7); B patch 0 (0.7, FP)
    np.testing.assert_allclose(r.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.04])
    np.testing.assert_allclose(r.sensitivity, [0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(r.fp_per_slide, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(r.sensitivity_at, [0.5, 0.5, 1, 1, 1, 1])
    # a third slide halves the FP rate: 2 FPs over 3 slides; interpolation between (0, .5) and (2/3, 1)
    r3 = froc([w, B_W, np.ones(2)], [A_Y, B_Y, np.zeros(2)], [_row(10), _row(3), _row(2)], normalize="none")
    # the plateau slide adds one detection (its first patch, score 1) as a false positive
    np.testing.assert_allclose(r3.fp_per_slide, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(r3.sensitivity, [0, 0, 0.5, 0.5, 0.5, 1])
    # envelope: (0, 0), (1/3, .5), (2/3, .5), (1, 1) -> at 1/4: .375, at 1/2: .5, from 1 on: 1
    np.testing.assert_allclose(r3.sensitivity_at, [0.375, 0.5, 1, 1, 1, 1])


def test_lesions_are_8_connected_components():
    coords = np.array([[0, 0], [1, 1], [3, 0], [3, 1]]) * 100
    y = np.array([1, 1, 0, 1])
    r = froc([np.array([0.9, 0.1, 0.2, 0.8])], [y], [coords], patch_size=100, detection="patch", normalize="none")
    assert r.num_lesions == 2  # the diagonal pair is one lesion


def test_perfect_weights_give_froc_one_and_random_weights_less(tmp_path):
    h5py = pytest.importorskip("h5py")
    info = make_synthetic_slides(tmp_path, preset="tiny", num_slides=16, seed=8, signal=3.0)
    feats, truth, coords = [], [], []
    for sid in info.slide_ids:
        with h5py.File(info.h5_path(sid)) as f:
            feats.append(np.asarray(f["features"], dtype=np.float64))
            truth.append(np.asarray(f["instance_labels"]))
            coords.append(np.asarray(f["coords"]))
    perfect = [np.where(y > 0, 10.0, 1.0) / np.where(y > 0, 10.0, 1.0).sum() for y in truth]
    assert froc(perfect, truth, coords).score == 1.0
    assert patch_average_precision(perfect, truth).pooled == 1.0
    # the oracle direction: softmax of the projection on the class direction localises well
    u = info.directions[0]
    oracle = [np.exp(x @ u) / np.exp(x @ u).sum() for x in feats]
    rng = np.random.default_rng(0)
    rand = [rng.dirichlet(np.ones(len(y))) for y in truth]
    ap_o, ap_r = patch_average_precision(oracle, truth), patch_average_precision(rand, truth)
    assert ap_o.slide_mean > 0.6 and ap_r.slide_mean < 0.25  # random: the within-slide lesion share
    # pooled over slides the oracle does worse: a negative slide's attention must go somewhere, and its top
    # patches compete with the lesions of positive slides
    assert ap_o.pooled > 3 * ap_r.pooled
    assert froc(oracle, truth, coords).score > froc(rand, truth, coords).score


def test_froc_errors():
    with pytest.raises(ValueError, match="no lesion"):
        froc([B_W], [B_Y], [_row(3)])
    with pytest.raises(ValueError, match="coords for 1"):
        froc([A_W, B_W], [A_Y, B_Y], [_row(10)])
    with pytest.raises(ValueError, match="detection"):
        froc([A_W], [A_Y], [_row(10)], detection="blob")
    with pytest.raises(TypeError, match="one array per slide"):
        froc(np.ones((2, 3)), np.zeros((2, 3)), [_row(3), _row(3)])
