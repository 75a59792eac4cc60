"""``lossattn compare``: paired tables from saved results, across files, and the README's tables come from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import run_cli

from lossattn.protocols.recompare import load_saved_results, recompare

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"data": {"name": "bags.csv"}, "protocol": {"kind": "cv", "folds": 2, "repeats": 2, "seed": 0}}


def _results(path: Path, method: str, scores) -> Path:
    runs = [{"method": method, "repeat": i // 2, "fold": i % 2, "test_accuracy": s, "test_auc": s,
             "n_train": 40, "n_val": 10, "n_test": 25} for i, s in enumerate(scores)]  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps({"config": CONFIG, "runs": runs}))
    return path


def test_two_cv_folders_compared_and_written(capsys, tmp_path: Path) -> None:
    a = _results(tmp_path / "cv_la", "loss_attention", [0.8, 0.9, 0.7, 0.6])
    b = _results(tmp_path / "cv_att", "attention", [0.7, 0.9, 0.6, 0.4])
    out = tmp_path / "pairs.md"
    code, text, err = run_cli(capsys, "compare", str(a), str(b), "--reference", "loss_attention", "--spread",
                              "--out", str(out))  # fmt: skip
    assert code == 0, err
    row = next(line for line in text.splitlines() if line.startswith("accuracy") and "attention" in line)
    assert re.search(r"\b4\s+-0\.100\b", row) and "0/1/3" in row  # 4 pairs, mean diff, W/T/L
    assert "fold-to-fold sd" in text and "Wilcoxon" in text
    md = out.read_text()
    assert md.startswith("# Paired comparisons") and "Recomputed with `lossattn compare" in md
    assert "| accuracy | attention | 4 | -0.100 |" in md


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["compare", "nowhere.json"], "no results file at nowhere.json"),
        (["compare", "{tmp}", "--only", "zzz"], "--only 'zzz' matches no experiment"),
        (["compare", "{tmp}", "--reference", "gated_attention"], "unknown reference method 'gated_attention'"),
    ],
)
def test_bad_compare_input_is_one_error_line(capsys, tmp_path: Path, argv, needle) -> None:
    _results(tmp_path, "loss_attention", [0.8, 0.9, 0.7, 0.6])
    code, out, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error:") and needle in lines[0] and lines[-1].startswith("hint:")


def _readme_rows(title_start: str) -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index(title_start) :]
    lines = block.splitlines()[2 : 2 + 12]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]


def test_readme_paired_tables_are_what_compare_computes() -> None:
    # the README's paired tables are regenerated from the saved runs, not typed in
    def cell(c: dict) -> str:
        return f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] · {c['wins']}/{c['ties']}/" \
               f"{c['losses']} · {c['p_value']:.3f}"  # fmt: skip

    t1 = recompare(load_saved_results(REPO / "docs/results/table1.json"), None, "corrected-t")
    rows = _readme_rows("| dataset | accuracy: Δ [95% CI]")
    assert len(rows) == 5
    for res, row in zip(t1, rows, strict=True):
        m = res["comparison"]["metrics"]
        assert row == [res["where"].split(" / ")[-1].upper(), cell(m["test_accuracy"]["attention"]),
                       cell(m["test_auc"]["attention"])]  # fmt: skip
    t2 = {
        r["where"]: r for r in recompare(load_saved_results(REPO / "docs/results/table2.json"), "loss_attention", "t")
    }
    rows = _readme_rows("| method − Loss-Attention, 50 bags |")
    binary = t2["tasks / binary / 50"]["comparison"]["metrics"]["test_auc"]
    assert len(rows) == 8 and rows[0][1] == cell(binary["attention"])
    multi = t2["tasks / multiclass / 50"]["comparison"]["metrics"]["test_accuracy"]
    assert rows[-1][2] == cell(multi["embedding_mean"])
