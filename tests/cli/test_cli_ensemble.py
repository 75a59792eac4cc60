"""The fold ensemble: the mean of the fold models' probabilities and weights (each with its own standardiser), the
mean threshold, members that must match, and ``lossattn predict --ensemble`` (DATA required)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from cli_helpers import run_cli, write_feature_table

from lossattn.cli import main
from lossattn.datasets import load_table
from lossattn.inference import predict_bags
from lossattn.inference.ensemble import (
    find_fold_runs,
    load_fold_ensemble,
    predict_ensemble,
    resolve_ensemble_data,
)

SMALL = "methods.{m}.kwargs.extractor_kwargs={{hidden: [8], dropout: 0.0}}"


@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory):
    """A 2-fold cv of attention and embedding_mean on a feature table (standardised per fold), and new bags."""
    root = tmp_path_factory.mktemp("ensemble")
    write_feature_table(root / "bags.csv", n_bags=24, seed=0)
    write_feature_table(root / "new.csv", n_bags=10, seed=1)
    code = main(["cv", "-d", str(root / "bags.csv"), "-m", "attention,embedding_mean", "--folds", "2", "--repeats", "1",
                 "--epochs", "2", "--set", "data.kwargs.instance_label_column=inst",
                 "--set", SMALL.format(m="attention"), "--set", SMALL.format(m="embedding_mean"),
                 "--no-progress", "--out", str(root / "cv")])  # fmt: skip
    assert code == 0
    return root


def test_ensemble_is_the_exact_mean_of_its_members(cv_folder) -> None:
    ens = load_fold_ensemble(cv_folder / "cv", method="attention")
    assert ens.keys == [(0, 0), (0, 1)] and len(ens.members) == 2
    a, b = (m.standardizer.state_dict() for m in ens.members)
    assert not np.allclose(np.asarray(a["mean"]), np.asarray(b["mean"]))  # each fold fitted its own
    data = resolve_ensemble_data(str(cv_folder / "new.csv"), ens)
    pred = predict_ensemble(ens, data)
    raw = load_table(cv_folder / "new.csv", instance_label_column="inst")
    singles = [predict_bags(m, m.standardizer.transform(raw)) for m in ens.members]
    expected = (singles[0].probabilities + singles[1].probabilities) / 2
    np.testing.assert_array_equal(pred.probabilities, expected)
    np.testing.assert_array_equal(pred.extra["member_probabilities"][1], singles[1].probabilities)
    for i in range(len(raw)):
        np.testing.assert_array_equal(pred.weights[i], (singles[0].weights[i] + singles[1].weights[i]) / 2)
        assert pred.weights[i].sum() == pytest.approx(1.0, abs=1e-6)  # softmax weights: the mean sums to 1 too
    assert pred.extra["members"] == ["r0_f0", "r0_f1"] and pred.names == singles[0].names


def test_threshold_is_the_mean_of_the_members_thresholds(cv_folder) -> None:
    ens = load_fold_ensemble(cv_folder / "cv" / "attention")
    thresholds = [m.decision_threshold for m in ens.members]
    assert all(t is not None for t in thresholds)  # the user_bags preset chooses one on validation bags
    assert ens.threshold == pytest.approx(np.mean(thresholds))
    ens.members[0].decision_threshold, ens.members[1].decision_threshold = 0.3, None
    assert ens.threshold == pytest.approx(0.4)  # argmax counts as 0.5
    ens.members[0].decision_threshold = None
    assert ens.threshold is None


def test_members_must_match_and_runs_be_found(cv_folder, tmp_path) -> None:
    copy = tmp_path / "cv"
    shutil.copytree(cv_folder / "cv", copy)
    with pytest.raises(ValueError, match="several methods"):
        find_fold_runs(copy)
    with pytest.raises(ValueError, match="no method folder 'nope'"):
        find_fold_runs(copy, method="nope")
    with pytest.raises(ValueError, match="no fold runs of repeat 3"):
        find_fold_runs(copy, method="attention", repeat=3)
    shutil.rmtree(copy / "attention" / "r0_f1")
    shutil.copytree(copy / "embedding_mean" / "r0_f1", copy / "attention" / "r0_f1")
    with pytest.raises(ValueError, match="differs from .* in its model"):
        load_fold_ensemble(copy, method="attention")
    (copy / "embedding_mean" / "r0_f1" / "result.json").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        find_fold_runs(copy / "embedding_mean")
    ens = load_fold_ensemble(cv_folder / "cv", method="attention")
    with pytest.raises(ValueError, match="no common held-out bags"):
        resolve_ensemble_data(None, ens)
    own = resolve_ensemble_data(str(cv_folder / "bags.csv"), ens)
    assert "optimistic" in own.description  # the cv's own bags trained its members


def test_predict_ensemble_command(capsys, cv_folder, tmp_path) -> None:
    cv = cv_folder / "cv"
    new = str(cv_folder / "new.csv")
    code, out, err = run_cli(capsys, "predict", str(cv), new, "--ensemble", "--method", "attention", "--no-progress",
                             "--out", str(tmp_path / "p"))  # fmt: skip
    assert code == 0, err
    assert "fold ensemble of 2 models" in out and "mean of the 2 fold models' thresholds" in out
    with open(tmp_path / "p" / "bags.csv") as f:
        rows = list(csv.DictReader(f))
    ens = load_fold_ensemble(cv / "attention")
    pred = predict_ensemble(ens, resolve_ensemble_data(new, ens))
    assert [float(r["prob_1"]) for r in rows] == pytest.approx(pred.probabilities[:, 1].tolist(), abs=1e-5)
    code, _, err = run_cli(capsys, "predict", str(cv / "attention"), "--ensemble", "--out", str(tmp_path / "q"))
    assert (
        code == 2 and err.startswith("error: a fold ensemble has no common held-out bags") and "hint: give DATA" in err
    )
    code, _, err = run_cli(capsys, "predict", str(cv / "attention" / "r0_f0"), new, "--method", "attention")
    assert code == 2 and "--ensemble" in err
    code, _, err = run_cli(capsys, "predict", str(cv), new, "--ensemble", "--out", str(tmp_path / "r"))
    assert code == 2 and "several methods" in err and len(err.strip().splitlines()) == 2
