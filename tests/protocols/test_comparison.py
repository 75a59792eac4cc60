"""compare_methods / spread_summary: equal to scipy on fixed inputs, paired over (repeat, fold), unmatched runs
reported; the tables of the reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lossattn.protocols.comparison import (
    PAIRED_TESTS,
    check_reference,
    compare_methods,
    comparison_markdown,
    comparison_metrics,
    comparison_rows,
    mean_test_train_ratio,
    result_markdown,
    spread_markdown,
    spread_summary,
)

# balanced accuracy of two methods on 2 repeats × 5 folds (same splits), plus AUC
REF_BACC = [0.80, 0.75, 0.90, 0.70, 0.85, 0.78, 0.82, 0.88, 0.74, 0.80]
NEW_BACC = [0.83, 0.79, 0.88, 0.77, 0.91, 0.80, 0.86, 0.95, 0.79, 0.81]
REF_AUC = [0.85, 0.80, 0.93, 0.75, 0.90, 0.82, 0.86, 0.90, 0.80, 0.84]
NEW_AUC = [0.86, 0.84, 0.92, 0.81, 0.93, 0.85, 0.88, 0.96, 0.83, 0.83]


def _records(with_bacc: bool = True) -> list[dict]:
    records = []
    for i in range(10):
        r, f = divmod(i, 5)
        for method, bacc, auc in (("base", REF_BACC[i], REF_AUC[i]), ("new", NEW_BACC[i], NEW_AUC[i])):
            rec = {"method": method, "repeat": r, "fold": f, "test_accuracy": bacc - 0.01, "test_auc": auc,
                   "n_train": 64, "n_val": 16, "n_test": 20}  # fmt: skip
            if with_bacc:
                rec["test_balanced_accuracy"] = bacc
            records.append(rec)
    return records


def test_wilcoxon_equals_scipy_and_the_interval_is_a_t_interval() -> None:
    c = compare_methods(_records())
    assert c["reference"] == "base" and c["metric"] == "test_balanced_accuracy" and c["test"] == "wilcoxon"
    res = c["metrics"]["test_balanced_accuracy"]["new"]
    d = np.asarray(NEW_BACC) - np.asarray(REF_BACC)
    expected = stats.wilcoxon(d)
    assert res["n"] == 10 and res["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert res["statistic"] == pytest.approx(expected.statistic)
    se = d.std(ddof=1) / math.sqrt(10)
    half = stats.t.ppf(0.975, 9) * se
    assert res["mean_diff"] == pytest.approx(d.mean()) and res["se"] == pytest.approx(se)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert (res["wins"], res["ties"], res["losses"]) == (9, 0, 1)
    auc = c["metrics"]["test_auc"]["new"]
    assert auc["p_value"] == pytest.approx(stats.wilcoxon(np.asarray(NEW_AUC) - np.asarray(REF_AUC)).pvalue)
    assert "not normal" in c["test_description"] and "not independent" in c["caveat"]


def test_paired_t_equals_scipy_ttest_rel() -> None:
    res = compare_methods(_records(), test="t")["metrics"]["test_balanced_accuracy"]["new"]
    expected = stats.ttest_rel(NEW_BACC, REF_BACC)
    assert res["p_value"] == pytest.approx(expected.pvalue, rel=1e-10)
    assert res["statistic"] == pytest.approx(expected.statistic, rel=1e-10)


def test_corrected_t_inflates_the_variance_by_the_test_train_ratio() -> None:
    records = _records()
    assert mean_test_train_ratio(records, "base") == pytest.approx(20 / 80)
    c = compare_methods(records, test="corrected-t")
    res = c["metrics"]["test_balanced_accuracy"]["new"]
    d = np.asarray(NEW_BACC) - np.asarray(REF_BACC)
    se = d.std(ddof=1) * math.sqrt(1 / 10 + 20 / 80)  # Nadeau & Bengio (2003)
    t = d.mean() / se
    assert res["se"] == pytest.approx(se) and res["statistic"] == pytest.approx(t)
    assert res["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 9))
    assert res["corrected"] and c["test_train_ratio"] == pytest.approx(0.25)
    assert "corrected test widens" in c["caveat"]


def test_accuracy_when_the_runs_have_no_balanced_accuracy() -> None:
    records = _records(with_bacc=False)
    assert comparison_metrics(records) == ["test_accuracy", "test_auc"]
    c = compare_methods(records, reference="new")
    assert c["metric"] == "test_accuracy" and "no balanced accuracy" in c["metric_note"]
    res = c["metrics"]["test_accuracy"]["base"]  # base − new
    assert res["mean_diff"] == pytest.approx(np.mean(np.asarray(REF_BACC) - np.asarray(NEW_BACC)))


def test_pairs_over_repeat_and_fold_and_reports_unmatched_runs() -> None:
    records = [r for r in _records() if not (r["method"] == "new" and (r["repeat"], r["fold"]) == (1, 4))]
    records.append({"method": "new", "repeat": 2, "fold": 0, "test_balanced_accuracy": 0.5, "test_auc": 0.5})
    records.reverse()  # order does not matter: pairing is by (repeat, fold)
    res = compare_methods(records, reference="base")["metrics"]["test_balanced_accuracy"]["new"]
    assert res["n"] == 9 and res["unmatched_method"] == [[2, 0]] and res["unmatched_reference"] == [[1, 4]]
    d = (np.asarray(NEW_BACC) - np.asarray(REF_BACC))[:9]
    assert res["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    md = "\n".join(comparison_markdown(compare_methods(records, reference="base")))
    assert "Unmatched runs" in md and "new: 2 split(s) without a partner" in md


def test_fixed_protocol_records_pair_on_repeats() -> None:
    records = [{**r, "fold": None} for r in _records() if r["fold"] == 0]
    c = compare_methods(records)
    res = c["metrics"]["test_balanced_accuracy"]["new"]
    assert res["n"] == 2 and res["pairs"] == [[0, None], [1, None]]
    assert "repeat of a fixed" in c["caveat"]


def test_bad_reference_and_test() -> None:
    with pytest.raises(ValueError, match="unknown reference method 'nope'; the methods are: base, new"):
        compare_methods(_records(), reference="nope")
    with pytest.raises(ValueError, match="unknown paired test"):
        compare_methods(_records(), test="anova")
    with pytest.raises(ValueError, match="no run records"):
        compare_methods([])
    assert check_reference(["a", "b"], None) == "a" and set(PAIRED_TESTS) == {"wilcoxon", "t", "corrected-t"}
    no_sizes = [{k: v for k, v in r.items() if not k.startswith("n_")} for r in _records()]
    with pytest.raises(ValueError, match="split sizes"):
        compare_methods(no_sizes, test="corrected-t")


def test_single_method_has_no_comparison_rows() -> None:
    c = compare_methods([r for r in _records() if r["method"] == "base"])
    assert c["metrics"]["test_balanced_accuracy"] == {} and comparison_markdown(c) == []


def test_spread_summary_separates_folds_from_repeats() -> None:
    s = spread_summary(_records())["test_balanced_accuracy"]["base"]
    first, second = np.asarray(REF_BACC[:5]), np.asarray(REF_BACC[5:])
    assert s["fold_spread"] == pytest.approx((first.std(ddof=1) + second.std(ddof=1)) / 2)
    assert s["repeat_spread"] == pytest.approx(np.std([first.mean(), second.mean()], ddof=1))
    assert s["overall_std"] == pytest.approx(np.std(REF_BACC, ddof=1)) and s["n_repeats"] == 2


def test_tables() -> None:
    records = _records()
    c = compare_methods(records)
    headers, rows = comparison_rows(c)
    assert headers[1] == "method − base" and headers[-1] == "p (Wilcoxon)" and headers[5] == "95% CI"
    d = np.asarray(NEW_BACC) - np.asarray(REF_BACC)
    assert rows[0][:4] == ["balanced accuracy", "new", "10", f"{d.mean():+.3f}"] and rows[0][6] == "9/0/1"
    assert rows[1][0] == "AUC"
    md = result_markdown({"comparison": c, "spread": spread_summary(records)}, " — X")
    text = "\n".join(md)
    assert "## Paired comparison with base — X" in text and "## Spread: folds versus repeats — X" in text
    assert "| balanced accuracy | new | 10 |" in text and "Demšar" in text
    assert spread_markdown({}) == []
