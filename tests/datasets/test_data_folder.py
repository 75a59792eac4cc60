"""load_feature_folder: per-bag .pt/.npy/.npz/.h5 files + CSV manifest, lazy loading, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lossattn.datasets import (
    BucketBatchSampler,
    DataFormatError,
    DataNotFoundError,
    FeatureFolderDataset,
    Standardizer,
    collate_bags,
    load_feature_folder,
)

D = 6
RNG = np.random.default_rng(0)
FEATS = {
    "npy_bag": RNG.normal(size=(3, D)).astype(np.float32),
    "npz_bag": RNG.normal(size=(4, D)).astype(np.float32),
    "h5_bag": RNG.normal(size=(2, D)).astype(np.float32),
    "pt_tensor": RNG.normal(size=(5, D)).astype(np.float32),
    "pt_dict": RNG.normal(size=(1, D)).astype(np.float32),
}
INST = {"npz_bag": np.array([0, 1, 1, 0]), "h5_bag": np.array([1, -1]), "pt_dict": np.array([1])}
LABELS = {"npy_bag": 0, "npz_bag": 1, "h5_bag": 1, "pt_tensor": 0, "pt_dict": 1}
SPLITS = {"npy_bag": "train", "npz_bag": "train", "h5_bag": "test", "pt_tensor": "train", "pt_dict": "test"}


def _write_bag(
    folder: Path, bag: str, feats: np.ndarray, inst: np.ndarray | None = None, kind: str | None = None
) -> Path:
    kind = kind or bag.split("_")[0]
    if kind == "npy":
        p = folder / f"{bag}.npy"
        np.save(p, feats)
    elif kind == "npz":
        p = folder / f"{bag}.npz"
        extra = {} if inst is None else {"instance_labels": inst}
        np.savez(p, features=feats, **extra)
    elif kind == "h5":
        h5py = pytest.importorskip("h5py")
        p = folder / "h5_files" / f"{bag}.h5"  # CLAM layout subfolder
        p.parent.mkdir(exist_ok=True)
        with h5py.File(p, "w") as f:
            f["features"] = feats
            f["coords"] = np.zeros((len(feats), 2))
            if inst is not None:
                f["instance_labels"] = inst
    else:
        p = folder / f"{bag}.pt"
        if bag == "pt_tensor":
            torch.save(torch.from_numpy(feats), p)
        else:
            payload = {"features": torch.from_numpy(feats)}
            if inst is not None:
                payload["instance_labels"] = torch.from_numpy(inst)
            torch.save(payload, p)
    return p


def _make_folder(folder: Path, with_split: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for bag, feats in FEATS.items():
        _write_bag(folder, bag, feats, INST.get(bag))
    header = "bag_id,label,split" if with_split else "bag_id,label"
    lines = [header] + [f"{b},{LABELS[b]},{SPLITS[b]}" if with_split else f"{b},{LABELS[b]}" for b in FEATS]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_round_trip_every_format(tmp_path: Path) -> None:
    ds = load_feature_folder(_make_folder(tmp_path / "f"))
    assert isinstance(ds, FeatureFolderDataset)
    assert len(ds) == 5 and ds.names == list(FEATS)
    assert ds.labels.tolist() == [LABELS[b] for b in FEATS]
    assert ds.bag_sizes.tolist() == [3, 4, 2, 5, 1]
    assert ds.num_instances == 15 and ds.num_features == D and ds.instance_shape == (D,)
    assert ds.num_classes == 2 and ds.class_counts().tolist() == [2, 3]
    assert ds.has_instance_labels
    assert ds.splits == [SPLITS[b] for b in FEATS]
    assert ds.name == "f"
    for i, b in enumerate(FEATS):
        bag = ds[i]
        assert bag.name == b and bag.index == i and bag.label == LABELS[b]
        assert bag.x.dtype == torch.float32
        np.testing.assert_allclose(bag.x.numpy(), FEATS[b])
        expected = INST.get(b, np.full(len(FEATS[b]), -1))
        assert bag.instance_labels.tolist() == expected.tolist()
    assert ds.instance_labels.shape == (15,)


def test_split_filter_subset_and_loader(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "f")
    test = load_feature_folder(folder, split="test")
    assert test.names == ["h5_bag", "pt_dict"]
    ds = load_feature_folder(folder)
    assert ds.split_indices("train").tolist() == [0, 1, 3]
    sub = ds.subset(ds.split_indices("train"))
    assert isinstance(sub, FeatureFolderDataset)
    assert sub.names == ["npy_bag", "npz_bag", "pt_tensor"] and sub[2].index == 2
    np.testing.assert_allclose(sub[1].x.numpy(), FEATS["npz_bag"])
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(ds, 2, seed=0), collate_fn=collate_bags)
    names = [n for batch in loader for n in batch.names]
    assert sorted(names) == sorted(FEATS)
    with pytest.raises(DataFormatError, match="no bag has split 'val'"):
        load_feature_folder(folder, split="val")


def test_standardizer_on_lazy_dataset(tmp_path: Path) -> None:
    ds = load_feature_folder(_make_folder(tmp_path / "f"))
    train = ds.subset(ds.split_indices("train"))
    std = Standardizer().fit(train)
    x = np.concatenate([FEATS[b] for b in ("npy_bag", "npz_bag", "pt_tensor")]).astype(np.float64)
    np.testing.assert_allclose(std.mean.numpy(), x.mean(0), rtol=1e-5, atol=1e-6)
    z = std.transform(ds)
    assert isinstance(z, FeatureFolderDataset)
    np.testing.assert_allclose(z[4].x.numpy(), (FEATS["pt_dict"] - x.mean(0)) / x.std(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds[4].x.numpy(), FEATS["pt_dict"])  # original untouched


def test_lazy_loading_validates_each_bag_on_access(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "f")
    np.save(folder / "npy_bag.npy", np.array([[1.0] * D, [np.nan] * D], dtype=np.float32))
    ds = load_feature_folder(folder)  # opening does not read the bags
    assert ds[1].x.shape == (4, D)
    with pytest.raises(
        DataFormatError,
        match=r"bag 'npy_bag' \(index 0, file .*npy_bag.npy\): non-finite feature value nan \(instance 1",
    ):
        ds[0]


def test_empty_bag_and_inconsistent_width(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "f")
    np.save(folder / "npy_bag.npy", np.zeros((0, D), np.float32))
    ds = load_feature_folder(folder)
    with pytest.raises(DataFormatError, match=r"bag 'npy_bag' .*has no instances"):
        ds[0]
    folder2 = _make_folder(tmp_path / "g")
    np.savez(folder2 / "npz_bag.npz", features=np.ones((2, D + 1), np.float32))
    ds2 = load_feature_folder(folder2)
    with pytest.raises(DataFormatError, match=r"bag 'npz_bag' .*instances of shape \(7,\), but other bags have \(6,\)"):
        _ = ds2.bag_sizes
    ds3 = load_feature_folder(folder2)
    _ = ds3[0]
    with pytest.raises(DataFormatError, match="inconsistent feature widths"):
        ds3[1]


def test_instance_label_errors(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "f")
    np.savez(folder / "npz_bag.npz", features=np.ones((2, D), np.float32), instance_labels=np.array([0, 1, 1]))
    with pytest.raises(DataFormatError, match="3 instance labels for 2 instances"):
        load_feature_folder(folder)[1]


def test_manifest_errors(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "f")
    m = folder / "manifest.csv"
    with pytest.raises(DataNotFoundError, match=r"manifest not found: .*other.csv"):
        load_feature_folder(folder, manifest="other.csv")
    m.write_text("bag_id,label\nnpy_bag,0\nghost,1\n")
    with pytest.raises(DataNotFoundError, match=r"manifest.csv, line 3: no file for bag 'ghost'; expected .*ghost"):
        load_feature_folder(folder)
    m.write_text("bag_id,label,file\nnpy_bag,0,nowhere/x.npy\n")
    with pytest.raises(DataNotFoundError, match=r"line 2: bag 'npy_bag': file .*nowhere/x.npy does not exist"):
        load_feature_folder(folder)
    m.write_text("bag_id,label,file\nrenamed,0,npy_bag.npy\n")
    assert load_feature_folder(folder).names == ["renamed"]
    m.write_text("bag,label\nnpy_bag,0\n")
    with pytest.raises(DataFormatError, match=r"no bag column found \(looked for 'bag_id', 'slide_id'\)"):
        load_feature_folder(folder)
    assert load_feature_folder(folder, bag_column="bag").names == ["npy_bag"]
    m.write_text("bag_id,label\nnpy_bag,tumour\n")
    tumour = load_feature_folder(folder)  # any label values: one class here
    assert tumour.labels.tolist() == [0] and tumour.label_values == ["tumour"] and tumour.num_classes == 1
    assert load_feature_folder(folder, class_names=["normal", "tumour"]).labels.tolist() == [1]
    m.write_text("bag_id,label\nnpy_bag,-1\n")
    minus = load_feature_folder(folder)  # the -1/+1 convention
    assert minus.labels.tolist() == [0] and minus.label_values == [-1, 1] and minus.num_classes == 2
    m.write_text("bag_id,label\nnpy_bag,0\nnpz_bag,2\n")
    with pytest.raises(DataFormatError, match=r"bag 'npz_bag' has label 2, which is not one of label_values \[0, 1\]"):
        load_feature_folder(folder, label_values=[0, 1])
    m.write_text("bag_id,label\nnpy_bag,0\nnpy_bag,1\n")
    with pytest.raises(DataFormatError, match="listed twice"):
        load_feature_folder(folder)
    m.write_text("bag_id,label\nnpy_bag,0,extra\n")
    with pytest.raises(DataFormatError, match="line 2: ragged row"):
        load_feature_folder(folder)
    m.write_text("bag_id,label\n")
    with pytest.raises(DataFormatError, match="lists no bags"):
        load_feature_folder(folder)
    m.write_text("bag_id,label\nnpy_bag,0\n")
    with pytest.raises(DataFormatError, match="no 'split' column"):
        load_feature_folder(folder, split="train")


@pytest.mark.parametrize("bag", ["npy_bag", "npz_bag", "pt_dict", "h5_bag"])
def test_corrupt_files(tmp_path: Path, bag: str) -> None:
    folder = _make_folder(tmp_path / "f")
    path = next(p for p in folder.rglob(f"{bag}.*"))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    ds = load_feature_folder(folder)
    i = ds.names.index(bag)
    with pytest.raises(DataFormatError, match=rf"{path.name}: cannot read the bag file, it is truncated or corrupt"):
        ds[i]


def test_one_dimensional_and_ambiguous_files(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "f")
    np.save(folder / "npy_bag.npy", np.ones(D, np.float32))
    with pytest.raises(DataFormatError, match=r"features have shape \(6,\); expected \(n_instances, n_features\)"):
        load_feature_folder(folder)[0]
    np.savez(folder / "npz_bag.npz", a=np.ones((2, D)), b=np.ones((2, D)))
    with pytest.raises(DataFormatError, match="cannot tell which entry holds the features"):
        load_feature_folder(folder)[1]
    assert load_feature_folder(folder, feature_key="b")[1].x.shape == (2, D)


def test_manifest_by_name_and_features_in_another_subfolder(tmp_path: Path) -> None:
    (tmp_path / "feats").mkdir()
    for b in range(3):
        torch.save(torch.full((2 + b, 4), float(b)), tmp_path / "feats" / f"s{b}.pt")
    (tmp_path / "labels.csv").write_text("slide,diagnosis\ns0,LUAD\ns1,LUSC\ns2,LUAD\n")
    with pytest.raises(DataNotFoundError, match=r"manifest.csv.*CSV files in the folder: labels.csv"):
        load_feature_folder(tmp_path)
    ds = load_feature_folder(tmp_path, "labels.csv", bag_column="slide", label_column="diagnosis")
    assert ds.names == ["s0", "s1", "s2"] and ds.bag_sizes.tolist() == [2, 3, 4]
    assert ds[2].x.eq(2.0).all() and ds.label_values == ["LUAD", "LUSC"]
    # the same bag in two other subfolders: ambiguous, named
    (tmp_path / "feats_b").mkdir()
    torch.save(torch.zeros(2, 4), tmp_path / "feats_b" / "s0.pt")
    with pytest.raises(DataFormatError, match=r"bag 's0' has a file in several subfolders \(feats, feats_b\)"):
        load_feature_folder(tmp_path, "labels.csv", bag_column="slide", label_column="diagnosis")


def test_manifest_ids_and_file_names_with_their_extension(tmp_path: Path) -> None:
    # manifests often list "s0.h5" (the file) where the folder keeps h5_files/s0.h5
    h5py = pytest.importorskip("h5py")
    (tmp_path / "h5_files").mkdir()
    for b in range(3):
        with h5py.File(tmp_path / "h5_files" / f"s{b}.h5", "w") as f:
            f["features"] = np.full((2 + b, 4), float(b), dtype=np.float32)
    (tmp_path / "manifest.csv").write_text("slide_id,label\ns0.h5,0\ns1.h5,1\ns2,0\n")
    ds = load_feature_folder(tmp_path)
    assert ds.bag_sizes.tolist() == [2, 3, 4] and ds[1].x.eq(1.0).all()
    # a file column with bare names is looked up in the usual subfolders too
    (tmp_path / "manifest.csv").write_text("slide_id,label,file\na,0,s2.h5\nb,1,s0.h5\nc,0,h5_files/s1.h5\n")
    ds = load_feature_folder(tmp_path, file_column="file")
    assert ds.bag_sizes.tolist() == [4, 2, 3]
    (tmp_path / "manifest.csv").write_text("slide_id,label\ns0.h5,0\ns7.h5,1\n")
    with pytest.raises(DataNotFoundError, match=r"line 3: no file for bag 's7.h5'") as err:
        load_feature_folder(tmp_path)
    assert "with or without the extension" in err.value.hint
