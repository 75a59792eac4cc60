"""CIFAR-10 from tiny synthetic pickle batches and a tiny synthetic JPEG zip; CIFAR10-bags."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lossattn.datasets import CIFAR10_CLASSES, DataFormatError, DataNotFoundError, load_cifar10, make_cifar10_bags

PER_BATCH, N_TEST = 40, 60
MEAN = np.array([0.4914, 0.4822, 0.4465])
STD = np.array([0.2470, 0.2435, 0.2616])


def _batch(n: int, marker: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    data[:, 0, 0, 0] = marker
    labels = [int(v) for v in np.arange(n) % 10]
    return {b"batch_label": b"x", b"labels": labels, b"data": data.reshape(n, 3072), b"filenames": []}


def _write_pickles(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True)
    out = {}
    train = [_batch(PER_BATCH, 0, i) for i in range(5)]
    for i, b in enumerate(train, start=1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(b))
    test = _batch(N_TEST, 255, 9)
    (folder / "test_batch").write_bytes(pickle.dumps(test))
    out["train"] = (
        np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32),
        np.concatenate([b[b"labels"] for b in train]),
    )
    out["test"] = (test[b"data"].reshape(-1, 3, 32, 32), np.array(test[b"labels"]))
    return out


def _write_jpeg_zip(path: Path, split: str, per_class: int = 3) -> np.ndarray:
    """Solid-colour JPEGs (quality 95); returns the colour of each entry in dataset order."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    colours = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for c, name in reversed(list(enumerate(CIFAR10_CLASSES))):  # written out of order on purpose
            for j in range(per_class):
                colour = (20 * c + 10, 200 - 15 * j, 100 + (split == "test") * 100)
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), colour).save(buf, format="JPEG", quality=95)
                z.writestr(f"{split}/{name}/{j:04d}.jpg", buf.getvalue())
    for c in range(10):
        for j in range(per_class):
            colours.append((20 * c + 10, 200 - 15 * j, 100 + (split == "test") * 100))
    return np.array(colours)


@pytest.mark.parametrize("layout", ["cifar10/cifar-10-batches-py", "cifar-10-batches-py"])
def test_pickle_batches(tmp_path: Path, layout: str) -> None:
    data = _write_pickles(tmp_path / layout)
    for split in ("train", "test"):
        images, labels = load_cifar10(split, root=tmp_path)
        assert images.dtype == np.uint8 and images.shape == data[split][0].shape
        assert np.array_equal(images, data[split][0]) and np.array_equal(labels, data[split][1])


