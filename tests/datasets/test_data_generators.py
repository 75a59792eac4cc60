"""make_bags_from_pool: label rules on every bag, bag-size distribution, determinism, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossattn.datasets import bags_from_pool_indices, make_bags_from_pool, sample_bag_sizes


def _pool(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = np.zeros((n, 1, 2, 2), dtype=np.uint8)
    images[:, 0, 0, 0] = labels  # the pixel encodes the class, to check gathering
    images[:, 0, 1, 1] = rng.integers(0, 256, size=n)
    return images, labels


@pytest.mark.parametrize("targets", [(9,), (3, 5, 9)])
def test_label_rules_hold_on_every_bag(targets: tuple[int, ...], check_label_rules) -> None:
    images, labels = _pool()
    ds = make_bags_from_pool(images, labels, 400, targets, seed=1)
    assert ds.num_classes == len(targets) + 1
    check_label_rules(ds, labels, targets)
    assert min(ds.class_counts()) > 0  # every label occurs
    for b in ds.subset(range(5)):  # gathered pixels belong to the right images
        cls = np.rint(b.x[:, 0, 0, 0].numpy() * 255).astype(int)
        assert np.array_equal(cls, labels[ds.source_index[ds.offsets[b.index] : ds.offsets[b.index + 1]]])


def test_binary_label_mix_matches_random_draws() -> None:
    images, labels = _pool(5000)
    ds = make_bags_from_pool(images, labels, 1000, (9,), seed=2)
    p9 = float((labels == 9).mean())
    sizes = ds.bag_sizes
    expected_pos = float(np.mean(1 - (1 - p9) ** sizes))  # Ilse et al.: draw at random, then label
    assert abs(ds.labels.mean() - expected_pos) < 0.05


def test_bag_size_distribution(check_label_rules) -> None:
    images, labels = _pool()
    ds = make_bags_from_pool(images, labels, 1000, (9,), mean_bag_size=10, std_bag_size=2, seed=3)
    s = ds.bag_sizes
    assert s.min() >= 1
    assert abs(s.mean() - 10) < 0.25  # std of the mean ~ 0.064
    assert abs(s.std() - np.sqrt(4 + 1 / 12)) < 0.2
    big = make_bags_from_pool(images, labels, 1000, (3, 5, 9), mean_bag_size=50, std_bag_size=10, seed=3)
    assert abs(big.bag_sizes.mean() - 50) < 1.2 and abs(big.bag_sizes.std() - 10) < 0.8
    check_label_rules(big, labels, (3, 5, 9))  # large multi-class bags are feasible and valid
    tiny = sample_bag_sizes(np.random.default_rng(0), 1000, 1.0, 3.0)
    assert tiny.min() == 1


def test_determinism_by_seed() -> None:
    images, labels = _pool()
    a = make_bags_from_pool(images, labels, 50, (3, 5, 9), seed=7)
    np.random.seed(123)  # noqa: NPY002 - the global state must not matter
    torch.manual_seed(0)
    b = make_bags_from_pool(images, labels, 50, (3, 5, 9), seed=7)
    c = make_bags_from_pool(images, labels, 50, (3, 5, 9), seed=8)
    assert np.array_equal(a.source_index, b.source_index) and np.array_equal(a.labels, b.labels)
    assert all(torch.equal(x.x, y.x) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.bag_sizes, c.bag_sizes) or not np.array_equal(a.source_index, c.source_index)


def test_balance_option(check_label_rules) -> None:
    images, labels = _pool()
    ds = make_bags_from_pool(images, labels, 800, (3, 5, 9), seed=0, balance=True)
    frac = ds.class_counts() / 800
    assert np.all(np.abs(frac - 0.25) < 0.06)
    check_label_rules(ds, labels, (3, 5, 9))


def test_normalisation_and_metadata() -> None:
    images, labels = _pool()
    ds = make_bags_from_pool(images, labels, 5, (9,), seed=0, normalize=((0.5,), (0.25,)), name="toy", split="train")
    b = ds[0]
    raw = images[ds.source_index[: b.size]].astype(np.float32) / 255.0
    np.testing.assert_allclose(b.x.numpy(), (raw - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
    assert b.name == "train-00000" and ds.name == "toy"
    assert ds.meta["target_classes"] == [9] and ds.meta["seed"] == 0 and ds.meta["split"] == "train"
    assert ds.class_names == ["none", "9"]
    floats = make_bags_from_pool(images.astype(np.float32), labels, 3, (9,), seed=0)
    assert torch.equal(floats[0].x, torch.from_numpy(images[floats.source_index[: floats[0].size]].astype(np.float32)))
    ids = make_bags_from_pool(images, labels, 3, (9,), seed=0, pool_ids=np.arange(len(labels)) + 1000)
    assert ids.source_index.min() >= 1000


def test_bad_arguments() -> None:
    images, labels = _pool(200)
    with pytest.raises(ValueError, match="at least one class"):
        make_bags_from_pool(images, labels, 5, ())
    with pytest.raises(ValueError, match="duplicates"):
        make_bags_from_pool(images, labels, 5, (9, 9))
    with pytest.raises(ValueError, match=r"target class\(es\) \[11\] do not occur"):
        make_bags_from_pool(images, labels, 5, (11,))
    with pytest.raises(ValueError, match="num_bags"):
        make_bags_from_pool(images, labels, 0, (9,))
    with pytest.raises(ValueError, match="images but"):
        make_bags_from_pool(images[:10], labels, 5, (9,))
    with pytest.raises(ValueError, match="cannot draw a bag"):
        make_bags_from_pool(images[:12], labels[:12], 5, (int(labels[0]),), mean_bag_size=100, std_bag_size=0)
    with pytest.raises(ValueError, match="std_bag_size"):
        make_bags_from_pool(images, labels, 5, (9,), std_bag_size=-1)


def test_bags_from_pool_indices_for_custom_generators() -> None:
    images, labels = _pool(50)
    idx = np.array([3, 7, 3, 10, 11])  # the same image may appear in several bags
    ds = bags_from_pool_indices(images, idx, [0, 2, 5], [1, 0], labels[idx] % 2, num_classes=2, split="val")
    assert ds.names == ["val-00000", "val-00001"] and ds.meta["split"] == "val"
    assert ds.bag_sizes.tolist() == [2, 3] and ds.source_index.tolist() == idx.tolist()
    assert ds._data.shape[0] == 4 and ds._data.dtype == torch.uint8  # unique images only, kept as uint8
    np.testing.assert_allclose(ds[1].x.numpy(), images[[3, 10, 11]] / 255.0, rtol=1e-6)
    assert ds.instance_labels.tolist() == (labels[idx] % 2).tolist()
