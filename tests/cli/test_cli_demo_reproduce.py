"""demo and reproduce through the real entry point (reduced settings; the full quick runs are `slow`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from cli_helpers import run_cli

from lossattn.plots import image_bags_size

# real benchmark files, where $LOSSATTN_DATA points (.ci/run sets it when the shared data folder exists)
SHARED_DATA = Path(os.environ.get("LOSSATTN_DATA") or "/nonexistent/lossattn-data")


def test_demo_prints_the_table_and_draws_bags(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "demo", "--out", str(tmp_path), "--epochs", "2", "--bags", "40",
                           "--test-bags", "40", "--no-progress")  # fmt: skip
    assert code == 0
    for row in ("bag accuracy", "bag AUC", "instance precision @ τ=0.5", "instance recall", "instance F-score"):
        assert row in out
    assert "Attention" in out and "Loss-Attention" in out and str(tmp_path) in out
    img = mpimg.imread(tmp_path / "demo_bags.png")
    # 4 bags, 2 methods annotated per tile; the width depends on the largest bag drawn
    assert img.shape[0] == image_bags_size(4, 1, 2)[1]
    assert img.shape[1] in {image_bags_size(4, n, 2)[0] for n in range(1, 40)}
    assert img.std() > 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["methods"]) == {"attention", "loss_attention"}
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "runs" / "loss_attention" / "r0" / "best.pt").is_file()


def test_reproduce_figure3_reduced_shows_the_trend(capsys, tmp_path):
    """Larger λ → higher recall at large τ (the paper's Figure 3), on a reduced quick run."""
    code, out, _ = run_cli(capsys, "reproduce", "figure3", "--quick", "--lams", "0,100", "--repeats", "1",
                           "--set", "train.epochs=15", "--set", "data.test_kwargs.num_bags=150",
                           "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0
    assert "QUICK" in out and "| λ |" in out
    report = json.loads((tmp_path / "figure3.json").read_text())
    assert report["quick"] is True and set(report["curves"]) == {"lam_0", "lam_100"}

    def high_tau_recall(label):
        return sum(report["curves"][label][t]["recall"] for t in ("0.9", "0.8", "0.7")) / 3

    assert high_tau_recall("lam_100") > high_tau_recall("lam_0")
    img = mpimg.imread(tmp_path / "figure3.png")
    assert img.shape[:2] == (380, 1200)
    md = (tmp_path / "figure3.md").read_text()
    assert "QUICK" in md and "## Recall" in md and "τ=0.9" in md
    # resumable: a second call reuses the finished runs
    code, _, _ = run_cli(capsys, "reproduce", "figure3", "--quick", "--lams", "0,100", "--repeats", "1",
                         "--set", "train.epochs=15", "--set", "data.test_kwargs.num_bags=150",
                         "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "figure3.json").read_text())["curves"] == report["curves"]


def test_reproduce_figure2_reduced(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "reproduce", "figure2", "--quick", "--repeats", "1", "--methods",
                           "attention,loss_attention", "--set", "train.epochs=2", "--set",
                           "data.test_kwargs.num_bags=30", "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "figure2.json").read_text())
    assert set(report["curves"]) == {"attention", "loss_attention"}
    assert mpimg.imread(tmp_path / "figure2.png").shape[:2] == (380, 1200)
    assert "Loss-Attention" in (tmp_path / "figure2.md").read_text()


@pytest.mark.skipif(
    not (SHARED_DATA / "musk1").is_dir(), reason="LOSSATTN_DATA does not point at the benchmark files (musk1/)"
)
def test_reproduce_table1_quick_on_one_dataset(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "reproduce", "table1", "--quick", "--datasets", "musk1", "--methods",
                           "loss_attention", "--set", "train.epochs=2", "--data-dir", str(SHARED_DATA),
                           "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0
    assert "Table 1" in out and "MUSK1" in out and "0.917" in out  # ours beside the paper's
    assert (tmp_path / "table1.json").is_file()


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(), reason="LOSSATTN_DATA does not point at the MNIST files (mnist/)"
)
def test_reproduce_table2_quick_one_cell(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "reproduce", "table2", "--quick", "--task", "multiclass", "--bag-counts", "50",
                           "--methods", "loss_attention", "--set", "train.epochs=1", "--set",
                           "data.test_kwargs.num_bags=20", "--data-dir", str(SHARED_DATA),
                           "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0
    assert "Table 2" in out and "0.765" in out
    assert (tmp_path / "table2.json").is_file()


@pytest.mark.slow
def test_figure3_quick_full(capsys, tmp_path):
    """The whole `lossattn reproduce figure3 --quick` (minutes): λ ≥ 10 beats λ = 0 on recall at large τ."""
    code, _, _ = run_cli(capsys, "reproduce", "figure3", "--quick", "--out", str(tmp_path), "--no-progress")
    assert code == 0
    curves = json.loads((tmp_path / "figure3.json").read_text())["curves"]

    def high_tau_recall(label):
        return sum(curves[label][t]["recall"] for t in ("0.9", "0.8", "0.7")) / 3

    assert high_tau_recall("lam_100") > high_tau_recall("lam_0")
    assert high_tau_recall("lam_10") > high_tau_recall("lam_0")
