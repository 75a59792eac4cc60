"""Paired statistics for comparing methods run on the same splits (numpy / scipy only).

Two methods evaluated on the same cross-validation folds (or the same repeated fixed splits) give *paired*
scores; their differences, not the two separate mean ± std, carry the comparison.

* :func:`paired_comparison` -- mean difference, its standard error and t-interval, wins/ties/losses and a
  paired test. The default test is the Wilcoxon signed-rank test: fold differences are few (10-50) and
  rarely normal (bounded accuracies, ties, outlying folds), and the signed-rank test needs only symmetry
  of the differences (Demšar, *Statistical Comparisons of Classifiers over Multiple Data Sets*, JMLR 2006).
  The paired t-test is available (``test="t"``). Caveat: CV folds are not independent -- their training sets
  overlap -- so both tests are optimistic (too small p-values; Dietterich, Neural Computation 1998).
  ``corrected=True`` gives the corrected resampled t-test of Nadeau & Bengio (*Inference for the
  Generalization Error*, Machine Learning 52, 2003), which inflates the variance of the mean difference from
  ``s²/n`` to ``(1/n + n_test/n_train)·s²``.
* :func:`compare_to_reference` -- pairs run records of every method with a reference method over identical
  ``(repeat, fold)`` keys; runs without a partner are reported, never silently dropped.
* :func:`spread_components` -- fold-to-fold spread (within a repeat) versus repeat-to-repeat spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = ["paired_comparison", "compare_to_reference", "spread_components"]

_TESTS = ("wilcoxon", "t")


def _as_float_array(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a sequence of numbers (None/NaN allowed), got {values!r}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    test: str = "wilcoxon",
    corrected: bool = False,
    test_train_ratio: float | None = None,
    confidence: float = 0.95,
    tol: float = 1e-12,
) -> dict[str, Any]:
    """Compare paired scores ``a[i]`` and ``b[i]`` (same split ``i``) through their differences ``d = a - b``.

    * ``mean_diff = mean(d)``, ``sd_diff`` = sample standard deviation (ddof=1), ``se = sd_diff / sqrt(n)``
      -- with ``corrected=True``, ``se = sd_diff · sqrt(1/n + test_train_ratio)`` (Nadeau & Bengio 2003);
    * confidence interval ``mean_diff ± t_{n-1}((1 + confidence)/2) · se`` (t distribution, n - 1 dof);
    * ``wins`` / ``ties`` / ``losses``: pairs with ``d > tol`` / ``|d| <= tol`` / ``d < -tol``;
    * ``p_value`` (two-sided): ``"wilcoxon"`` = ``scipy.stats.wilcoxon(d)`` after setting ``|d| <= tol`` to 0
      (zero differences dropped, scipy's default ``zero_method="wilcox"``); ``"t"`` = the paired t-test
      ``t = mean_diff / se``, ``p = 2·T_{n-1}(-|t|)`` (= ``scipy.stats.ttest_rel`` when not corrected).

    Edge cases (``note`` says which applied):

    * pairs with a NaN/None on either side are dropped and counted in ``n_nan``;
    * ``n == 0``: every statistic is NaN; ``n == 1``: ``mean_diff`` is the one difference, the rest NaN;
    * all pairs tied: ``mean_diff = se = 0``, the interval is ``[0, 0]`` and ``p_value = 1.0`` (no evidence of
      a difference);
    * differences constant but non-zero (zero spread): ``se = 0``, the interval is the point, the t-test gives
      ``statistic = ±inf`` and ``p_value = 0.0``; the Wilcoxon test its exact/normal p-value as usual.

    Args:
        a: Scores of the method of interest, one per split.
        b: Scores of the method compared against, same order.
        test: ``"wilcoxon"`` (default) or ``"t"``.
        corrected: Corrected resampled t-test (requires ``test="t"`` and ``test_train_ratio``).
        test_train_ratio: ``n_test / n_train`` of one split (e.g. 1/9 for 10-fold CV); used when ``corrected``.
        confidence: Level of the interval, in (0, 1).
        tol: Differences with ``|d| <= tol`` count as ties.

    Returns:
        dict with ``n, n_nan, mean_a, mean_b, mean_diff, sd_diff, se, ci_low, ci_high, confidence, wins,
        ties, losses, test, corrected, test_train_ratio, statistic, p_value, note``.

    Raises:
        ValueError: Different lengths, an unknown test, ``corrected`` without ``test="t"`` or without a
            positive ``test_train_ratio``, ``confidence`` outside (0, 1), a negative ``tol``.
    """
    x = _as_float_array(a, "a")
    y = _as_float_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same length (one score per split), got {x.size} and {y.size}")
    if test not in _TESTS:
        raise ValueError(f"test must be one of {_TESTS}, got {test!r}")
    if corrected:
        if test != "t":
            raise ValueError("corrected=True is the corrected resampled t-test: pass test='t'")
        if test_train_ratio is None or not (float(test_train_ratio) > 0 and math.isfinite(float(test_train_ratio))):
            raise ValueError(
                f"corrected=True needs test_train_ratio = n_test / n_train > 0 (e.g. 1/9 for 10-fold CV), "
                f"got {test_train_ratio!r}"
            )
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not float(tol) >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    n = int(d.size)
    nan = float("nan")
    out: dict[str, Any] = {
        "n": n,
        "n_nan": int((~keep).sum()),
        "mean_a": float(x.mean()) if n else nan,
        "mean_b": float(y.mean()) if n else nan,
        "mean_diff": float(d.mean()) if n else nan,
        "sd_diff": nan,
        "se": nan,
        "ci_low": nan,
        "ci_high": nan,
        "confidence": float(confidence),
        "wins": int((d > tol).sum()),
        "ties": int((np.abs(d) <= tol).sum()),
        "losses": int((d < -tol).sum()),
        "test": test,
        "corrected": bool(corrected),
        "test_train_ratio": None if test_train_ratio is None else float(test_train_ratio),
        "statistic": nan,
        "p_value": nan,
        "note": "",
    }
    if n == 0:
        out["note"] = "no complete pairs"
        return out
    if n == 1:
        out["note"] = "one pair: no spread, no interval, no test"
        return out
    if out["ties"] == n:
        out.update(mean_diff=0.0, sd_diff=0.0, se=0.0, ci_low=0.0, ci_high=0.0, p_value=1.0)
        out["note"] = "all pairs tied: no evidence of a difference"
        return out
    sd = float(d.std(ddof=1))
    inflation = (1.0 / n + float(test_train_ratio)) if corrected else 1.0 / n  # Nadeau & Bengio (2003)
    se = sd * math.sqrt(inflation)
    half = float(_st.t.ppf(0.5 + float(confidence) / 2.0, n - 1)) * se
    out.update(sd_diff=sd, se=se, ci_low=out["mean_diff"] - half, ci_high=out["mean_diff"] + half)
    if test == "t":
        if se == 0.0:
            out["statistic"] = math.copysign(math.inf, out["mean_diff"])
            out["p_value"] = 0.0
            out["note"] = "differences constant (zero spread): t is infinite"
        else:
            t = out["mean_diff"] / se
            out["statistic"] = t
            out["p_value"] = float(2.0 * _st.t.sf(abs(t), n - 1))
    else:
        dz = np.where(np.abs(d) <= tol, 0.0, d)
        res = _st.wilcoxon(dz)
        out["statistic"] = float(res.statistic)
        out["p_value"] = float(res.pvalue)
        if out["ties"]:
            out["note"] = f"{out['ties']} tied pair(s) dropped by the signed-rank test"
    return out


def _key_of(record: dict[str, Any], pair_on: Sequence[str], index: int) -> tuple:
    missing = [k for k in pair_on if k not in record]
    if missing:
        raise ValueError(f"record {index} ({record.get('method', '?')}) lacks the pairing field(s) {missing}")
    return tuple(record[k] for k in pair_on)


def _sort_keys(keys: Iterable[tuple]) -> list[tuple]:
    try:
        return sorted(keys)
    except TypeError:  # mixed types: a stable, readable order
        return sorted(keys, key=repr)


def compare_to_reference(
    records: Sequence[dict[str, Any]],
    reference: str,
    key: str = "test_accuracy",
    pair_on: Sequence[str] = ("repeat", "fold"),
    **comparison: Any,
) -> dict[str, dict[str, Any]]:
    """Pair every method's runs with the reference method's runs on identical ``pair_on`` keys.

    Args:
        records: Run records, dicts with ``"method"``, the ``pair_on`` fields and ``key`` (None/NaN allowed:
            such pairs are dropped by :func:`paired_comparison` and counted in ``n_nan``).
        reference: The method everything is compared against (``diff = method - reference``).
        key: The score compared.
        pair_on: Fields identifying a split (default ``("repeat", "fold")``).
        **comparison: Passed to :func:`paired_comparison` (``test``, ``corrected``, ``test_train_ratio``...).

    Returns:
        ``{method: paired_comparison(...) + {"reference", "key", "pair_on", "pairs", "unmatched_method",
        "unmatched_reference", "n_unmatched"}}`` for every method but the reference; ``pairs`` lists the
        matched keys, ``unmatched_method`` the keys of runs of the method with no reference run and
        ``unmatched_reference`` the reverse.

    Raises:
        ValueError: No records, a record without ``method``/``key``/a pairing field, two runs of one method
            on the same key, or a reference absent from the records.
    """
    pair_on = tuple(pair_on)
    if not pair_on:
        raise ValueError("pair_on must name at least one field, e.g. ('repeat', 'fold')")
    if not records:
        raise ValueError("records is empty")
    by_method: dict[str, dict[tuple, Any]] = {}
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "method" not in r:
            raise ValueError(f"record {i} must be a dict with a 'method' field, got {r!r}")
        if key not in r:
            raise ValueError(f"record {i} ({r['method']}) has no {key!r} field")
        k = _key_of(r, pair_on, i)
        runs = by_method.setdefault(r["method"], {})
        if k in runs:
            raise ValueError(
                f"method {r['method']!r} has two records for {dict(zip(pair_on, k, strict=True))}; pairing is ambiguous"
            )
        runs[k] = r[key]
    if reference not in by_method:
        raise ValueError(
            f"reference method {reference!r} is not in the records; methods: {', '.join(map(str, by_method))}"
        )
    ref = by_method[reference]
    out: dict[str, dict[str, Any]] = {}
    for method, runs in by_method.items():
        if method == reference:
            continue
        common = _sort_keys(set(runs) & set(ref))
        result = paired_comparison([runs[k] for k in common], [ref[k] for k in common], **comparison)
        only_m = _sort_keys(set(runs) - set(ref))
        only_r = _sort_keys(set(ref) - set(runs))
        result.update(
            reference=reference,
            key=key,
            pair_on=list(pair_on),
            pairs=[list(k) for k in common],
            unmatched_method=[list(k) for k in only_m],
            unmatched_reference=[list(k) for k in only_r],
            n_unmatched=len(only_m) + len(only_r),
        )
        out[method] = result
    return out


def spread_components(
    records: Sequence[dict[str, Any]],
    key: str,
    *,
    repeat_key: str = "repeat",
    ddof: int = 1,
) -> dict[str, dict[str, Any]]:
    """Separate fold-to-fold spread from repeat-to-repeat spread of one score, per method.

    For each method, with ``v_rf`` the score of fold ``f`` in repeat ``r``:

    * ``fold_spread = mean_r std_f(v_rf)`` -- the spread of folds within a repeat, averaged over the repeats
      that have more than ``ddof`` folds;
    * ``repeat_spread = std_r(mean_f v_rf)`` -- the spread of the repeat means (NaN with ``<= ddof`` repeats);
    * ``overall_std = std(v)`` over all runs, ``mean``, ``n_runs``, ``n_nan`` (runs whose score is None/NaN,
      left out), ``n_repeats`` and ``folds_per_repeat``.

    Args:
        records: Run records with ``"method"``, ``repeat_key`` and ``key``.
        key: The score.
        repeat_key: Field naming the repeat.
        ddof: Delta degrees of freedom of every std (1 = sample std).

    Raises:
        ValueError: No records, a record without ``method``/``repeat_key``/``key``, a negative ``ddof``.
    """
    if not records:
        raise ValueError("records is empty")
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        raise ValueError(f"ddof must be an integer >= 0, got {ddof!r}")
    groups: dict[str, dict[Any, list[float]]] = {}
    nans: dict[str, int] = {}
    for i, r in enumerate(records):
        for field in ("method", repeat_key, key):
            if not isinstance(r, dict) or field not in r:
                raise ValueError(f"record {i} has no {field!r} field: {r!r}")
        method = r["method"]
        v = r[key]
        v = float("nan") if v is None else float(v)
        groups.setdefault(method, {})
        nans[method] = nans.get(method, 0)
        if not math.isfinite(v):
            nans[method] += 1
            continue
        groups[method].setdefault(r[repeat_key], []).append(v)
    nan = float("nan")
    out: dict[str, dict[str, Any]] = {}
    for method, by_repeat in groups.items():
        values = np.asarray([v for vs in by_repeat.values() for v in vs], dtype=np.float64)
        within = [float(np.std(vs, ddof=ddof)) for vs in by_repeat.values() if len(vs) > ddof]
        means = np.asarray([np.mean(vs) for vs in by_repeat.values()], dtype=np.float64)
        out[method] = {
            "mean": float(values.mean()) if values.size else nan,
            "fold_spread": float(np.mean(within)) if within else nan,
            "repeat_spread": float(means.std(ddof=ddof)) if means.size > ddof else nan,
            "overall_std": float(values.std(ddof=ddof)) if values.size > ddof else nan,
            "n_runs": int(values.size),
            "n_nan": nans[method],
            "n_repeats": len(by_repeat),
            "folds_per_repeat": {rep: len(vs) for rep, vs in by_repeat.items()},
            "ddof": ddof,
        }
    return out
