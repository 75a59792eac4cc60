"""``lossattn cv`` compares every method with a reference over the same folds: results.json carries the comparison
and the spread, summary.md their tables; a bad --reference is one error line before any training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import run_cli
from scipy import stats

CV = ["cv", "-d", "digits-bags", "-m", "attention,loss_attention", "--protocol", "cv", "--folds", "3",
      "--repeats", "2", "--epochs", "1", "--set", "data.kwargs.num_bags=36", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def cv_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv_cmp")
    from lossattn.cli import main

    assert main([*CV, "--reference", "loss_attention", "--out", str(out)]) == 0
    return out


def test_results_json_carries_the_comparison_and_the_spread(cv_result) -> None:
    result = json.loads((cv_result / "results.json").read_text())
    c = result["comparison"]
    assert c["reference"] == "loss_attention" and c["test"] == "wilcoxon" and c["pair_on"] == ["repeat", "fold"]
    assert c["metric"] == "test_balanced_accuracy" and set(c["metrics"]) == {"test_balanced_accuracy", "test_auc"}
    res = c["metrics"]["test_balanced_accuracy"]["attention"]
    assert res["n"] == 6 and res["n_unmatched"] == 0
    by = {(r["method"], r["repeat"], r["fold"]): r["test_balanced_accuracy"] for r in result["runs"]}
    d = np.asarray([by[("attention", r, f)] - by[("loss_attention", r, f)] for r, f in res["pairs"]])
    assert res["mean_diff"] == pytest.approx(d.mean())
    if np.any(np.abs(d) > 1e-12):
        assert res["p_value"] == pytest.approx(stats.wilcoxon(np.where(np.abs(d) <= 1e-12, 0.0, d)).pvalue)
    spread = result["spread"]["test_balanced_accuracy"]["attention"]
    assert spread["n_repeats"] == 2 and spread["folds_per_repeat"] == {"0": 3, "1": 3}
    md = (cv_result / "summary.md").read_text()
    assert "## Paired comparison with loss_attention" in md and "| balanced accuracy | attention | 6 |" in md
    assert "## Spread: folds versus repeats" in md and "Wilcoxon" in md and "not independent" in md


def test_printed_table_shows_the_repeat_sd_and_the_comparison(capsys, tmp_path) -> None:
    code, out, err = run_cli(capsys, *CV, "--paired-test", "corrected-t", "--out", str(tmp_path / "cv"))
    assert code == 0, err
    assert "rep. sd" in out and "method − attention" in out and "p (corrected t)" in out
    c = json.loads((tmp_path / "cv" / "results.json").read_text())["comparison"]
    assert c["test"] == "corrected-t" and c["metrics"]["test_auc"]["loss_attention"]["corrected"]


def test_unknown_reference_is_one_error_line_before_training(capsys, tmp_path) -> None:
    code, out, err = run_cli(capsys, *CV, "--reference", "nope", "--out", str(tmp_path / "bad"))
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0] == "error: unknown reference method 'nope'; the methods are: attention, loss_attention"
    assert lines[1].startswith("hint:") and len(lines) == 2
    assert not (tmp_path / "bad").exists()  # nothing trained, nothing written


def test_reproduce_takes_the_reference_and_refuses_an_unknown_one(capsys, tmp_path) -> None:
    code, _, err = run_cli(capsys, "reproduce", "figure3", "--quick", "--lams", "0,1", "--reference", "attention",
                           "--out", str(tmp_path / "f3"), "--no-progress")  # fmt: skip
    assert code == 2
    assert err.splitlines()[0] == "error: unknown reference method 'attention'; the methods are: lam_0, lam_1"
    assert not list((tmp_path / "f3").glob("runs/*/*/result.json"))  # refused before any training
