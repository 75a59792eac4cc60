"""load_table: CSV (plain and gzipped) and Parquet round trips and error messages."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from lossattn.datasets import DataFormatError, DataNotFoundError, load_table

ROWS = [
    # bag_id, label, f1, f2, inst
    ("b", 1, 0.5, -1.0, 1),
    ("a", 0, 1.0, 2.0, 0),
    ("b", 1, 3.25, 4.0, 0),
    ("a", 0, -2.0, 0.0, 0),
    ("c", 1, 7.0, 8.0, -1),
]


def _write_csv(path: Path, rows=ROWS, header=True) -> Path:
    lines = ["bag_id,label,f1,f2,inst"] if header else []
    lines += [",".join(str(v) for v in r) for r in rows]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _check(ds) -> None:
    assert ds.names == ["b", "a", "c"]  # order of first appearance
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.bag_sizes.tolist() == [2, 2, 1]
    np.testing.assert_allclose(ds[0].x.numpy(), [[0.5, -1.0], [3.25, 4.0]])
    np.testing.assert_allclose(ds[1].x.numpy(), [[1.0, 2.0], [-2.0, 0.0]])
    np.testing.assert_allclose(ds[2].x.numpy(), [[7.0, 8.0]])


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_csv_round_trip(tmp_path: Path, name: str) -> None:
    p = _write_csv(tmp_path / name)
    ds = load_table(p, feature_columns=["f1", "f2"], instance_label_column="inst")
    _check(ds)
    assert ds.instance_labels.tolist() == [1, 0, 0, 0, -1]
    assert ds.name == "t" and ds.meta["source_file"] == str(p)
    default = load_table(p, instance_label_column="inst")  # features = all other columns
    assert default.num_features == 2


def test_mil_convention_without_header(tmp_path: Path) -> None:
    rows = [(lab, bag, f1, f2) for bag, lab, f1, f2, _ in ROWS]
    p = tmp_path / "m.csv"
    p.write_text("\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    ds = load_table(p, bag_column=1, label_column=0)
    _check(ds)
    assert not ds.has_instance_labels


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    cols = list(zip(*ROWS, strict=True))
    table = pa.table(
        {
            "bag_id": list(cols[0]),
            "label": list(cols[1]),
            "f1": list(cols[2]),
            "f2": list(cols[3]),
            "inst": list(cols[4]),
        }
    )
    p = tmp_path / "t.parquet"
    pq.write_table(table, p)
    ds = load_table(p, instance_label_column="inst")
    _check(ds)
    assert ds.instance_labels.tolist() == [1, 0, 0, 0, -1]


def test_corrupt_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 not really")
    with pytest.raises(DataFormatError, match="bad.parquet: not a readable Parquet"):
        load_table(p)


def test_ragged_row(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("bag_id,label,f1,f2\na,0,1,2\na,0,1\n")
    with pytest.raises(DataFormatError, match=r"r.csv, line 3: ragged row with 3 fields, expected 4"):
        load_table(p)


def test_nan_feature_names_file_and_bag(tmp_path: Path) -> None:
    p = tmp_path / "n.csv"
    p.write_text("bag_id,label,f1,f2\na,0,1,2\nzz,1,nan,2\n")
    with pytest.raises(DataFormatError, match=r"n.csv: .*bag 'zz' \(index 1\) has a non-finite feature value nan"):
        load_table(p)


def test_non_numeric_cell(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("bag_id,label,f1,f2\na,0,1,2\na,0,x,2\n")
    with pytest.raises(DataFormatError, match=r"s.csv, line 3, column 3 \('f1'\): 'x' is not a number"):
        load_table(p)


def test_mixed_labels_in_a_bag(tmp_path: Path) -> None:
    p = tmp_path / "mx.csv"
    p.write_text("bag_id,label,f1\na,0,1\na,1,2\n")
    with pytest.raises(DataFormatError, match=r"bag a has rows with different labels \[0, 1\]"):
        load_table(p)


@pytest.mark.parametrize("label", ["0.5", "1e-3", "inf"])
def test_non_integer_labels(tmp_path: Path, label: str) -> None:
    p = tmp_path / "l.csv"
    p.write_text(f"bag_id,label,f1\na,0,1\nb,{label},1\n")
    with pytest.raises(DataFormatError, match=rf"l.csv, line 3: label '{label}' is not an integer in column 'label'"):
        load_table(p)


def test_label_values_and_num_classes(tmp_path: Path) -> None:
    p = tmp_path / "k.csv"
    p.write_text("bag_id,label,f1\na,0,1\nb,3,1\n")
    ds = load_table(p, num_classes=2)  # two distinct values, two classes: mapped in numeric order
    assert ds.labels.tolist() == [0, 1] and ds.label_values == [0, 3]
    assert load_table(p, num_classes=4).labels.tolist() == [0, 3]  # already classes of a 4-class problem
    with pytest.raises(DataFormatError, match=r"2 distinct values \[0, 3\], which are not the classes 0..2"):
        load_table(p, num_classes=3)


def test_missing_things(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        load_table(tmp_path / "nope.csv")
    p = _write_csv(tmp_path / "t.csv")
    with pytest.raises(DataFormatError, match=r"no bag column 'bag'; the header has"):
        load_table(p, bag_column="bag")
    q = tmp_path / "empty.csv"
    q.write_text("\n\n")
    with pytest.raises(DataFormatError, match="no data rows"):
        load_table(q)


def test_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(b"bag_id,label,f1\n" + b"a,0,1\n" * 2000)
    p = tmp_path / "t.csv.gz"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"t.csv.gz: the gzip data is corrupt or truncated"):
        load_table(p)
