"""lossattn.stats: equality with scipy, closed forms, edge cases, pairing of run records, spread components."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from lossattn.stats import compare_to_reference, paired_comparison, spread_components

A = np.array([0.80, 0.70, 0.90, 0.85, 0.60, 0.75, 0.95, 0.70, 0.66, 0.81])
B = np.array([0.75, 0.72, 0.80, 0.85, 0.50, 0.70, 0.90, 0.71, 0.61, 0.70])


def test_t_test_equals_scipy_ttest_rel() -> None:
    r = paired_comparison(A, B, test="t")
    ref = st.ttest_rel(A, B)
    assert r["statistic"] == pytest.approx(float(ref.statistic), rel=1e-12)
    assert r["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(float(ci.low)), pytest.approx(float(ci.high)))
    d = A - B
    half = st.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert r["ci_high"] - r["mean_diff"] == pytest.approx(half, rel=1e-12)
    assert r["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(d.size), rel=1e-12)
    assert r["n"] == 10 and r["mean_a"] == pytest.approx(A.mean()) and r["mean_b"] == pytest.approx(B.mean())


def test_wilcoxon_equals_scipy_and_drops_the_tie() -> None:
    r = paired_comparison(A, B)  # default test
    ref = st.wilcoxon(A, B)  # scipy's default drops the zero difference (pair 3) too
    assert r["test"] == "wilcoxon"
    assert r["statistic"] == pytest.approx(float(ref.statistic))
    assert r["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-12)
    assert (r["wins"], r["ties"], r["losses"]) == (7, 1, 2)
    assert "tied" in r["note"]


def test_wilcoxon_without_ties_matches_exact_closed_form() -> None:
    # all 6 differences positive: W- = 0, exact two-sided p = 2 / 2^6
    r = paired_comparison([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1])
    assert r["statistic"] == 0.0
    assert r["p_value"] == pytest.approx(2 / 2**6)
    assert (r["wins"], r["ties"], r["losses"]) == (6, 0, 0)


def test_confidence_level_changes_the_t_quantile() -> None:
    r = paired_comparison(A, B, test="t", confidence=0.9)
    half = st.t.ppf(0.95, 9) * (A - B).std(ddof=1) / math.sqrt(10)
    assert r["ci_high"] - r["ci_low"] == pytest.approx(2 * half, rel=1e-12)


def test_corrected_resampled_t_test_closed_form() -> None:
    d = A - B
    ratio = 1 / 9  # 10-fold CV: n_test / n_train
    r = paired_comparison(A, B, test="t", corrected=True, test_train_ratio=ratio)
    se = d.std(ddof=1) * math.sqrt(1 / d.size + ratio)
    t = d.mean() / se
    assert r["se"] == pytest.approx(se, rel=1e-12)
    assert r["statistic"] == pytest.approx(t, rel=1e-12)
    assert r["p_value"] == pytest.approx(2 * st.t.sf(abs(t), d.size - 1), rel=1e-12)
    assert r["ci_high"] - r["mean_diff"] == pytest.approx(st.t.ppf(0.975, d.size - 1) * se, rel=1e-12)
    plain = paired_comparison(A, B, test="t")
    assert r["p_value"] > plain["p_value"]  # the correction is conservative


def test_constant_nonzero_differences() -> None:
    r = paired_comparison([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], test="t")
    assert r["mean_diff"] == 1.0 and r["sd_diff"] == 0.0 and r["se"] == 0.0
    assert (r["ci_low"], r["ci_high"]) == (1.0, 1.0)
    assert r["statistic"] == math.inf and r["p_value"] == 0.0
    w = paired_comparison([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert w["p_value"] == pytest.approx(float(st.wilcoxon([1.0, 1.0, 1.0]).pvalue))


@pytest.mark.parametrize("test", ["wilcoxon", "t"])
def test_all_ties(test: str) -> None:
    r = paired_comparison([0.5, 0.6, 0.7], [0.5, 0.6, 0.7 + 1e-15], test=test)
    assert r["ties"] == 3 and r["wins"] == r["losses"] == 0
    assert r["mean_diff"] == 0.0 and r["se"] == 0.0 and (r["ci_low"], r["ci_high"]) == (0.0, 0.0)
    assert r["p_value"] == 1.0 and "tied" in r["note"]


def test_nan_pairs_are_dropped_and_counted() -> None:
    a = list(A) + [float("nan"), 0.5]
    b = list(B) + [0.4, None]
    r = paired_comparison(a, b, test="t")
    assert r["n"] == 10 and r["n_nan"] == 2
    assert r["p_value"] == pytest.approx(float(st.ttest_rel(A, B).pvalue))


def test_fewer_than_two_pairs() -> None:
    one = paired_comparison([0.9], [0.7])
    assert one["n"] == 1 and one["mean_diff"] == pytest.approx(0.2)
    assert all(math.isnan(one[k]) for k in ("se", "ci_low", "ci_high", "p_value"))
    none = paired_comparison([float("nan")], [0.7])
    assert none["n"] == 0 and none["n_nan"] == 1 and math.isnan(none["mean_diff"]) and math.isnan(none["p_value"])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"test": "sign"}, "test"),
        ({"corrected": True}, "test='t'"),
        ({"test": "t", "corrected": True}, "test_train_ratio"),
        ({"test": "t", "corrected": True, "test_train_ratio": -1}, "test_train_ratio"),
        ({"confidence": 1.5}, "confidence"),
        ({"tol": -1}, "tol"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        paired_comparison(A, B, **kwargs)


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([1, 2, 3], [1, 2])


def _records() -> list[dict]:
    rows = []
    ref = {(0, 0): 0.70, (0, 1): 0.72, (0, 2): 0.68, (1, 0): 0.71, (1, 1): 0.69, (1, 2): 0.74}
    la = {(0, 0): 0.75, (0, 1): 0.74, (0, 2): 0.70, (1, 0): 0.73, (1, 1): 0.69, (1, 2): 0.80, (2, 0): 0.9}
    for (rep, fold), v in ref.items():
        rows.append({"method": "attention", "repeat": rep, "fold": fold, "test_accuracy": v})
    for (rep, fold), v in la.items():
        rows.append({"method": "loss_attention", "repeat": rep, "fold": fold, "test_accuracy": v})
    rows.append({"method": "mean_pool", "repeat": 0, "fold": 0, "test_accuracy": 0.6})
    rows.append({"method": "mean_pool", "repeat": 5, "fold": 5, "test_accuracy": 0.6})
    return rows, ref, la


def test_compare_to_reference_pairs_identical_splits_and_reports_unmatched() -> None:
    rows, ref, la = _records()
    out = compare_to_reference(rows, "attention", test="t")
    assert set(out) == {"loss_attention", "mean_pool"}
    r = out["loss_attention"]
    keys = sorted(ref)
    d = np.array([la[k] - ref[k] for k in keys])
    assert r["n"] == 6 and r["pairs"] == [list(k) for k in keys]
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert r["p_value"] == pytest.approx(float(st.ttest_rel([la[k] for k in keys], [ref[k] for k in keys]).pvalue))
    assert r["unmatched_method"] == [[2, 0]] and r["unmatched_reference"] == [] and r["n_unmatched"] == 1
    assert r["reference"] == "attention" and r["key"] == "test_accuracy"
    m = out["mean_pool"]
    assert m["n"] == 1 and m["unmatched_method"] == [[5, 5]]
    assert len(m["unmatched_reference"]) == 5 and m["n_unmatched"] == 6


def test_compare_to_reference_errors() -> None:
    rows, _, _ = _records()
    with pytest.raises(ValueError, match="reference method 'gated'"):
        compare_to_reference(rows, "gated")
    with pytest.raises(ValueError, match="two records"):
        compare_to_reference(rows + [dict(rows[0])], "attention")
    with pytest.raises(ValueError, match="test_auc"):
        compare_to_reference(rows, "attention", key="test_auc")
    with pytest.raises(ValueError, match="pairing field"):
        compare_to_reference([{"method": "x", "repeat": 0, "test_accuracy": 1.0}], "x")
    with pytest.raises(ValueError, match="empty"):
        compare_to_reference([], "x")


def test_compare_to_reference_with_a_single_pairing_field() -> None:
    rows = [
        {"method": m, "seed": s, "auc": v} for m, s, v in [("a", 0, 0.5), ("a", 1, 0.6), ("b", 0, 0.7), ("b", 1, 0.9)]
    ]
    out = compare_to_reference(rows, "a", key="auc", pair_on=("seed",))
    assert out["b"]["mean_diff"] == pytest.approx(0.25) and out["b"]["wins"] == 2


def test_spread_components_known_answers() -> None:
    # method x: repeat 0 folds (1, 3), repeat 1 folds (5, 7): within-repeat std sqrt(2) each, repeat means 2, 6
    rows = [
        {"method": "x", "repeat": r, "fold": f, "acc": v} for r, f, v in [(0, 0, 1), (0, 1, 3), (1, 0, 5), (1, 1, 7)]
    ]
    # method y: the same spread inside repeats, identical repeat means -> no repeat-to-repeat spread
    rows += [
        {"method": "y", "repeat": r, "fold": f, "acc": v} for r, f, v in [(0, 0, 1), (0, 1, 3), (1, 0, 3), (1, 1, 1)]
    ]
    rows.append({"method": "y", "repeat": 2, "fold": 0, "acc": None})
    out = spread_components(rows, "acc")
    assert out["x"]["fold_spread"] == pytest.approx(math.sqrt(2))
    assert out["x"]["repeat_spread"] == pytest.approx(math.sqrt(8))  # std(2, 6), ddof=1
    assert out["x"]["mean"] == pytest.approx(4.0) and out["x"]["n_repeats"] == 2
    assert out["x"]["overall_std"] == pytest.approx(np.std([1, 3, 5, 7], ddof=1))
    assert out["y"]["fold_spread"] == pytest.approx(math.sqrt(2)) and out["y"]["repeat_spread"] == 0.0
    assert out["y"]["n_nan"] == 1 and out["y"]["n_runs"] == 4 and out["y"]["folds_per_repeat"] == {0: 2, 1: 2}
    pop = spread_components(rows, "acc", ddof=0)
    assert pop["x"]["fold_spread"] == pytest.approx(1.0) and pop["x"]["repeat_spread"] == pytest.approx(2.0)


def test_spread_components_single_repeat_and_errors() -> None:
    rows = [{"method": "x", "repeat": 0, "acc": v} for v in (0.1, 0.3)]
    out = spread_components(rows, "acc")
    assert out["x"]["fold_spread"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert math.isnan(out["x"]["repeat_spread"])
    with pytest.raises(ValueError, match="'acc'"):
        spread_components([{"method": "x", "repeat": 0}], "acc")
    with pytest.raises(ValueError, match="ddof"):
        spread_components(rows, "acc", ddof=-1)
    with pytest.raises(ValueError, match="empty"):
        spread_components([], "acc")
