"""Paired comparisons of methods run on the same splits, and the spread of their scores — for every report.

Methods of one experiment are trained on identical splits (same bags, same folds, same repeats; see
:func:`~lossattn.protocols.runs.run_seed`), so they are compared through their *paired* differences, not
through two separate mean ± std. :func:`compare_methods` pairs every method with a reference method over the
``(repeat, fold)`` splits both ran on (:func:`lossattn.stats.compare_to_reference`) and gives, per metric, the
mean difference, its standard error, a 95 % confidence interval, wins/ties/losses and a paired-test p-value;
:func:`spread_summary` separates fold-to-fold from repeat-to-repeat spread
(:func:`lossattn.stats.spread_components`). ``lossattn cv`` and every ``lossattn reproduce`` report use these
two and the table helpers below (:func:`comparison_rows`, :func:`comparison_markdown`, :func:`spread_markdown`).

The metric: balanced accuracy where the runs have it (accuracy rewards predicting the majority class on
imbalanced data), else accuracy — the result says which — and ROC AUC where the runs have it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lossattn.stats import compare_to_reference, spread_components

__all__ = [
    "PAIRED_TESTS",
    "TEST_DESCRIPTIONS",
    "check_reference",
    "compare_methods",
    "comparison_markdown",
    "comparison_notes",
    "comparison_metrics",
    "comparison_rows",
    "markdown_table",
    "result_markdown",
    "spread_markdown",
    "spread_rows",
    "spread_summary",
    "mean_test_train_ratio",
]

#: the paired tests ``--paired-test`` offers
PAIRED_TESTS = ("wilcoxon", "t", "corrected-t")

#: what each test is and why (written into every report)
TEST_DESCRIPTIONS = {
    "wilcoxon": (
        "Wilcoxon signed-rank test on the paired differences (two-sided, tied pairs dropped): the differences over "
        "CV folds or repeats are few and not normal (bounded scores, ties, outlying folds), and the signed-rank test "
        "only needs them to be symmetric (Demšar, JMLR 2006)"
    ),
    "t": "paired t-test on the differences (two-sided; it assumes they are normal)",
    "corrected-t": (
        "corrected resampled t-test (Nadeau & Bengio, Machine Learning 2003): the variance of the mean difference "
        "is inflated from s²/n to (1/n + n_test/n_train)·s² because the splits' training sets overlap; "
        "n_test/n_train is the mean over the reference method's runs of test bags / (training + validation bags)"
    ),
}

_CAVEAT_FOLDS = (
    "Folds are not independent (their training sets overlap), so the Wilcoxon and plain t p-values are "
    "optimistic (too small; Dietterich, Neural Computation 1998); `--paired-test corrected-t` gives the "
    "Nadeau–Bengio corrected resampled t-test."
)
_CAVEAT_REPEATS = (
    "Each pair is one repeat of a fixed train/test protocol; repeats share the data source (a data file: the same "
    "test bags), so the p-values describe how the methods differ across seeds on this data, not across new data."
)

_CAVEAT_CORRECTED = (
    "Folds are not independent (their training sets overlap); the corrected test widens the standard error and "
    "the interval for it, where the plain Wilcoxon and t p-values would be optimistic (Dietterich, Neural "
    "Computation 1998)."
)


def _caveat(records: Sequence[dict[str, Any]], test: str) -> str:
    if not any(r.get("fold") is not None for r in records):
        return _CAVEAT_REPEATS
    return _CAVEAT_CORRECTED if test == "corrected-t" else _CAVEAT_FOLDS


#: record field -> name in reports, in the order they are compared
_METRIC_NAMES = {
    "test_balanced_accuracy": "balanced accuracy",
    "test_accuracy": "accuracy",
    "test_auc": "AUC",
}


def _has(records: Iterable[dict[str, Any]], key: str) -> bool:
    return any(_finite(r.get(key)) for r in records)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def comparison_metrics(records: Sequence[dict[str, Any]]) -> list[str]:
    """The record fields compared: ``test_balanced_accuracy`` where any run has it, else ``test_accuracy``;
    then ``test_auc`` where any run has it. Empty when the runs have neither accuracy."""
    keys = []
    if _has(records, "test_balanced_accuracy"):
        keys.append("test_balanced_accuracy")
    elif _has(records, "test_accuracy"):
        keys.append("test_accuracy")
    if _has(records, "test_auc"):
        keys.append("test_auc")
    return keys


def check_reference(methods: Iterable[str], reference: str | None) -> str:
    """The reference method: ``reference`` when it is one of ``methods``, the first method when None.

    Raises:
        ValueError: ``reference`` is not among ``methods``, or there are no methods.
    """
    names = list(dict.fromkeys(methods))
    if not names:
        raise ValueError("no methods to compare")
    if reference is None:
        return names[0]
    if reference not in names:
        raise ValueError(f"unknown reference method {reference!r}; the methods are: {', '.join(names)}")
    return reference


def mean_test_train_ratio(records: Sequence[dict[str, Any]], reference: str) -> float | None:
    """Mean over the reference's runs of ``n_test / (n_train + n_val)`` (the bags a split trained on), or None."""
    ratios = []
    for r in records:
        if r.get("method") != reference:
            continue
        n_test, n_train = r.get("n_test"), (r.get("n_train") or 0) + (r.get("n_val") or 0)
        if n_test and n_train:
            ratios.append(float(n_test) / float(n_train))
    return float(np.mean(ratios)) if ratios else None


