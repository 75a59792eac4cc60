"""``lossattn check-assumptions``: a plan line, progress with the time left, the verdict table and its files, in
seconds on the hidden --tiny setting; bad names are one error line."""

from __future__ import annotations

import json

from cli_helpers import run_cli


def test_tiny_run_writes_json_and_markdown(capsys, tmp_path) -> None:
    out = tmp_path / "a"
    code, stdout, err = run_cli(capsys, "check-assumptions", "--tiny", "-m", "minet_instance,loss_attention",
                                "--lams", "0,1", "--tests", "single_concept", "--out", str(out))  # fmt: skip
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("Plan: 3 model(s) × 1 test(s) × 1 seed(s) = 3 runs (quick: 2 epochs")
    assert "[3/3 runs" in stdout and "left]" in stdout
    report = json.loads((out / "assumptions.json").read_text())
    assert list(report["results"]) == ["minet_instance", "loss_attention[lam=0]", "loss_attention[lam=1]"]
    s = report["settings"]
    assert (s["epochs"], s["num_train_bags"], s["num_test_bags"], s["seeds"], s["jobs"]) == (2, 20, 20, [0], 1)
    entry = report["results"]["minet_instance"]["single_concept"]
    assert entry["verdict"] in ("pass", "fail", "inconclusive") and len(entry["test_auc"]) == 1
    md = (out / "assumptions.md").read_text()
    assert "| model | single_concept |" in md and "`loss_attention[lam=1]`" in md and "Wall time" in md
    assert report["command"] == (
        f"lossattn check-assumptions -m minet_instance,loss_attention --tests single_concept --seeds 0 --lams 0,1 "
        f"--quick --epochs 2 --train-bags 20 --test-bags 20 --out {out}"
    )
    assert f"| `minet_instance` | {entry['auc_mean']:.2f} {entry['verdict']} |" in md


def test_explicit_options_win_over_tiny(capsys, tmp_path) -> None:
    code, _, err = run_cli(capsys, "check-assumptions", "--tiny", "-m", "embedding_mean", "--tests", "false_frequency",
                           "--seeds", "0,1", "--epochs", "1", "--no-progress", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, err
    s = json.loads((tmp_path / "assumptions.json").read_text())["settings"]
    assert (s["epochs"], s["seeds"]) == (1, [0, 1])


def test_bad_inputs_are_one_error_line(capsys, tmp_path) -> None:
    for argv, message in (
        (["-m", "nope"], "error: models: unknown model 'nope'"),
        (["-m", "resnet18_mean"], "error: models: 'resnet18_mean' is an image model"),
        (["--tests", "nope"], "error: unknown test(s) ['nope']"),
        (["--seeds", "a"], "error: --seeds must be int values"),
    ):
        code, stdout, err = run_cli(capsys, "check-assumptions", "--tiny", *argv, "--out", str(tmp_path / "x"))
        assert code == 2 and err.startswith(message), err
        assert len(err.strip().splitlines()) == 2 and err.splitlines()[1].startswith("hint:")
        assert not (tmp_path / "x").exists()
