"""load_table: header detection, the mil defaults, column roles by name or position, label mapping, split and
group columns, unlabeled tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lossattn.datasets import AUTO, DataFormatError, check_trainable, load_table, split_indices

# the mil convention: label, bag id, features (no header)
MIL_ROWS = [
    (1, 7, 0.5, -1.0),
    (0, 3, 1.0, 2.0),
    (1, 7, 3.25, 4.0),
    (0, 3, -2.0, 0.0),
    (1, 9, 7.0, 8.0),
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _mil(path: Path, rows=MIL_ROWS) -> Path:
    return _write(path, [",".join(str(v) for v in r) for r in rows])


def test_headerless_mil_table_loads_with_the_defaults(tmp_path: Path) -> None:
    ds = load_table(_mil(tmp_path / "m.csv"))
    assert ds.names == ["7", "3", "9"]  # the first data row is data, not a header
    assert ds.labels.tolist() == [1, 0, 1] and ds.label_values == [0, 1]
    assert ds.bag_sizes.tolist() == [2, 2, 1] and ds.num_features == 2
    np.testing.assert_allclose(ds[0].x.numpy(), [[0.5, -1.0], [3.25, 4.0]])
    assert ds.meta["columns"] == {"label": 0, "bag": 1, "split": None, "group": None, "instance-label": None}
    assert ds.splits is None and ds.groups is None


def test_headerless_mil_table_with_minus_one_plus_one_labels(tmp_path: Path) -> None:
    rows = [(-1 if r[0] == 0 else 1, *r[1:]) for r in MIL_ROWS]
    ds = load_table(_mil(tmp_path / "pm.csv", rows))
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.label_values == [-1, 1] and ds.class_names == ["-1", "1"]


def test_header_detection_by_column_types(tmp_path: Path) -> None:
    # mil layout with text labels and bag ids: the text of row 1 sits in text columns, so it is data
    p = _write(tmp_path / "t.csv", ["tumour,bag0,1.5,2.5", "tumour,bag0,0.5,1.0", "normal,bag1,0.1,0.2"])
    ds = load_table(p)
    assert ds.names == ["bag0", "bag1"] and ds.label_values == ["normal", "tumour"] and ds.num_features == 2
    # a header whose feature columns are named by numbers (pandas' integer column names): the usual names decide
    q = _write(tmp_path / "n.csv", ["bag_id,label,0,1", "a,tumour,1.5,2.5", "b,normal,0.5,1.0"])
    assert load_table(q).names == ["a", "b"]
    # text over numbers in a column: a header
    r = _write(tmp_path / "h.csv", ["id,y,width,height", "a,1,1.5,2.5", "b,0,0.5,1.0"])
    with pytest.raises(DataFormatError, match="no bag column found"):
        load_table(r)
    assert load_table(r, bag_column="id", label_column="y").names == ["a", "b"]


def test_header_detection_and_override(tmp_path: Path) -> None:
    # a header of numbers only (pandas' default integer column names) is data unless header=True says otherwise
    p = _write(tmp_path / "n.csv", ["0,1,2,3", "1,7,0.5,1", "0,3,1,1"])
    assert len(load_table(p)) == 3  # "0,1,2,3" read as a bag "1" with label 0
    ds = load_table(p, header=True, bag_column="1", label_column="0")
    assert ds.names == ["7", "3"] and ds.num_features == 2
    q = _write(tmp_path / "h.csv", ["bag_id,label,f0", "a,0,1.5", "b,1,2.5"])
    assert load_table(q).names == ["a", "b"]
    with pytest.raises(DataFormatError, match=r"h.csv, line 1, column 3: 'f0' is not a number"):
        load_table(q, header=False)  # the header row is now data: its text cannot be a feature
    assert load_table(q, header=True, bag_column=AUTO).names == ["a", "b"]
    with pytest.raises(
        DataFormatError, match=r"the bag column is given by name, but the first row \(line 1\) was read as data"
    ):
        load_table(p, bag_column="bag_id")


def test_headerless_text_bag_ids_given_by_position(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.csv", ["1,bag_a,0.5", "0,bag_b,1.0"])
    ds = load_table(p, bag_column=1, label_column=0)  # the id column does not decide the header question
    assert ds.names == ["bag_a", "bag_b"] and ds.labels.tolist() == [1, 0]
    assert load_table(p, bag_column=-2, label_column=0).names == ["bag_a", "bag_b"]  # negative positions too
    assert load_table(p).names == ["bag_a", "bag_b"]  # 'bag_a' sits in a text column: the first row is data
    q = _write(tmp_path / "q.csv", ["1,bag_a,x0", "0,bag_b,1.0"])
    with pytest.raises(DataFormatError, match="pass header=False"):
        load_table(q)  # text above a number reads as a header; the error says how to read it as data


def test_named_columns_any_order_and_label_names(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "named.csv",
        [
            "f0,diagnosis,slide_id,f1,patient",
            "1,tumor,s1,2,p1",
            "3,tumor,s1,4,p1",
            "5,benign,s2,6,p2",
            "7,benign,s3,8,p2",
        ],
    )
    ds = load_table(p, label_column="diagnosis", group_column="patient")
    assert ds.names == ["s1", "s2", "s3"]  # slide_id detected as the bag column
    assert ds.labels.tolist() == [1, 0, 0]  # lexicographic: benign = 0, tumor = 1
    assert ds.label_values == ["benign", "tumor"] and ds.class_names == ["benign", "tumor"]
    assert ds.groups == ["p1", "p2", "p2"]
    np.testing.assert_allclose(ds[0].x.numpy(), [[1, 2], [3, 4]])  # features = every other column, in order
    by_position = load_table(p, bag_column=2, label_column=1, feature_columns=[3], group_column=4)
    assert by_position.num_features == 1 and by_position.labels.tolist() == [1, 0, 0]
    named = load_table(p, label_column="diagnosis", class_names=["B", "M"], feature_columns=["f0", "f1"])
    assert named.class_names == ["B", "M"] and named.label_values == ["benign", "tumor"]
    assert named.groups == ["p1", "p2", "p2"]  # 'patient' is a usual group name
    assert load_table(p, label_column="diagnosis", group_column=None, feature_columns=["f0", "f1"]).groups is None
    with pytest.raises(DataFormatError, match=r"line 2, column 5 \('patient'\): 'p1' is not a number"):
        load_table(p, label_column="diagnosis", group_column=None)  # no group: 'patient' would be a feature


@pytest.mark.parametrize(
    ("values", "codes", "label_values"),
    [
        (["0", "7", "7"], [0, 1, 1], [0, 7]),
        (["-1", "+1", "1.0"], [0, 1, 1], [-1, 1]),
        (["2", "5", "3"], [0, 2, 1], [2, 3, 5]),
        (["b", "a", "10"], [2, 1, 0], ["10", "a", "b"]),  # not all numbers: strings, lexicographic
    ],
)
def test_label_values_are_mapped_and_kept(tmp_path: Path, values, codes, label_values) -> None:
    lines = ["bag_id,label,f"] + [f"b{i},{v},{i}" for i, v in enumerate(values)]
    ds = load_table(_write(tmp_path / "l.csv", lines))
    assert ds.labels.tolist() == codes and ds.label_values == label_values
    assert ds.num_classes == len(label_values)
    assert [ds.label_values[c] for c in ds.labels] == [label_values[c] for c in codes]
    pinned = load_table(tmp_path / "l.csv", label_values=list(reversed(label_values)))
    assert pinned.labels.tolist() == [len(label_values) - 1 - c for c in codes]


def test_overlapping_roles_are_errors(tmp_path: Path) -> None:
    p = _write(tmp_path / "o.csv", ["bag_id,label,f0,f1", "a,0,1,2", "b,1,3,4"])
    with pytest.raises(ValueError, match="column 'label' is given both as the label column and as the feature column"):
        load_table(p, feature_columns=["label", "f0"])
    with pytest.raises(ValueError, match="column 'f0' is given both as the label column and as the bag column"):
        load_table(p, bag_column="f0", label_column=2)
    with pytest.raises(ValueError, match="feature column 'f0' is listed twice"):
        load_table(p, feature_columns=["f0", "f0"])
    with pytest.raises(
        DataFormatError, match=r"no feature column 'f9'; the header has \['bag_id', 'label', 'f0', 'f1'\]"
    ):
        load_table(p, feature_columns=["f9"])
    with pytest.raises(DataFormatError, match="label column 7 does not exist"):
        load_table(p, label_column=7)


def test_non_numeric_feature_column_names_column_line_value(tmp_path: Path) -> None:
    p = _write(tmp_path / "s.csv", ["bag_id,label,notes,f0", "a,0,1.5,2", "a,0,seen twice,3"])
    with pytest.raises(DataFormatError, match=r"s.csv, line 3, column 3 \('notes'\): 'seen twice' is not a number"):
        load_table(p)
    assert load_table(p, feature_columns=["f0"]).num_features == 1


def test_line_numbers_skip_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_text("bag_id,label,f0\n\na,0,1\n\n\na,0,x\n")
    with pytest.raises(DataFormatError, match=r"b.csv, line 6, column 3"):
        load_table(p)


def test_unlabeled_table(tmp_path: Path) -> None:
    p = _write(tmp_path / "u.csv", ["bag_id,f0,f1", "a,1,2", "b,3,4", "a,5,6"])
    ds = load_table(p)
    assert not ds.has_labels and ds.labels.tolist() == [-1, -1]
    assert ds.label_values is None and "unlabeled" in repr(ds)
    with pytest.raises(ValueError, match=r"dataset 'u' is unlabeled .* number of classes is unknown"):
        _ = ds.num_classes
    with pytest.raises(ValueError, match="unlabeled"):
        ds.class_counts()
    with pytest.raises(ValueError, match=r"training set \('u'\) is unlabeled: none of its 2 bags has a label"):
        check_trainable(ds)
    sub = ds.subset([1])
    assert not sub.has_labels and sub.names == ["b"] and sub[0].label == -1
    # with the model's classes the unlabeled bags know K (e.g. to predict)
    k = load_table(p, num_classes=3)
    assert k.num_classes == 3 and k.label_values == [0, 1, 2] and not k.has_labels
    # label_column=None ignores a label column that is there
    q = _write(tmp_path / "q.csv", ["bag_id,label,f0", "a,0,1", "b,1,2"])
    assert not load_table(q, label_column=None, feature_columns=["f0"]).has_labels


def test_empty_label_cells(tmp_path: Path) -> None:
    all_empty = _write(tmp_path / "e.csv", ["bag_id,label,f0", "a,,1", "b,nan,2"])
    assert not load_table(all_empty).has_labels
    mixed = _write(tmp_path / "m.csv", ["bag_id,label,f0", "a,1,1", "b,,2"])
    with pytest.raises(DataFormatError, match=r"bag 'b' has no label, but other bags do \(e.g. 'a' = 1\)"):
        load_table(mixed)
    within = _write(tmp_path / "w.csv", ["bag_id,label,f0", "a,1,1", "a,,2"])
    with pytest.raises(DataFormatError, match=r"bag a has rows with different labels \['\(empty\)', 1\]"):
        load_table(within)


def test_split_and_group_columns(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "sg.csv",
        ["bag_id,label,split,case_id,f0", "a,0,train,c1,1", "b,1,train,c1,2", "c,1,test,c2,3", "a,0,train,c1,4"],
    )
    ds = load_table(p)
    assert ds.splits == ["train", "train", "test"] and ds.groups == ["c1", "c1", "c2"]
    assert ds.num_features == 1
    assert split_indices(ds, "train").tolist() == [0, 1]
    test = ds.subset(split_indices(ds, "test"))
    assert test.splits == ["test"] and test.groups == ["c2"] and test.label_values == [0, 1]
    with pytest.raises(ValueError, match=r"no bags with split 'val'; its split column holds 'test', 'train'"):
        split_indices(ds, "val")
    with pytest.raises(ValueError, match="dataset 'm' has no split column"):
        split_indices(load_table(_mil(tmp_path / "m.csv")), "train")
    bad = _write(tmp_path / "bad.csv", ["bag_id,label,split,f0", "a,0,train,1", "a,0,test,2"])
    with pytest.raises(DataFormatError, match=r"bag a has rows with different split values \['test', 'train'\]"):
        load_table(bad)
    blank = _write(tmp_path / "blank.csv", ["bag_id,label,patient_id,f0", "a,0,p1,1", "b,0,,2"])
    with pytest.raises(DataFormatError, match=r"blank.csv, line 3: empty group id in column 'patient_id'"):
        load_table(blank)


def test_parquet_roles_and_label_names(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "slide_id": ["s1", "s1", "s2"],
            "label": ["tumor", "tumor", "benign"],
            "case_id": ["c1", "c1", "c2"],
            "f0": [1.0, 2.0, 3.0],
            "note": ["x", "y", "z"],
        }
    )
    p = tmp_path / "t.parquet"
    pq.write_table(table, p)
    with pytest.raises(DataFormatError, match=r"t.parquet, row 1, column 'note': 'x' is not a number"):
        load_table(p)
    ds = load_table(p, feature_columns=["f0"])
    assert ds.names == ["s1", "s2"] and ds.labels.tolist() == [1, 0] and ds.groups == ["c1", "c2"]


def test_semicolon_and_tab_separated_tables_are_detected(tmp_path: Path) -> None:
    # spreadsheets in decimal-comma locales save ';'-separated "CSV"
    semi = _write(tmp_path / "semi.csv", [";".join(str(v) for v in r) for r in MIL_ROWS])
    tab = _write(tmp_path / "tab.csv", ["label\tbag_id\tf0\tf1"] + ["\t".join(str(v) for v in r) for r in MIL_ROWS])
    for path in (semi, tab):
        ds = load_table(path)
        assert ds.names == ["7", "3", "9"] and ds.labels.tolist() == [1, 0, 1], path.name
        np.testing.assert_array_equal(ds[0].x.numpy(), [[0.5, -1.0], [3.25, 4.0]])
    # a comma that is a decimal comma is named as such
    bad = _write(tmp_path / "dec.csv", ["1;7;0,5;1", "0;3;1,5;2"])
    with pytest.raises(DataFormatError, match=r"line 1, column 3: '0,5' is not a number \(a decimal comma\?"):
        load_table(bad)


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)), "looks like a spreadsheet workbook"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "looks like a spreadsheet workbook"),
        (b"label,bag\x00,f0\n1,2,3\n", "looks like a binary file"),
        ("label,bag_id,f0\n1,a,0.5\n".encode("utf-16"), "UTF-16 text"),
    ],
    ids=["xlsx", "xls", "nul", "utf16"],
)
def test_spreadsheets_and_binary_files_are_named(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bags.csv"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=rf"bags.csv: .*{needle}"):
        load_table(path)


def test_headerless_bag_id_first_table_names_the_options(tmp_path: Path) -> None:
    rows = [(f"b{b}", "pos" if b % 2 else "neg", b * 0.1, 1.0) for b in range(6) for _ in range(2)]
    path = _write(tmp_path / "bagfirst.csv", [",".join(str(v) for v in r) for r in rows])
    with pytest.raises(DataFormatError, match=r"in column 1 \(position 0\).*pass --bag-column 0 --label-column 1"):
        load_table(path)
    ds = load_table(path, bag_column=0, label_column=1)
    assert len(ds) == 6 and sorted(set(ds.labels.tolist())) == [0, 1]
    # a table whose first column is not a bag id gets no such suggestion
    rows = [(b % 2, f"b{b}", 0.1) for b in range(6)] + [(1, "b0", 0.2)]
    mixed = _write(tmp_path / "mixed.csv", [",".join(str(v) for v in r) for r in rows])
    with pytest.raises(DataFormatError) as err:
        load_table(mixed)
    assert "different labels" in str(err.value) and "--bag-column" not in str(err.value)


def test_more_usual_column_names_and_the_label_suggestion(tmp_path: Path) -> None:
    lines = ["patient,slide,target,f0,f1"] + [f"p{b // 2},s{b},{b % 2},{b}.5,1" for b in range(4) for _ in range(2)]
    ds = load_table(_write(tmp_path / "usual.csv", lines))
    assert ds.meta["columns"] == {"label": "target", "bag": "slide", "split": None, "group": "patient",
                                  "instance-label": None}  # fmt: skip
    assert ds.num_features == 2 and ds.groups is not None
    # a text column no usual name marks as the label: read as a feature, and the error says how to name it
    lines = ["slide,diagnosis,f0"] + [f"s{b},{'tumour' if b % 2 else 'normal'},0.5" for b in range(4)]
    with pytest.raises(DataFormatError, match=r"'normal' is not a number.*--feature-columns.*--label-column diagnosis"):
        load_table(_write(tmp_path / "diag.csv", lines))
    ds = load_table(tmp_path / "diag.csv", label_column="diagnosis")
    assert ds.label_values == ["normal", "tumour"]
    with pytest.raises(DataFormatError, match=r"no bag column found .*name it with --bag-column NAME"):
        load_table(_write(tmp_path / "nobag.csv", ["id,label,f0", "a,0,1.0"]))
