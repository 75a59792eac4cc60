"""Tiny ImageNet loader on a small tree generated in the exact standard layout; clear errors for broken trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lossattn.datasets.errors import DataFormatError, DataNotFoundError
from lossattn.datasets.tinyimagenet import (
    TINYIMAGENET_URL,
    find_tinyimagenet,
    load_tinyimagenet,
    make_synthetic_tinyimagenet,
)

WNIDS = ["n02124075", "n04067472", "n01443537"]  # label order = wnids.txt order, not sorted order
COLOURS = {0: (200, 10, 10), 1: (10, 200, 10), 2: (10, 10, 200)}


def _img(path: Path, colour, mode: str = "RGB", size=(64, 64)) -> None:
    if mode == "L":
        Image.new("L", size, colour[0]).save(path, format="JPEG", quality=100)
    else:
        Image.new("RGB", size, colour).save(path, format="JPEG", quality=100)


def make_tree(root: Path) -> Path:
    """tiny-imagenet-200/ with 3 classes x 2 training images and 4 validation images (one grayscale)."""
    top = root / "tiny-imagenet-200"
    (top / "val" / "images").mkdir(parents=True)
    (top / "test" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (top / "words.txt").write_text("n02124075\tEgyptian cat\nn04067472\treel\nn99999999\tunused\n")
    for label, wnid in enumerate(WNIDS):
        img_dir = top / "train" / wnid / "images"
        img_dir.mkdir(parents=True)
        lines = []
        for k in (1, 0):  # written out of order: the loader sorts by file name
            name = f"{wnid}_{k}.JPEG"
            _img(img_dir / name, COLOURS[label])
            lines.append(f"{name}\t{k}\t{2 * k}\t{10 + k}\t{20 + k}\n")
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(lines))
    ann = []
    for k, (label, mode) in enumerate([(2, "RGB"), (0, "L"), (1, "RGB"), (0, "RGB")]):
        name = f"val_{k}.JPEG"
        _img(top / "val" / "images" / name, COLOURS[label], mode)
        ann.append(f"{name}\t{WNIDS[label]}\t{k}\t0\t63\t{60 + k}\n")
    (top / "val" / "val_annotations.txt").write_text("".join(ann))
    _img(top / "test" / "images" / "test_0.JPEG", (0, 0, 0))
    return top


def test_train_split(tmp_path: Path) -> None:
    top = make_tree(tmp_path)
    tr = load_tinyimagenet("train", tmp_path)
    assert tr.root == top and tr.split == "train" and len(tr) == 6 and tr.num_classes == 3
    assert tr.wnids == WNIDS
    assert tr.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.name for p in tr.files[:2]] == ["n02124075_0.JPEG", "n02124075_1.JPEG"]
    assert tr.boxes.dtype == np.int64 and tr.boxes[:2].tolist() == [[0, 0, 10, 20], [1, 2, 11, 21]]
    assert tr.class_names == ["Egyptian cat", "reel", "n01443537"]  # wnid where words.txt has no name
    imgs = tr[[0, 5]]
    assert imgs.shape == (2, 3, 64, 64) and imgs.dtype == np.uint8
    assert np.abs(imgs[0].reshape(3, -1).mean(1) - COLOURS[0]).max() < 4  # JPEG q100 of a flat colour
    assert np.abs(imgs[1].reshape(3, -1).mean(1) - COLOURS[2]).max() < 4
    sub = tr.subset([5, 0])
    assert sub.labels.tolist() == [2, 0] and sub.boxes.tolist() == [[1, 2, 11, 21], [0, 0, 10, 20]]


def test_val_split_labels_boxes_and_grayscale(tmp_path: Path) -> None:
    make_tree(tmp_path)
    va = load_tinyimagenet("val", tmp_path)
    assert [p.name for p in va.files] == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG", "val_3.JPEG"]
    assert va.labels.tolist() == [2, 0, 1, 0]
    assert va.boxes.tolist() == [[0, 0, 63, 60], [1, 0, 63, 61], [2, 0, 63, 62], [3, 0, 63, 63]]
    gray = va.image(1)  # a grayscale JPEG comes back as 3 equal channels
    assert gray.shape == (3, 64, 64) and (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()
    assert va.decode_all().shape == (4, 3, 64, 64)


def test_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = make_tree(tmp_path / "data")
    assert find_tinyimagenet(top) == top  # the folder itself
    assert find_tinyimagenet(tmp_path / "data") == top  # a data root above it
    nested = tmp_path / "other" / "tinyimagenet"
    nested.mkdir(parents=True)
    top.rename(nested / "tiny-imagenet-200")
    assert find_tinyimagenet(tmp_path / "other") == nested / "tiny-imagenet-200"
    monkeypatch.setenv("LOSSATTN_DATA", str(tmp_path / "other"))
    assert len(load_tinyimagenet("val")) == 4
    with pytest.raises(DataNotFoundError) as err:
        find_tinyimagenet(tmp_path / "nowhere")
    assert "wnids.txt" in str(err.value) and TINYIMAGENET_URL in str(err.value)


def test_bad_split(tmp_path: Path) -> None:
    make_tree(tmp_path)
    with pytest.raises(ValueError, match="'train' or 'val'"):
        load_tinyimagenet("test", tmp_path)


def _break(top: Path, path: str, text: str | None) -> None:
    p = top / path
    if text is None:
        p.unlink()
    else:
        p.write_text(text)


@pytest.mark.parametrize(
    ("split", "path", "text", "error", "match"),
    [
        ("train", "wnids.txt", "", DataFormatError, "holds no class ids"),
        ("train", "wnids.txt", "n02124075\nn02124075\n", DataFormatError, "duplicate class ids"),
        ("train", "wnids.txt", "n02124075 extra\n", DataFormatError, r"wnids.txt:1: expected one WordNet id"),
        ("train", "wnids.txt", "n02124075\nn00000001\n", DataNotFoundError, r"train/n00000001/images is missing"),
        ("train", "train/n04067472/n04067472_boxes.txt", None, DataNotFoundError, "box file of class n04067472"),
        (
            "train",
            "train/n04067472/n04067472_boxes.txt",
            "n04067472_0.JPEG\t0\t0\t10\n",
            DataFormatError,
            r"n04067472_boxes.txt:1: expected 5 tab-separated fields",
        ),
        (
            "train",
            "train/n04067472/n04067472_boxes.txt",
            "n04067472_0.JPEG\t0\t0\t10\tx\nn04067472_1.JPEG\t0\t0\t1\t1\n",
            DataFormatError,
            r"n04067472_boxes.txt:1: box .* is not four integers",
        ),
        (
            "train",
            "train/n04067472/n04067472_boxes.txt",
            "n04067472_0.JPEG\t0\t0\t64\t10\nn04067472_1.JPEG\t0\t0\t1\t1\n",
            DataFormatError,
            r"box \(0, 0, 64, 10\) is not inside the 64x64 image",
        ),
        (
            "train",
            "train/n04067472/n04067472_boxes.txt",
            "n04067472_0.JPEG\t5\t0\t4\t10\nn04067472_1.JPEG\t0\t0\t1\t1\n",
            DataFormatError,
            "is not inside",  # inverted
        ),
        (
            "train",
            "train/n04067472/n04067472_boxes.txt",
            "n04067472_0.JPEG\t0\t0\t1\t1\n",
            DataFormatError,
            r"1 image\(s\) have no line in n04067472_boxes.txt",
        ),
        (
            "train",
            "train/n04067472/n04067472_boxes.txt",
            "n04067472_0.JPEG\t0\t0\t1\t1\nn04067472_1.JPEG\t0\t0\t1\t1\nn04067472_9.JPEG\t0\t0\t1\t1\n",
            DataFormatError,
            r"lists 1 image\(s\) missing from .*n04067472_9",
        ),
        (
            "train",
            "train/n04067472/n04067472_boxes.txt",
            "n04067472_0.JPEG\t0\t0\t1\t1\nn04067472_0.JPEG\t0\t0\t1\t1\n",
            DataFormatError,
            "listed twice",
        ),
        ("val", "val/val_annotations.txt", None, DataNotFoundError, "validation annotations"),
        ("val", "val/val_annotations.txt", "val_0.JPEG\tn02124075\t0\t0\t1\n", DataFormatError, "expected 6"),
        (
            "val",
            "val/val_annotations.txt",
            "val_0.JPEG\tn11111111\t0\t0\t1\t1\n",
            DataFormatError,
            r"val_annotations.txt:1: class 'n11111111' of val_0.JPEG is not in wnids.txt",
        ),
        (
            "val",
            "val/val_annotations.txt",
            "val_0.JPEG\tn02124075\t0\t0\t1\t1\n",
            DataFormatError,
            r"3 image\(s\) have no line in val_annotations.txt",
        ),
    ],
)
def test_broken_trees_raise_clear_errors(tmp_path: Path, split, path, text, error, match) -> None:
    top = make_tree(tmp_path)
    _break(top, path, text)
    with pytest.raises(error, match=match):
        load_tinyimagenet(split, tmp_path)


def test_missing_folders_and_bad_images(tmp_path: Path) -> None:
    top = make_tree(tmp_path)
    (top / "val" / "images" / "val_3.JPEG").unlink()
    with pytest.raises(DataFormatError, match=r"lists 1 image\(s\) missing .*val_3.JPEG"):
        load_tinyimagenet("val", tmp_path)
    # without the file check the split loads, and decoding the missing file names it
    va = load_tinyimagenet("val", tmp_path, check_files=False)
    with pytest.raises(DataNotFoundError, match="val_3.JPEG is listed but missing"):
        va.image(3)
    (top / "val" / "images" / "val_0.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataFormatError, match="val_0.JPEG: cannot decode"):
        va.image(0)
    _img(top / "val" / "images" / "val_2.JPEG", (1, 2, 3), size=(32, 64))
    with pytest.raises(DataFormatError, match=r"image of size 32x64 \(WxH\), expected 64x64"):
        va.image(2)
    for p in sorted((top / "val" / "images").iterdir()):
        p.unlink()
    (top / "val" / "images").rmdir()
    with pytest.raises(DataNotFoundError, match="val/images is missing"):
        load_tinyimagenet("val", tmp_path)


def test_synthetic_tree_loads(tmp_path: Path) -> None:
    top = make_synthetic_tinyimagenet(tmp_path, num_classes=3, train_per_class=2, val_per_class=2, seed=1)
    tr, va = load_tinyimagenet("train", top), load_tinyimagenet("val", top)
    assert (len(tr), len(va), tr.num_classes) == (6, 6, 3)
    assert np.bincount(va.labels).tolist() == [2, 2, 2]
    assert ((tr.boxes[:, 2] - tr.boxes[:, 0]) >= 15).all()  # objects are at least a quarter of the side
    assert tr.decode_all().shape == (6, 3, 64, 64)