def compare_methods(
    records: Sequence[dict[str, Any]],
    reference: str | None = None,
    test: str = "wilcoxon",
    pair_on: Sequence[str] = ("repeat", "fold"),
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Every method against the reference over the splits both ran on, for each metric of :func:`comparison_metrics`.

    Per metric and method (``diff = method − reference``, pairs matched on ``pair_on``): ``n`` pairs, the mean
    difference, its standard error (corrected for ``test="corrected-t"``), the ``confidence`` t-interval,
    wins/ties/losses, the test's statistic and p-value, and the splits left unmatched (see
    :func:`lossattn.stats.paired_comparison`).

    Args:
        records: Run records (``method``, the ``pair_on`` fields, ``test_*`` metrics, ``n_train``/``n_val``/``n_test``).
        reference: The method compared against (default: the first method of the records).
        test: One of :data:`PAIRED_TESTS`.
        pair_on: The fields naming a split.
        confidence: Level of the intervals.

    Returns:
        ``{"reference", "methods", "test", "test_description", "caveat", "pair_on", "confidence",
        "test_train_ratio", "metric", "metric_note", "metrics": {field: {method: result}}}``; ``metric`` is the
        primary field (balanced accuracy or accuracy).

    Raises:
        ValueError: No records, an unknown test or reference, or a corrected test without split sizes.
    """
    if not records:
        raise ValueError("no run records to compare")
    if test not in PAIRED_TESTS:
        raise ValueError(f"unknown paired test {test!r}; valid tests: {', '.join(PAIRED_TESTS)}")
    methods = list(dict.fromkeys(r["method"] for r in records))
    ref = check_reference(methods, reference)
    ratio = mean_test_train_ratio(records, ref)
    keys = comparison_metrics(records)
    options: dict[str, Any] = {"test": "wilcoxon" if test == "wilcoxon" else "t", "confidence": confidence}
    if test == "corrected-t" and keys and len(methods) > 1:
        if ratio is None:
            raise ValueError(
                f"the corrected t-test needs the split sizes (n_test, n_train) in the records of {ref!r}; use "
                "test='wilcoxon' or 't'"
            )
        options.update(corrected=True, test_train_ratio=ratio)
    metrics: dict[str, dict[str, Any]] = {}
    for key in keys:
        usable = [r for r in records if key in r]
        metrics[key] = (
            compare_to_reference(usable, ref, key=key, pair_on=pair_on, **options) if len(methods) > 1 else {}
        )
    primary = keys[0] if keys else None
    if primary == "test_balanced_accuracy":
        note = "balanced accuracy (mean recall of the classes; the runs record it)"
    elif primary == "test_accuracy":
        note = "accuracy (these runs record no balanced accuracy)"
    else:
        note = "no accuracy in the records"
    return {
        "reference": ref,
        "methods": methods,
        "test": test,
        "test_description": TEST_DESCRIPTIONS[test],
        "caveat": _caveat(records, test),
        "pair_on": list(pair_on),
        "confidence": confidence,
        "test_train_ratio": ratio,
        "metric": primary,
        "metric_note": note,
        "metrics": metrics,
    }


def spread_summary(records: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Fold-to-fold versus repeat-to-repeat spread per metric and method (sample std, ddof=1).

    Returns:
        ``{field: {method: spread_components(...)[method]}}`` for each field of ``keys`` (default
        :func:`comparison_metrics`); see :func:`lossattn.stats.spread_components`.
    """
    keys = comparison_metrics(records) if keys is None else list(keys)
    return {key: spread_components([r for r in records if key in r], key) for key in keys if _has(records, key)}


