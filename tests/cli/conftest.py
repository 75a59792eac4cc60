"""Shared fixtures of the CLI tests: tiny trained runs (digits-bags images, a feature table)."""

from __future__ import annotations

import pytest
from cli_helpers import TINY_DIGITS, write_feature_table

from lossattn.cli import main


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A loss_attention run on digits-bags-multi (image instances 1x8x8), trained for 2 epochs."""
    out = tmp_path_factory.mktemp("digits_run")
    code = main(["train", *TINY_DIGITS, "--out", str(out)])
    assert code == 0
    return out / "loss_attention" / "r0"


@pytest.fixture(scope="session")
def table_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "bags.csv"
    sizes = write_feature_table(path)
    return path, sizes


@pytest.fixture(scope="session")
def table_run(tmp_path_factory, table_file):
    """An attention run on a user CSV table (feature instances, standardised), one CV fold."""
    path, _ = table_file
    out = tmp_path_factory.mktemp("table_run")
    code = main(
        [
            "train",
            "-d",
            str(path),
            "-m",
            "attention",
            "--epochs",
            "3",
            "--set",
            "protocol.folds=2",
            "--set",
            "protocol.repeats=1",
            "--set",
            "data.kwargs.instance_label_column=inst",
            "--set",
            "methods.attention.kwargs.extractor_kwargs={hidden: [8], dropout: 0.0}",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out / "attention" / "r0_f0"
