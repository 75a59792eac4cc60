"""The README's examples run as written: every ```python block, and every ``$ lossattn ...`` command of its
worked examples (shortened in the default suite, verbatim under ``-m slow``)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
TEXT_BLOCKS = re.findall(r"```text\n(.*?)```", TEXT, re.S)

# Data-needing blocks name the benchmark files; they run only where $LOSSATTN_DATA has them.
NEEDS_DATA = re.compile(r"D\.load\(\"|LOSSATTN_DATA")


def _section_of(block: str) -> str:
    heading = ""
    for line in TEXT[: TEXT.index(block)].splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ")
    return heading


def _commands(block: str) -> list[list[str]]:
    return [shlex.split(line[2:], comments=True) for line in block.splitlines() if line.startswith("$ lossattn ")]


def _shortened(argv: list[str]) -> list[str]:
    """The same command at smoke-test size: argparse keeps the last value of an option given twice."""
    action = argv[1] if argv[1] != "data" else f"data {argv[2]}"
    extra = {
        "cv": ["--epochs", "2", "--folds", "2", "--repeats", "1", "-m", "loss_attention,instance_max"],
        "train": ["--epochs", "2"],
        "data make-slides": ["--preset", "tiny"],
    }.get(action, [])
    return argv[1:] + extra


def test_readme_has_the_examples_this_file_runs():
    assert len(PYTHON_BLOCKS) >= 4
    sections = {_section_of(b) for b in TEXT_BLOCKS if _commands(b)}
    assert {"Your own bags", "Whole-slide images"} <= sections


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)), ids=lambda i: f"python-block-{i}")
def test_python_block_runs_verbatim(index, tmp_path):
    block = PYTHON_BLOCKS[index]
    data = os.environ.get("LOSSATTN_DATA", "")
    if NEEDS_DATA.search(block) and not (data and Path(data).is_dir()):
        pytest.skip("this README block reads the benchmark files: set LOSSATTN_DATA")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"README python block {index} ({_section_of(block)}) failed:\n{proc.stderr[-3000:]}"


def _run_worked_examples(capsys, tmp_path, monkeypatch, shorten: bool) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    table_writer = next(b for b in PYTHON_BLOCKS if "bags.csv" in b and "new_bags.csv" in b)
    exec(compile(table_writer, "README.md", "exec"), {})  # writes bags.csv and new_bags.csv here
    outputs = {}
    for block in TEXT_BLOCKS:
        for argv in _commands(block):
            args = _shortened(argv) if shorten else argv[1:]
            code, out, err = run_cli(capsys, *args, "--no-progress")
            assert code == 0, f"README command failed: {shlex.join(argv)}\n{out[-2000:]}\n{err[-2000:]}"
            outputs[" ".join(argv[1:3])] = out
    return outputs


def test_worked_examples_run_shortened(capsys, tmp_path, monkeypatch):
    outputs = _run_worked_examples(capsys, tmp_path, monkeypatch, shorten=True)
    assert (tmp_path / "preds" / "bags.csv").is_file() and (tmp_path / "pics").is_dir()
    header = (tmp_path / "preds" / "bags.csv").read_text().splitlines()[0]
    assert header.startswith("bag,n_instances,label,predicted")  # the schema the README shows
    assert "bal. acc" in outputs["cv -d"]
    assert "method − loss_attention" in outputs["cv -d"]  # the last cv: the Trustworthy comparisons section


@pytest.mark.slow
def test_worked_examples_run_verbatim(capsys, tmp_path, monkeypatch):
    outputs = _run_worked_examples(capsys, tmp_path, monkeypatch, shorten=False)
    for method in ("loss_attention", "attention", "gated_attention", "instance_max", "minet_instance"):
        assert re.search(rf"^{method}\s+10\s+0\.\d{{3}} ± ", outputs["cv -d"], re.M), method
