"""train / cv / evaluate through the real entry point on tiny data."""

from __future__ import annotations

import json

import yaml
from cli_helpers import TINY_DIGITS, run_cli


def test_train_writes_a_run_folder(digits_run):
    for name in ("best.pt", "checkpoint.pt", "metrics.csv", "result.json", "config.yaml"):
        assert (digits_run / name).is_file(), name
    cfg = yaml.safe_load((digits_run / "config.yaml").read_text())
    assert cfg["data"]["name"] == "digits-bags-multi" and cfg["train"]["epochs"] == 2
    assert list(cfg["methods"]) == ["loss_attention"]  # train: one method by default
    assert (digits_run.parent.parent / "results.json").is_file()


def test_evaluate_defaults_to_the_runs_own_test_bags(capsys, digits_run, tmp_path):
    record = json.loads((digits_run / "result.json").read_text())
    code, out, _ = run_cli(capsys, "evaluate", str(digits_run), "--out", str(tmp_path))
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["bags"] == record["n_test"] == 30
    assert abs(metrics["accuracy"] - record["test_accuracy"]) < 1e-9
    assert "instance retrieval" in out and "accuracy" in out
    # an explicit generator with other bags
    code, out, _ = run_cli(capsys, "evaluate", str(digits_run / "best.pt"), "digits-bags-multi", "--num-bags", "12",
                           "--data-seed", "5")  # fmt: skip
    assert code == 0 and "12 generated test bags" in out


def test_train_flags_model_choice_and_resume(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["train", *TINY_DIGITS, "-m", "gated_attention,loss_attention", "--lam", "0.5", "--lr", "2e-3",
            "--seed", "3", "--out", str(out)]  # fmt: skip
    code, text, _ = run_cli(capsys, *argv)
    assert code == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert set(cfg["methods"]) == {"gated_attention", "loss_attention"}
    assert cfg["methods"]["loss_attention"]["kwargs"]["lam"] == 0.5
    # a model that is not in the preset inherits the preset's extractor settings
    assert cfg["methods"]["gated_attention"]["kwargs"]["extractor"] == "mlp"
    assert cfg["train"]["lr"] == 2e-3 and cfg["protocol"]["seed"] == 3
    first = json.loads((out / "loss_attention" / "r0" / "result.json").read_text())
    assert "gated_attention" in text and "loss_attention" in text
    # resume: finished runs are read back, not retrained
    code, _, _ = run_cli(capsys, *argv, "--resume")
    assert code == 0
    again = json.loads((out / "loss_attention" / "r0" / "result.json").read_text())
    assert again == first


def test_train_one_cv_fold_of_a_user_table(table_run):
    cfg = yaml.safe_load((table_run / "config.yaml").read_text())
    assert cfg["run"]["fold"] == 0 and cfg["protocol"]["kind"] == "cv" and cfg["data"]["standardize"] is True
    record = json.loads((table_run / "result.json").read_text())
    assert record["n_test"] == 12


def test_evaluate_rebuilds_the_cv_test_fold(capsys, table_run, tmp_path):
    record = json.loads((table_run / "result.json").read_text())
    code, out, _ = run_cli(capsys, "evaluate", str(table_run), "--out", str(tmp_path))
    assert code == 0 and "fold 0" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["bags"] == 12 and abs(metrics["accuracy"] - record["test_accuracy"]) < 1e-9


def test_cv_runs_the_protocol_and_prints_the_table(capsys, tmp_path):
    out = tmp_path / "cv"
    code, text, _ = run_cli(capsys, "cv", "-d", "digits-bags", "--epochs", "1", "--set", "data.kwargs.num_bags=30",
                            "--set", "data.test_kwargs.num_bags=20", "--set", "protocol.repeats=2",
                            "-m", "attention,loss_attention", "--no-progress", "--out", str(out))  # fmt: skip
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert len(result["runs"]) == 4 and set(result["summary"]) == {"attention", "loss_attention"}
    assert "accuracy" in text and "±" in text and "mean selected epoch" in text
    assert (out / "summary.md").read_text().startswith("# digits_binary")
    assert (out / "loss_attention" / "r1" / "best.pt").is_file()