def _p(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def comparison_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a comparison table: one row per (metric, method), differences method − reference."""
    level = int(round(100 * comparison["confidence"]))
    test = {"wilcoxon": "Wilcoxon", "t": "paired t", "corrected-t": "corrected t"}[comparison["test"]]
    headers = ["metric", "method − " + comparison["reference"], "pairs", "mean diff", "SE", f"{level}% CI", "W/T/L",
               f"p ({test})"]  # fmt: skip
    rows = []
    for key, by_method in comparison["metrics"].items():
        for method, c in by_method.items():
            ci = f"[{_num(c['ci_low'], True)}, {_num(c['ci_high'], True)}]" if math.isfinite(c["ci_low"]) else "–"
            rows.append(
                [
                    _METRIC_NAMES.get(key, key),
                    method,
                    str(c["n"]),
                    _num(c["mean_diff"], True),
                    _num(c["se"]),
                    ci,
                    f"{c['wins']}/{c['ties']}/{c['losses']}",
                    _p(c["p_value"]),
                ]
            )
    return headers, rows


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows
    ]


def comparison_notes(comparison: dict[str, Any]) -> list[str]:
    """The sentences under a comparison table: what is compared, the test and why, the caveat, unmatched splits."""
    pair_on = ", ".join(comparison["pair_on"])
    notes = [
        f"Paired differences method − {comparison['reference']} over identical splits ({pair_on}); metric: "
        f"{comparison['metric_note']}, and AUC where recorded. SE: standard error of the mean difference; CI: "
        f"t-interval; W/T/L: splits where the method wins / ties / loses. Test: {comparison['test_description']}.",
        comparison["caveat"],
    ]
    unmatched = [
        f"{m}: {c['n_unmatched']} split(s) without a partner"
        for by_method in comparison["metrics"].values()
        for m, c in by_method.items()
        if c["n_unmatched"]
    ]
    if unmatched:
        notes.append("Unmatched runs (left out of the pairs): " + "; ".join(dict.fromkeys(unmatched)) + ".")
    return notes


def comparison_markdown(comparison: dict[str, Any], heading: str | None = None) -> list[str]:
    """Markdown lines of a comparison: an optional heading, the table, the notes (empty for a single method)."""
    headers, rows = comparison_rows(comparison)
    if not rows:
        return []
    lines = [heading, ""] if heading else []
    return lines + markdown_table(headers, rows) + [""] + comparison_notes(comparison) + [""]


def spread_rows(spread: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a spread table: per (metric, method) the mean, fold-to-fold, repeat-to-repeat and
    overall std."""
    headers = ["metric", "method", "runs", "mean", "fold-to-fold sd", "repeat-to-repeat sd", "overall sd"]
    rows = []
    for key, by_method in spread.items():
        for method, s in by_method.items():
            rows.append(
                [_METRIC_NAMES.get(key, key), method, str(s["n_runs"]), _num(s["mean"]), _num(s["fold_spread"]),
                 _num(s["repeat_spread"]), _num(s["overall_std"])]
            )  # fmt: skip
    return headers, rows


def spread_markdown(spread: dict[str, Any], heading: str | None = None) -> list[str]:
    """Markdown lines of a :func:`spread_summary`: the table and what its columns are."""
    headers, rows = spread_rows(spread)
    if not rows:
        return []
    lines = [heading, ""] if heading else []
    return (
        lines
        + markdown_table(headers, rows)
        + [
            "",
            "Spread of the test scores (sample std, ddof=1): fold-to-fold = std over the folds of one repeat, averaged "
            "over repeats (what a different test fold changes); repeat-to-repeat = std of the repeat means (what a new "
            "seed — new folds, initialisation and batches — changes in the figure reported); overall = std over all runs.",
            "",
        ]
    )


def result_markdown(result: dict[str, Any], where: str = "", level: str = "##") -> list[str]:
    """The comparison and spread sections of one experiment result (:func:`~lossattn.protocols.run_experiment`).

    Args:
        result: A dict with ``comparison`` and/or ``spread`` (sections it lacks are left out).
        where: Appended to the headings, e.g. ``" — MUSK1"``.
        level: Markdown heading level of the sections.
    """
    lines: list[str] = []
    comparison = result.get("comparison")
    if comparison:
        lines += comparison_markdown(comparison, f"{level} Paired comparison with {comparison['reference']}{where}")
    if result.get("spread"):
        lines += spread_markdown(result["spread"], f"{level} Spread: folds versus repeats{where}")
    return lines
