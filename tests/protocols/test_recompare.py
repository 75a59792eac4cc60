"""Paired comparisons recomputed from saved results: finding experiments, merging files, pairing as cv does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lossattn.protocols.comparison import compare_methods
from lossattn.protocols.recompare import find_experiments, load_saved_results, merge_experiments, recompare


def _runs(method: str, scores, folds: int = 3, **extra) -> list[dict]:
    out = []
    for i, score in enumerate(scores):
        out.append({"method": method, "repeat": i // folds, "fold": i % folds, "test_accuracy": float(score),
                    "n_train": 80, "n_val": 20, "n_test": 10, **extra})  # fmt: skip
    return out


CONFIG = {"data": {"name": "musk1"}, "protocol": {"kind": "cv", "folds": 3, "repeats": 2, "seed": 0}}
LA = [0.8, 0.7, 0.9, 0.6, 0.85, 0.75]
ATT = [0.7, 0.75, 0.8, 0.5, 0.8, 0.6]


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_nested_results_give_one_experiment_per_place() -> None:
    obj = {"datasets": {"musk1": {"config": CONFIG, "runs": _runs("la", LA) + _runs("att", ATT)},
                        "fox": {"runs": _runs("la", LA)}}, "table": "ignored"}  # fmt: skip
    found = find_experiments(obj, "t.json")
    assert [e.where for e in found] == ["datasets / musk1", "datasets / fox"]
    assert found[0].config == CONFIG and found[1].config is None and found[0].sources == ["t.json"]
    assert len(found[0].records) == 12


def test_a_flat_list_of_several_datasets_is_split_by_its_dataset_field() -> None:
    runs = _runs("la", LA, dataset="tiger") + _runs("la", ATT, dataset="musk1") + _runs("att", ATT, dataset="tiger")
    found = find_experiments({"args": {}, "runs": runs})
    assert {e.where: len(e.records) for e in found} == {"dataset tiger": 12, "dataset musk1": 6}


def test_recompare_equals_compare_methods_and_scipy() -> None:
    exp = find_experiments({"runs": _runs("la", LA) + _runs("att", ATT)})
    (res,) = recompare(exp, "la", "wilcoxon")
    assert res["comparison"] == compare_methods(exp[0].records, "la", "wilcoxon")
    c = res["comparison"]["metrics"]["test_accuracy"]["att"]
    diffs = np.array(ATT) - np.array(LA)
    assert c["mean_diff"] == pytest.approx(diffs.mean())
    assert c["p_value"] == pytest.approx(stats.wilcoxon(diffs).pvalue)
    assert (c["wins"], c["ties"], c["losses"]) == (1, 0, 5)


def test_runs_without_folds_pair_on_repeats() -> None:
    runs = [{"method": m, "repeat": r, "fold": None, "test_accuracy": s}
            for m, scores in (("la", [0.9, 0.8, 0.85]), ("att", [0.8, 0.8, 0.7])) for r, s in enumerate(scores)]  # fmt: skip
    (res,) = recompare(find_experiments({"runs": runs}), None, "t")
    c = res["comparison"]["metrics"]["test_accuracy"]["att"]
    assert res["comparison"]["pair_on"] == ["repeat"] and c["n"] == 3
    assert c["p_value"] == pytest.approx(stats.ttest_rel([0.8, 0.8, 0.7], [0.9, 0.8, 0.85]).pvalue)


def test_two_files_of_the_same_protocol_pair_up(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", {"config": CONFIG, "runs": _runs("la", LA)})
    (tmp_path / "cv_att").mkdir()
    _write(tmp_path / "cv_att" / "results.json", {"config": CONFIG, "runs": _runs("att", ATT)})
    merged = merge_experiments([load_saved_results(a), load_saved_results(tmp_path / "cv_att")])
    assert len(merged) == 1 and len(merged[0].records) == 12
    assert merged[0].sources == [str(a), str(tmp_path / "cv_att" / "results.json")]
    together = find_experiments({"runs": _runs("la", LA) + _runs("att", ATT)})
    assert recompare(merged, "la")[0]["comparison"] == recompare(together, "la")[0]["comparison"]


def test_files_of_different_protocols_or_the_same_runs_are_refused(tmp_path: Path) -> None:
    other = {**CONFIG, "protocol": {**CONFIG["protocol"], "seed": 1}}
    a = load_saved_results(_write(tmp_path / "a.json", {"config": CONFIG, "runs": _runs("la", LA)}))
    b = load_saved_results(_write(tmp_path / "b.json", {"config": other, "runs": _runs("att", ATT)}))
    with pytest.raises(ValueError, match="different data or protocols"):
        merge_experiments([a, b])
    c = load_saved_results(_write(tmp_path / "c.json", {"config": CONFIG, "runs": _runs("la", ATT)}))
    with pytest.raises(ValueError, match=r"method 'la' has a run of repeat 0, fold 0 in both .*a.json and .*c.json"):
        merge_experiments([a, c])


def test_bad_results_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no results file at"):
        load_saved_results(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="a folder without results.json"):
        load_saved_results(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a JSON results file"):
        load_saved_results(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="empty.json: no run records"):
        load_saved_results(_write(tmp_path / "empty.json", {"runs": []}))
    with pytest.raises(ValueError, match="unknown reference method 'gated'"):
        recompare(find_experiments({"runs": _runs("la", LA) + _runs("att", ATT)}), "gated")
