"""The command's help, listings and data catalogue; one real subprocess of ``python -m lossattn``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

from lossattn.cli import format_table, main

SUBCOMMANDS = ["demo", "train", "cv", "evaluate", "predict", "explain", "reproduce", "data", "models", "presets"]
# real benchmark files, where $LOSSATTN_DATA points (.ci/run sets it when the shared data folder exists)
SHARED_DATA = Path(os.environ.get("LOSSATTN_DATA") or "/nonexistent/lossattn-data")


def test_main_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
    assert "examples:" in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_has_examples(capsys, name):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lossattn " + name)
    assert "example" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: lossattn" in capsys.readouterr().out


def test_models_and_presets(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "loss_attention" in out and "Shi et al." in out and "lenet5" in out
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    for preset in ("classic_mil", "digits_bags", "mnist_bags_binary", "mnist_bags_multiclass", "cifar10_bags"):
        assert preset in out
    code, out, _ = run_cli(capsys, "presets", "--show", "digits_bags")
    assert code == 0 and "methods:" in out and "loss_attention" in out


def test_data_list_and_info(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "list", "--data-dir", str(tmp_path))
    assert code == 0
    assert f"Data root: {tmp_path}" in out
    for name in ("musk1", "musk2", "fox", "tiger", "elephant", "mnist-bags", "cifar10-bags", "digits-bags"):
        assert name in out
    code, out, _ = run_cli(capsys, "data", "info", "fox", "--data-dir", str(tmp_path))
    assert code == 0
    assert str(tmp_path / "fox" / "fox_100x100_matlab.mat") in out and "lossattn data fetch fox" in out
    # embedded generator: counts and class balance of example bags
    code, out, _ = run_cli(capsys, "data", "info", "digits_bags_multi")
    assert code == 0 and "class balance" in out and "bags" in out
    code, out, _ = run_cli(capsys, "data", "fetch", "digits")
    assert code == 0 and "nothing to download" in out


def test_data_info_of_a_user_table(capsys, table_file):
    path, sizes = table_file
    code, out, _ = run_cli(capsys, "data", "info", str(path))
    assert code == 0
    assert f"{len(sizes)}" in out and f"{sum(sizes)}" in out and "class balance" in out


@pytest.mark.skipif(
    not (SHARED_DATA / "musk1").is_dir(), reason="LOSSATTN_DATA does not point at the benchmark files (musk1/)"
)
def test_data_info_of_a_present_benchmark(capsys):
    code, out, _ = run_cli(capsys, "data", "info", "musk1", "--data-dir", str(SHARED_DATA))
    assert code == 0
    assert "Present: yes" in out and "476" in out and "negative: 45 / positive: 47" in out


def test_format_table_aligns_columns():
    text = format_table(["name", "value"], [["a", 0.5], ["longer", 12.25]])
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines[:2]}) == 1
    assert lines[2].endswith("0.500") and lines[3].endswith("12.250")


def test_python_dash_m_entry_point():
    """The real process: ``python -m lossattn`` parses, imports the library, reports a user error in 2 lines
    on stderr and exits with code 2 (a successful run costs the same imports; the rest goes through main())."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run(
        [sys.executable, "-m", "lossattn", "train", "--dataset", "no-such-bags"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: unknown dataset") and lines[1].startswith("hint:")
    assert "Traceback" not in bad.stderr
