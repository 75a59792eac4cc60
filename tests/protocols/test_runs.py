"""Protocols: CV and fixed splits run end to end and write every artefact; records aggregate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lossattn.protocols import (
    RunSpec,
    aggregate,
    apply_overrides,
    execute_run,
    load_preset,
    plan_runs,
    prepare_split,
    run_experiment,
)

TINY = {
    "train.epochs": 2,
    "train.eval_batch_size": 64,
    "data.kwargs.num_bags": 40,
    "data.test_kwargs.num_bags": 30,
}


def digits_cv_config(**extra):
    cfg = load_preset("digits_bags")
    return apply_overrides(
        cfg, {**TINY, "protocol.kind": "cv", "protocol.folds": 3, "protocol.repeats": 2, "train.oracle": True, **extra}
    )


def test_plan_runs_covers_every_split_and_method():
    cfg = digits_cv_config()
    specs = plan_runs(cfg)
    assert len(specs) == 3 * 2 * len(cfg.methods)
    assert {(s.repeat, s.fold) for s in specs} == {(r, f) for r in range(2) for f in range(3)}


def test_cv_splits_are_disjoint_and_validation_comes_from_training_bags():
    cfg = digits_cv_config()
    train, val, test = prepare_split(cfg, repeat=0, fold=1)
    names = [set(ds.names) for ds in (train, val, test)]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert len(train) + len(val) + len(test) == 40


def test_short_cv_run_writes_every_artefact(tmp_path):
    cfg = digits_cv_config()
    result = run_experiment(cfg, tmp_path)
    assert len(result["runs"]) == len(plan_runs(cfg))
    for method in cfg.methods:
        run_dir = tmp_path / method / "r0_f0"
        for name in (
            "config.yaml",
            "versions.json",
            "metrics.jsonl",
            "metrics.csv",
            "checkpoint.pt",
            "best.pt",
            "result.json",
        ):
            assert (run_dir / name).exists(), name
        record = json.loads((run_dir / "result.json").read_text())
        assert 0 <= record["test_accuracy"] <= 1
        assert record["oracle_test_accuracy"] >= 0
    assert (tmp_path / "results.json").exists() and (tmp_path / "config.yaml").exists()
    summary = result["summary"]
    assert set(summary) == set(cfg.methods)
    acc = summary["loss_attention"]["accuracy"]
    assert acc["n"] == 6 and 0 <= acc["mean"] <= 1
    assert "protocol" in result and "cross-validation" in result["protocol"]


def test_resume_reuses_complete_runs(tmp_path):
    cfg = digits_cv_config(**{"protocol.repeats": 1, "methods": ["loss_attention"]})
    first = run_experiment(cfg, tmp_path)
    marker = tmp_path / "loss_attention" / "r0_f0" / "result.json"
    mtime = os.stat(marker).st_mtime_ns
    second = run_experiment(cfg, tmp_path, resume=True)
    assert os.stat(marker).st_mtime_ns == mtime
    assert [r["test_accuracy"] for r in first["runs"]] == [r["test_accuracy"] for r in second["runs"]]


def test_fixed_protocol_is_reproducible_and_methods_share_splits():
    cfg = apply_overrides(load_preset("digits_bags"), TINY)
    spec_la, spec_att = RunSpec("loss_attention", 0), RunSpec("attention", 0)
    a, b = execute_run(cfg, spec_la), execute_run(cfg, spec_la)
    assert a["test_accuracy"] == b["test_accuracy"] and a["selected_epoch"] == b["selected_epoch"]
    c = execute_run(cfg, spec_att)
    assert (a["n_train"], a["n_val"], a["n_test"]) == (c["n_train"], c["n_val"], c["n_test"])
    assert a["seed"] == c["seed"]


def test_selected_epoch_unchanged_when_test_labels_are_shuffled(monkeypatch):
    import lossattn.protocols.runs as P

    cfg = apply_overrides(load_preset("digits_bags"), {**TINY, "train.epochs": 4, "methods": ["loss_attention"]})
    honest = execute_run(cfg, RunSpec("loss_attention", 0))
    original = P.prepare_split

    def shuffled(*args, **kwargs):
        train, val, test, scaler = original(*args, **kwargs)
        rng = np.random.default_rng(0)
        test._labels = rng.permutation(test.labels)  # noqa: SLF001 - deliberate corruption of the test split
        return train, val, test, scaler

    monkeypatch.setattr(P, "prepare_split", shuffled)
    corrupted = execute_run(cfg, RunSpec("loss_attention", 0))
    assert corrupted["selected_epoch"] == honest["selected_epoch"]
    assert corrupted["val_loss"] == honest["val_loss"]


def test_aggregate_mean_std_and_repeat_means():
    records = [
        {
            "method": "m",
            "repeat": r,
            "fold": f,
            "test_accuracy": acc,
            "test_auc": 0.5,
            "selected_epoch": 1,
            "seconds": 1.0,
        }
        for (r, f, acc) in [(0, 0, 1.0), (0, 1, 0.5), (1, 0, 0.5), (1, 1, 0.0)]
    ]
    s = aggregate(records)["m"]
    assert s["accuracy"]["mean"] == pytest.approx(0.5)
    assert s["accuracy"]["std"] == pytest.approx(np.std([1.0, 0.5, 0.5, 0.0]))
    assert s["accuracy_repeat_means"]["mean"] == pytest.approx(0.5)
    assert s["accuracy_repeat_means"]["std"] == pytest.approx(0.25)


def _data_root() -> Path | None:
    root = os.environ.get("LOSSATTN_DATA")
    return Path(root) if root and (Path(root) / "musk1").exists() else None


@pytest.mark.skipif(_data_root() is None, reason="LOSSATTN_DATA is not set or has no musk1/ folder")
def test_benchmark_few_epochs_real_data(tmp_path):
    cfg = apply_overrides(
        load_preset("classic_mil"),
        {
            "data.name": "musk1",
            "train.epochs": 3,
            "protocol.folds": 3,
            "protocol.repeats": 1,
            "methods": ["loss_attention", "attention"],
        },
    )
    result = run_experiment(cfg, tmp_path)
    assert len(result["runs"]) == 6
    best = json.loads((tmp_path / "loss_attention" / "r0_f0" / "result.json").read_text())
    assert best["n_train"] + best["n_val"] + best["n_test"] == 92
    assert best["test_accuracy"] > 0.5


def test_aggregate_averages_precision_over_runs_that_retrieved_something():
    def run(repeat, precision, recall, f1, retrieved):
        point = {"precision": precision, "recall": recall, "f1": f1, "retrieved": retrieved, "relevant": 10}
        return {"method": "la", "repeat": repeat, "fold": None, "test_accuracy": 0.5, "test_auc": 0.5,
                "selected_epoch": 1, "seconds": 1.0, "instance_retrieval": {"0.9": point, "0.1": {**point, "retrieved": 0, "precision": 0.0}}}  # fmt: skip

    records = [run(0, 1.0, 0.2, 1 / 3, 2), run(1, 0.5, 0.1, 1 / 6, 2), run(2, 0.0, 0.0, 0.0, 0)]
    curve = aggregate(records)["la"]["instance_retrieval"]
    # the run that retrieved nothing has no precision: it is left out of the precision mean only
    assert curve["0.9"]["precision"] == pytest.approx(0.75)
    assert curve["0.9"]["recall"] == pytest.approx(0.1) and curve["0.9"]["f1"] == pytest.approx(1 / 6)
    assert (curve["0.9"]["runs_retrieving"], curve["0.9"]["runs"]) == (2, 3)
    assert np.isnan(curve["0.1"]["precision"]) and curve["0.1"]["runs_retrieving"] == 0


def test_figure_markdown_says_how_many_runs_retrieved_anything():
    from lossattn.experiments.figures import _retrieval_cell

    point = {"precision": 0.75, "recall": 0.1, "f1": 0.2, "runs_retrieving": 2, "runs": 3}
    assert _retrieval_cell(point, "precision") == "0.750 (2/3)"
    assert _retrieval_cell(point, "recall") == "0.100"
    assert _retrieval_cell({**point, "runs_retrieving": 3}, "precision") == "0.750"
    assert _retrieval_cell({**point, "precision": float("nan"), "runs_retrieving": 0}, "precision") == "– (0/3)"
