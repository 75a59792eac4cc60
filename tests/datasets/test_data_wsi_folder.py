"""Whole-slide feature folders (CLAM / TRIDENT layouts): slide ids, case groups, coordinates, float16 features,
validation once per file, manifest column roles, unlabeled manifests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lossattn.datasets.folder as folder_mod
from lossattn.datasets import (
    DataFormatError,
    FeatureFolderDataset,
    Standardizer,
    load_feature_folder,
    read_coords,
    split_indices,
    stratified_group_kfold,
)

h5py = pytest.importorskip("h5py")

D = 16
SLIDES = {  # slide_id: (case_id, label, split, n_patches, format)
    "s1": ("p1", "normal_tissue", "train", 5, "h5"),
    "s2": ("p1", "tumor_tissue", "train", 7, "h5"),
    "s3": ("p2", "tumor_tissue", "test", 4, "pt+h5"),
    "s4": ("p3", "normal_tissue", "test", 6, "pt+patches"),
}


def _features(slide: str) -> np.ndarray:
    n = SLIDES[slide][3]
    rng = np.random.default_rng(int(slide[1:]))
    return rng.normal(size=(n, D)).astype(np.float16)  # CLAM/TRIDENT often store float16


def _coords(slide: str) -> np.ndarray:
    n = SLIDES[slide][3]
    return (np.arange(n * 2).reshape(n, 2) * 256 + int(slide[1:])).astype(np.int32)


def _make_clam(root: Path, manifest_ids: dict[str, str] | None = None) -> Path:
    (root / "h5_files").mkdir(parents=True)
    (root / "pt_files").mkdir()
    (root / "patches").mkdir()
    for s, (_, _, _, _, fmt) in SLIDES.items():
        x = _features(s)
        if fmt in ("h5", "pt+h5"):
            with h5py.File(root / "h5_files" / f"{s}.h5", "w") as f:
                f["features"] = x
                f["coords"] = _coords(s)
        if fmt.startswith("pt"):
            torch.save(torch.from_numpy(x.astype(np.float32)), root / "pt_files" / f"{s}.pt")
        if fmt == "pt+patches":
            with h5py.File(root / "patches" / f"{s}.h5", "w") as f:
                f["coords"] = _coords(s)
    ids = manifest_ids or {}
    lines = ["case_id,slide_id,label,split"] + [
        f"{c},{ids.get(s, s)},{lab},{sp}" for s, (c, lab, sp, _, _) in SLIDES.items()
    ]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_clam_layout_out_of_the_box(tmp_path: Path) -> None:
    ds = load_feature_folder(_make_clam(tmp_path / "clam", {"s1": "s1.svs"}))
    assert ds.names == ["s1.svs", "s2", "s3", "s4"]
    assert [p.relative_to(tmp_path / "clam").as_posix() for p in ds.files] == [
        "h5_files/s1.h5",
        "h5_files/s2.h5",
        "pt_files/s3.pt",
        "pt_files/s4.pt",
    ]
    assert ds.groups == ["p1", "p1", "p2", "p3"]
    assert ds.splits == ["train", "train", "test", "test"]
    assert ds.label_values == ["normal_tissue", "tumor_tissue"] and ds.labels.tolist() == [0, 1, 1, 0]
    assert ds.bag_sizes.tolist() == [5, 7, 4, 6] and ds.instance_shape == (D,)
    for i, s in enumerate(SLIDES):
        bag = ds[i]
        assert bag.x.dtype == torch.float32
        np.testing.assert_array_equal(bag.x.numpy(), _features(s).astype(np.float32))
    assert ds.meta["columns"] == {
        "bag": "slide_id",
        "label": "label",
        "split": "split",
        "group": "case_id",
        "file": None,
    }


def test_coords_are_read_lazily_without_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_feature_folder(_make_clam(tmp_path / "clam"))

    def no_features(*args, **kwargs):
        raise AssertionError("coords() must not read the features")

    monkeypatch.setattr(folder_mod, "read_bag_features", no_features)
    assert ds.has_coords
    for i, s in enumerate(SLIDES):
        c = ds.coords(i)
        assert c.dtype == np.int64 and c.shape == (SLIDES[s][3], 2)
        np.testing.assert_array_equal(c, _coords(s))
    root = tmp_path / "clam"
    assert ds.coords_files[2] == root / "h5_files" / "s3.h5"  # a .pt bag takes its slide's .h5 coordinates
    assert ds.coords_files[3] == root / "patches" / "s4.h5"  # ... or CLAM's patches/ file
    sub = ds.subset([3, 0])
    np.testing.assert_array_equal(sub.coords(0), _coords("s4"))
    assert sub.has_coords
    with pytest.raises(IndexError):
        ds.coords(4)


def test_missing_and_wrong_coords(tmp_path: Path) -> None:
    root = tmp_path / "f"
    root.mkdir()
    np.save(root / "a.npy", np.ones((3, D), np.float32))
    with h5py.File(root / "b.h5", "w") as f:
        f["features"] = np.ones((2, D), np.float32)
        f["coords"] = np.zeros((3, 2), np.int64)  # one row too many
    (root / "manifest.csv").write_text("bag_id,label\na,0\nb,1\n")
    ds = load_feature_folder(root)
    assert ds.coords(0) is None and not ds.has_coords
    with pytest.raises(
        DataFormatError, match=r"bag 'b' .*coordinates 'coords' in .*b.h5 have shape \(3, 2\); expected \(2, 2\)"
    ):
        ds.coords(1)
    plain = load_feature_folder(root, coords_key="xy")
    assert plain.coords(1) is None


def test_npz_and_pt_dict_coords(tmp_path: Path) -> None:
    root = tmp_path / "f"
    root.mkdir()
    np.savez(root / "a.npz", features=np.ones((2, D), np.float32), coords=np.array([[0, 0], [1, 5]]))
    torch.save({"features": torch.ones(1, D), "coords": torch.tensor([[7, 8]])}, root / "b.pt")
    (root / "manifest.csv").write_text("bag_id,label\na,0\nb,1\n")
    ds = load_feature_folder(root)
    assert ds.has_coords
    assert ds.coords(0).tolist() == [[0, 0], [1, 5]] and ds.coords(1).tolist() == [[7, 8]]
    assert ds[0].x.shape == (2, D)  # 'coords' is never mistaken for the features
    assert read_coords(root / "a.npz").dtype == np.int64


def test_validation_runs_once_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_feature_folder(_make_clam(tmp_path / "clam"))
    calls: list[str] = []
    original = FeatureFolderDataset._validate_bag

    def counting(self, i, x, inst):
        calls.append(self.names[i])
        return original(self, i, x, inst)

    monkeypatch.setattr(FeatureFolderDataset, "_validate_bag", counting)
    for _ in range(3):
        ds[0]
    train = ds.subset(split_indices(ds, "train"))
    train[0]
    z = Standardizer().fit(train).transform(ds)
    z[0]
    z[1]
    assert calls == ["s1", "s2"]  # each file once, shared by the dataset, its subset and its standardised view
    # a file that changes on disk is validated again
    path = tmp_path / "clam" / "h5_files" / "s1.h5"
    bad = _features("s1").astype(np.float32)
    bad[2, 3] = np.nan
    with h5py.File(path, "w") as f:
        f["features"] = bad
        f["coords"] = _coords("s1")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(
        DataFormatError, match=r"bag 's1' .*non-finite feature value nan \(instance 2, flat feature 3\)"
    ):
        z[0]


def test_manifest_column_keywords(tmp_path: Path) -> None:
    root = _make_clam(tmp_path / "clam")
    (root / "other.csv").write_text("patient,slide,dx,fold,note\np1,s1,0,a,x\np1,s2,1,a,y\np2,s3,1,b,z\np3,s4,0,b,w\n")
    ds = load_feature_folder(
        root, "other.csv", bag_column="slide", label_column="dx", group_column="patient", split_column="fold"
    )
    assert ds.names == list(SLIDES) and ds.groups == ["p1", "p1", "p2", "p3"] and ds.splits == ["a", "a", "b", "b"]
    assert ds.labels.tolist() == [0, 1, 1, 0]
    by_position = load_feature_folder(root, "other.csv", bag_column=1, label_column=2, group_column=0)
    assert by_position.groups == ds.groups and by_position.splits is None
    with pytest.raises(ValueError, match="column 'slide' is given both as the bag column and as the group column"):
        load_feature_folder(root, "other.csv", bag_column="slide", group_column="slide")
    with pytest.raises(DataFormatError, match=r"no label column 'diagnosis'; the header has"):
        load_feature_folder(root, "other.csv", bag_column="slide", label_column="diagnosis")


def test_split_filter_keeps_the_whole_manifest_label_mapping(tmp_path: Path) -> None:
    root = _make_clam(tmp_path / "clam")
    test = load_feature_folder(root, split="test")
    assert test.names == ["s3", "s4"] and test.label_values == ["normal_tissue", "tumor_tissue"]
    assert test.labels.tolist() == [1, 0] and test.groups == ["p2", "p3"]


def test_unlabeled_manifest_and_mixed_labels(tmp_path: Path) -> None:
    root = _make_clam(tmp_path / "clam")
    (root / "nolabel.csv").write_text("slide_id,case_id\ns1,p1\ns3,p2\n")
    ds = load_feature_folder(root, "nolabel.csv")
    assert not ds.has_labels and ds.labels.tolist() == [-1, -1] and ds.groups == ["p1", "p2"]
    assert "unlabeled" in repr(ds) and ds.subset([1]).names == ["s3"]
    ignored = load_feature_folder(root, label_column=None)  # a label column that is there, ignored on request
    assert not ignored.has_labels and len(ignored) == 4
    with pytest.raises(ValueError, match="is unlabeled"):
        _ = ds.num_classes
    (root / "mixed.csv").write_text("slide_id,label\ns1,tumor\ns3,\n")
    with pytest.raises(DataFormatError, match=r"mixed.csv: bag 's3' has no label, but other bags do"):
        load_feature_folder(root, "mixed.csv")
    (root / "nogroup.csv").write_text("slide_id,case_id,label\ns1,p1,0\ns3,,1\n")
    with pytest.raises(DataFormatError, match=r"nogroup.csv, line 3: empty group id in column 'case_id' for bag 's3'"):
        load_feature_folder(root, "nogroup.csv")


def test_grouped_folds_on_a_folder(tmp_path: Path) -> None:
    ds = load_feature_folder(_make_clam(tmp_path / "clam"))
    folds = stratified_group_kfold(ds, n_splits=3, seed=0)  # groups taken from the dataset
    groups = np.asarray(ds.groups)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(ValueError, match="4 folds need at least 4 groups, but the 4 bags belong to only 3"):
        stratified_group_kfold(ds, n_splits=4)


def test_float16_h5_is_read_as_float32_without_an_extra_copy(tmp_path: Path) -> None:
    root = tmp_path / "f"
    (root / "h5_files").mkdir(parents=True)
    x16 = np.random.default_rng(0).normal(size=(300, D)).astype(np.float16)
    x64 = np.random.default_rng(1).normal(size=(200, D))
    for name, x in (("half", x16), ("double", x64)):
        with h5py.File(root / "h5_files" / f"{name}.h5", "w") as f:
            f["features"] = x
    (root / "manifest.csv").write_text("bag_id,label\nhalf,0\ndouble,1\n")
    ds = load_feature_folder(root)
    a, b = ds[0].x, ds[1].x
    assert a.dtype == b.dtype == torch.float32 and a.is_contiguous()
    np.testing.assert_array_equal(a.numpy(), x16.astype(np.float32))
    np.testing.assert_array_equal(b.numpy(), x64.astype(np.float32))