@pytest.mark.parametrize("targets", [(3, 5, 9), (9,)])
def test_cifar_bags_from_pickles(tmp_path: Path, targets, check_label_rules) -> None:
    data = _write_pickles(tmp_path / "cifar10" / "cifar-10-batches-py")
    for split, marker in (("train", 0.0), ("test", 1.0)):
        ds = make_cifar10_bags(
            split, 25, target_classes=targets, mean_bag_size=5, std_bag_size=1, seed=0, root=tmp_path
        )
        assert ds.name == "cifar10-bags" and ds.instance_shape == (3, 32, 32)
        check_label_rules(ds, data[split][1], targets)
        x, _ = ds.to_flat()
        np.testing.assert_allclose(x[:, 0, 0, 0].numpy(), (marker - MEAN[0]) / STD[0], rtol=1e-5)
        raw = data[split][0][ds.source_index].astype(np.float32) / 255.0
        expected = (raw - MEAN[None, :, None, None]) / STD[None, :, None, None]
        np.testing.assert_allclose(x.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert make_cifar10_bags("test", 5, root=tmp_path).class_names == ["none", "cat", "dog", "truck"]


def test_jpeg_zip_lazy_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    colours = _write_jpeg_zip(root / "cifar10" / "cifar10_test_jpeg_q75.zip", "test")
    images, labels = load_cifar10("test", root=root, cache=False)
    assert len(images) == 30 and labels.tolist() == [c for c in range(10) for _ in range(3)]
    dec = images[np.array([0, 29])]
    assert dec.shape == (2, 3, 32, 32) and dec.dtype == np.uint8
    for k, idx in enumerate((0, 29)):
        assert np.abs(dec[k].reshape(3, -1).mean(1) - colours[idx]).max() < 4
    before = sorted(p.name for p in root.rglob("*"))
    os.chmod(root / "cifar10", 0o555)  # a read-only data root is never written to
    try:
        cached, labels2 = load_cifar10("test", root=root, cache=True)
        again, _ = load_cifar10("test", root=root, cache=True)
    finally:
        os.chmod(root / "cifar10", 0o755)
    assert isinstance(again, np.memmap)  # read back from the cache
    assert np.array_equal(np.asarray(cached), np.asarray(again)) and np.array_equal(labels, labels2)
    assert np.array_equal(np.asarray(cached)[[0, 29]], dec)
    assert sorted(p.name for p in root.rglob("*")) == before
    assert list((tmp_path / "xdg-cache" / "lossattn" / "decoded" / "cifar10").glob("*.npy"))


def test_cifar_bags_from_jpeg_zip(tmp_path: Path, check_label_rules) -> None:
    _write_jpeg_zip(tmp_path / "cifar10" / "cifar10_train_jpeg_q75.zip", "train", per_class=6)
    ds = make_cifar10_bags("train", 20, mean_bag_size=4, std_bag_size=1, seed=1, root=tmp_path, cache=False)
    _, labels = load_cifar10("train", root=tmp_path, cache=False)
    check_label_rules(ds, labels, (3, 5, 9))
    assert ds.instance_shape == (3, 32, 32)


def test_pickle_preferred_over_jpeg_and_source_choice(tmp_path: Path) -> None:
    data = _write_pickles(tmp_path / "cifar10" / "cifar-10-batches-py")
    _write_jpeg_zip(tmp_path / "cifar10" / "cifar10_test_jpeg_q75.zip", "test")
    images, _ = load_cifar10("test", root=tmp_path)
    assert np.array_equal(images, data["test"][0])
    jpeg, labels = load_cifar10("test", root=tmp_path, source="jpeg", cache=False)
    assert len(jpeg) == 30
    with pytest.raises(ValueError, match="source"):
        load_cifar10("test", root=tmp_path, source="png")


def test_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as e:
        load_cifar10("train", root=tmp_path)
    assert "cifar10_train_jpeg_q75.zip" in str(e.value) and "cifar-10-batches-py/data_batch_1" in str(e.value)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    _write_pickles(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match=r"lacks \['data_batch_3'\]"):
        load_cifar10("train", root=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(_batch(4, 0, 0))[:50])
    with pytest.raises(DataFormatError, match="test_batch: not a readable CIFAR-10 pickle batch"):
        load_cifar10("test", root=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataFormatError, match=r"expected \(n, 3072\)"):
        load_cifar10("test", root=tmp_path)


def test_bad_jpeg_zips(tmp_path: Path) -> None:
    z = tmp_path / "cifar10" / "cifar10_test_jpeg_q75.zip"
    z.parent.mkdir(parents=True)
    z.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataFormatError, match="cifar10_test_jpeg_q75.zip: not a readable zip"):
        load_cifar10("test", root=tmp_path, cache=False)
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("test/unicorn/0000.jpg", b"x")
    with pytest.raises(DataFormatError, match="not in a CIFAR-10 class folder"):
        load_cifar10("test", root=tmp_path, cache=False)
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("test/cat/0000.jpg", b"not a jpeg")
    images, _ = load_cifar10("test", root=tmp_path, cache=False)
    with pytest.raises(DataFormatError, match=r"test/cat/0000.jpg: cannot decode the JPEG"):
        images[np.array([0])]


@pytest.mark.realdata
def test_real_cifar_jpeg(real_root: Path, require_real, check_label_rules) -> None:
    require_real("cifar10/cifar10_test_jpeg_q75.zip")
    images, labels = load_cifar10("test", root=real_root, source="jpeg", cache=False)
    assert len(images) == 10000 and np.bincount(labels).tolist() == [1000] * 10
    ds = make_cifar10_bags("test", 30, seed=0, root=real_root, source="jpeg", cache=False)
    check_label_rules(ds, labels, (3, 5, 9))
    x, _ = ds.to_flat()
    assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3
