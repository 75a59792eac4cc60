"""Dataset names: the catalogue's list, the one alias table, resolve_dataset_name, D.load errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lossattn.datasets as D
from lossattn.datasets.catalog import ALIASES, CATALOG, canonical_name, get_spec

ALL_NAMES = [
    "musk1",
    "musk2",
    "fox",
    "tiger",
    "elephant",
    "mnist-bags",
    "mnist-bags-multi",
    "cifar10-bags",
    "digits-bags",
    "digits-bags-multi",
    "cifar10-images",
    "tinyimagenet-images",
]


def test_list_datasets_has_every_name(tmp_path: Path) -> None:
    assert D.list_datasets() == ALL_NAMES == D.dataset_names()
    kinds = {n: D.dataset_info(n, root=tmp_path).kind for n in ALL_NAMES}
    assert kinds["cifar10-images"] == kinds["tinyimagenet-images"] == "images"
    assert kinds["mnist-bags-multi"] == "generated" and kinds["digits-bags-multi"] == "embedded"
    tiny = D.dataset_info("tiny-imagenet", root=tmp_path)
    assert tiny.name == "tinyimagenet-images" and not tiny.present and not tiny.fetchable
    assert tiny.usage == "lossattn.datasets.load_tinyimagenet('train')"
    (tmp_path / "tiny-imagenet-200").mkdir()
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").write_text("n01443537\n")
    assert D.dataset_info("tinyimagenet-images", root=tmp_path).present
    assert D.dataset_info("cifar10-images", root=tmp_path).fetchable


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("mnist", "mnist-bags"),
        ("MNIST_bags", "mnist-bags"),
        ("mnist-multi", "mnist-bags-multi"),
        ("mnist_bags_multiclass", "mnist-bags-multi"),
        ("digits", "digits-bags"),
        ("Digits-Multi", "digits-bags-multi"),
        ("cifar10", "cifar10-bags"),
        ("cifar-10", "cifar10-bags"),
        ("cifar_10_bags", "cifar10-bags"),
        ("cifar10_images", "cifar10-images"),
        ("tiny-imagenet-200", "tinyimagenet-images"),
        ("TinyImageNet", "tinyimagenet-images"),
        (" FOX ", "fox"),
    ],
)
def test_one_alias_table(spelling: str, name: str) -> None:
    assert canonical_name(spelling) == name
    assert get_spec(spelling).name == name
    assert D.resolve_dataset_name(spelling) == name


def test_aliases_point_at_catalogue_names() -> None:
    for alias, target in ALIASES.items():
        assert target in CATALOG and alias == alias.lower().replace("_", "-") and alias not in CATALOG


def test_unknown_names_list_every_valid_name() -> None:
    for call in (lambda: D.load("nope"), lambda: get_spec("nope"), lambda: D.dataset_info("nope")):
        with pytest.raises(ValueError, match="unknown dataset 'nope'; valid names: musk1, musk2") as info:
            call()
        for n in ALL_NAMES:
            assert n in str(info.value)
        assert isinstance(info.value, KeyError) and isinstance(info.value, D.UnknownDatasetError)
    with pytest.raises(ValueError, match="mnist-bags is not a fixed benchmark; its bags are generated"):
        D.load("mnist")
    with pytest.raises(ValueError, match="cifar10-images is an image classification set.*load_cifar10"):
        D.load("cifar10-images")


def test_resolve_dataset_name_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "mine.csv"
    table.write_text("bag_id,label,f\na,0,1\n")
    assert D.resolve_dataset_name(str(table)) == str(table.resolve())
    monkeypatch.chdir(tmp_path)
    assert D.resolve_dataset_name("mine.csv") == str(table.resolve())
    (tmp_path / "fox").mkdir()  # a data root holds a folder named like the benchmark: the name wins
    assert D.resolve_dataset_name("fox") == "fox"
    assert D.resolve_dataset_name(f".{os.sep}fox") == str((tmp_path / "fox").resolve())
    with pytest.raises(ValueError, match="no file or folder 'missing.csv' exists"):
        D.resolve_dataset_name("missing.csv")
    with pytest.raises(ValueError, match="no file or folder './nothing' exists"):
        D.resolve_dataset_name("./nothing")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: .*tinyimagenet-images, or the path"):
        D.resolve_dataset_name("imagenet")
    with pytest.raises(ValueError, match="empty dataset name"):
        D.resolve_dataset_name("  ")
