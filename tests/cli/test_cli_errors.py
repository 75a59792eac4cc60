"""User mistakes: one ``error:`` line plus one ``hint:`` line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from cli_helpers import run_cli


def assert_user_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["train", "--dataset", "no-such-bags"], ["unknown dataset 'no-such-bags'", "lossattn data list"]),
        (["train", "--dataset", "./missing/bags.csv"], ["no file or folder"]),
        (["train", "--model", "no_such_model"], ["unknown model 'no_such_model'", "lossattn models"]),
        (["cv", "--preset", "no_such_preset"], ["unknown preset 'no_such_preset'", "lossattn presets"]),
        (["train", "--set", "train.lr=abc"], ["train.lr must be a number", "--set section.key=value"]),
        (["train", "--set", "train.no_such_key=1"], ["unknown key", "no_such_key"]),
        (["train", "--set", "train.lr"], ["must look like key=value"]),
        (["train", "--model", "attention", "--lam", "2"], ["--lam", "loss_attention"]),
        (["evaluate", "/no/such/checkpoint.pt"], ["does not exist"]),
        (["data", "info", "no-such-bags"], ["unknown dataset"]),
    ],
)
def test_user_errors(capsys, argv, needles):
    code, _, err = run_cli(capsys, *argv)
    assert_user_error(code, err, *needles)


def test_missing_benchmark_data_says_where_to_put_it(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "-d", "musk1", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert_user_error(code, err, "musk1", str(tmp_path / "musk1"), "lossattn data fetch musk1")


def test_checkpoint_that_does_not_fit_the_data(capsys, digits_run, table_file):
    path, _ = table_file
    code, _, err = run_cli(capsys, "predict", str(digits_run), str(path), "--out", "unused")
    assert_user_error(code, err, "expects instances of shape (1, 8, 8)", "has instances of shape (6,)")


def test_resume_into_a_folder_with_other_settings(capsys, digits_run):
    out = digits_run.parent.parent
    code, _, err = run_cli(capsys, "train", "--epochs", "7", "--out", str(out), "--resume", "--no-progress")
    assert_user_error(code, err, "--resume", "different settings")


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="unknown dataset"):
        run_cli(capsys, "--debug", "train", "--dataset", "no-such-bags")
    with pytest.raises(ValueError, match="unknown dataset"):
        run_cli(capsys, "train", "--dataset", "no-such-bags", "--debug")


def test_reproduce_image_tables_call_the_module(capsys, monkeypatch, tmp_path):
    import importlib

    images = importlib.import_module("lossattn.experiments.image_tables")
    calls = []

    def fake(out_dir, *, quick=False, jobs=1, **kwargs):
        calls.append((out_dir, quick, jobs))
        (out_dir / "table5.md").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "table5.md").write_text("# Table 5 (fake)\n")
        return {}

    monkeypatch.setattr(images, "reproduce_table5", fake)
    code, out, _ = run_cli(capsys, "reproduce", "table5", "--quick", "--jobs", "2", "--out", str(tmp_path))
    assert code == 0 and calls == [(tmp_path, True, 2)]
    assert "# Table 5 (fake)" in out


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(capsys, "reproduce", "table9")
    assert info.value.code == 2
