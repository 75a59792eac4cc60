"""MNIST IDX reading and MNIST-bags, on tiny synthetic IDX files (plus a real-data test that skips)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from lossattn.datasets import DataFormatError, DataNotFoundError, load_mnist, make_mnist_bags, read_idx, write_idx

N_TRAIN, N_TEST = 400, 120


def _images(n: int, marker: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = marker  # split marker
    return images, labels


def _write_mnist(root: Path, layout: str = "mnist", gz: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / ("mnist" if layout == "mnist" else "MNIST/raw")
    folder.mkdir(parents=True)
    data = {"train": _images(N_TRAIN, 0, 1), "test": _images(N_TEST, 255, 2)}
    ext = ".gz" if gz else ""
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", data[split][0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", data[split][1])
    return data


@pytest.mark.parametrize(
    ("layout", "gz"), [("mnist", True), ("mnist", False), ("torchvision", False), ("torchvision", True)]
)
def test_load_mnist_layouts(tmp_path: Path, layout: str, gz: bool) -> None:
    data = _write_mnist(tmp_path, layout, gz)
    for split in ("train", "test"):
        images, labels = load_mnist(split, root=tmp_path)
        assert images.dtype == np.uint8 and images.shape == data[split][0].shape
        assert np.array_equal(images, data[split][0]) and np.array_equal(labels, data[split][1])


def test_idx_round_trip(tmp_path: Path) -> None:
    for arr in (
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.arange(6, dtype=np.int32),
        np.ones((2, 2), np.float32),
    ):
        for name in ("a.idx", "a.idx.gz"):
            write_idx(tmp_path / name, arr)
            back = read_idx(tmp_path / name)
            assert back.dtype == arr.dtype.newbyteorder("=") and np.array_equal(back, arr)


def test_idx_errors(tmp_path: Path) -> None:
    p = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((10, 28, 28), np.uint8))
    raw = p.read_bytes()
    p.write_bytes(raw[:-100])
    with pytest.raises(
        DataFormatError, match=r"x-idx3-ubyte: IDX data is truncated: header \(10, 28, 28\) needs 7840 bytes"
    ):
        read_idx(p)
    p.write_bytes(b"\x12\x34\x08\x03" + raw[4:])
    with pytest.raises(DataFormatError, match="not an IDX file"):
        read_idx(p)
    g = tmp_path / "x.gz"
    g.write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(DataFormatError, match="x.gz: the gzip data is corrupt or truncated"):
        read_idx(g)
    (tmp_path / "y").write_bytes(b"\x00")
    with pytest.raises(DataFormatError, match="too short"):
        read_idx(tmp_path / "y")


def test_mismatched_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_mnist("train", root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg and "MNIST/raw" in msg
    assert "lossattn data fetch mnist-bags" in msg
    _write_mnist(tmp_path)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataFormatError, match=r"has 120 images but .* has 5 labels"):
        load_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_mnist("val", root=tmp_path)


@pytest.mark.parametrize("targets", [(9,), (3, 5, 9)])
def test_mnist_bags_from_the_right_split(tmp_path: Path, targets, check_label_rules) -> None:
    data = _write_mnist(tmp_path)
    for split, marker in (("train", 0.0), ("test", 1.0)):
        ds = make_mnist_bags(split, 60, target_digits=targets, seed=4, root=tmp_path)
        assert ds.name == "mnist-bags" and ds.instance_shape == (1, 28, 28)
        assert ds.num_classes == len(targets) + 1
        check_label_rules(ds, data[split][1].astype(np.int64), targets)
        x, _ = ds.to_flat()
        expected_marker = (marker - 0.1307) / 0.3081
        np.testing.assert_allclose(x[:, 0, 0, 0].numpy(), expected_marker, rtol=1e-5)
        src = ds.source_index
        expected = (data[split][0][src].astype(np.float32) / 255.0 - 0.1307) / 0.3081
        np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert src.max() < (N_TRAIN if split == "train" else N_TEST)


def test_mnist_bags_determinism(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    a = make_mnist_bags("train", 30, seed=1, root=tmp_path)
    b = make_mnist_bags("train", 30, seed=1, root=tmp_path)
    c = make_mnist_bags("train", 30, seed=2, root=tmp_path)
    assert np.array_equal(a.source_index, b.source_index) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.source_index[:50], c.source_index[:50])
    with pytest.raises(ValueError, match="digits 0..9"):
        make_mnist_bags("train", 3, target_digits=(10,), root=tmp_path)


@pytest.mark.realdata
def test_real_mnist(real_root: Path, require_real, check_label_rules) -> None:
    require_real("mnist/train-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte")
    images, labels = load_mnist("train", root=real_root)
    assert images.shape == (60000, 28, 28)
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_images, test_labels = load_mnist("test", root=real_root)
    assert test_images.shape == (10000, 28, 28)
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    ds = make_mnist_bags("test", 1000, target_digits=(3, 5, 9), seed=0, root=real_root)
    check_label_rules(ds, test_labels.astype(np.int64), (3, 5, 9))
    assert abs(ds.bag_sizes.mean() - 10) < 0.25 and ds.source_index.max() < 10000
    x, _ = make_mnist_bags("train", 100, seed=0, root=real_root).to_flat()
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1.0) < 0.1
