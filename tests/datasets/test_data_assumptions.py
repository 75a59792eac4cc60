"""Algorithmic-unit-test generators (Raff & Holt 2023): the documented statistics of every bag, the shortcut
present in training and reversed in test, balance, sizes, distributions, determinism and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossattn.datasets import (
    ASSUMPTION_TESTS,
    BagDataset,
    make_false_frequency_bags,
    make_multi_concept_bags,
    make_single_concept_bags,
)
from lossattn.datasets.assumptions import BACKGROUND, CONCEPT_A, CONCEPT_B, POISON
from lossattn.metrics import roc_auc


def _per_bag_counts(ds: BagDataset) -> np.ndarray:
    """``(B, 4)`` number of background, concept A, concept B and poison instances in every bag."""
    codes = ds.instance_labels.numpy()
    off = ds.offsets
    return np.stack([np.bincount(codes[off[i] : off[i + 1]], minlength=4) for i in range(len(ds))])


def _auc(labels: np.ndarray, score: np.ndarray) -> float:
    s = score.astype(np.float64)
    return roc_auc(labels, np.stack([-s, s], axis=1))


def _instances(ds: BagDataset, code: int) -> np.ndarray:
    x, _ = ds.to_flat()
    return x.numpy()[ds.instance_labels.numpy() == code]


@pytest.mark.parametrize("name", list(ASSUMPTION_TESTS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_balance_dims_and_meta(name: str, split: str) -> None:
    ds = ASSUMPTION_TESTS[name].generator(split, 3, num_bags=101, dim=5)
    assert len(ds) == 101 and ds.instance_shape == (5,) and ds.num_classes == 2
    assert ds.class_counts().tolist() == [51, 50]  # num_bags // 2 positives
    assert ds.meta["test"] == name and ds.meta["split"] == split and ds.meta["chance_auc"] == 0.5
    assert "2310.17867" in ds.meta["paper"] and ds.meta["pass_criterion"]
    assert set(np.unique(ds.instance_labels.numpy())) <= {BACKGROUND, CONCEPT_A, CONCEPT_B, POISON}
    assert ASSUMPTION_TESTS[name].chance_auc == 0.5 and ASSUMPTION_TESTS[name].chance_accuracy == 0.5
    counts = _per_bag_counts(ds)
    assert ((counts[:, BACKGROUND] >= 1) & (counts[:, BACKGROUND] <= 9)).all()
    assert np.array_equal(counts.sum(1), ds.bag_sizes)


@pytest.mark.parametrize("make", [make_single_concept_bags, make_multi_concept_bags])
def test_poison_predicts_the_label_in_train_and_is_reversed_in_test(make) -> None:
    train, test = make("train", 0, num_bags=300), make("test", 0, num_bags=300)
    for ds, poisoned in ((train, 0), (test, 1)):
        poison = _per_bag_counts(ds)[:, POISON]
        assert (poison[ds.labels == poisoned] == 1).all() and (poison[ds.labels != poisoned] == 0).all()
    assert _auc(train.labels, _per_bag_counts(train)[:, POISON]) == 0.0  # poison <=> negative
    assert _auc(test.labels, _per_bag_counts(test)[:, POISON]) == 1.0  # poison <=> positive


def test_single_concept_rule_and_counts() -> None:
    for split in ("train", "test"):
        ds = make_single_concept_bags(split, 1, num_bags=400)
        c = _per_bag_counts(ds)
        pos = ds.labels == 1
        assert ((c[pos, CONCEPT_A] >= 1) & (c[pos, CONCEPT_A] <= 3)).all()
        assert (c[~pos, CONCEPT_A] == 0).all() and (c[:, CONCEPT_B] == 0).all()
        assert set(np.unique(c[pos, CONCEPT_A])) == {1, 2, 3}


def test_two_concept_rule_and_counts() -> None:
    for split in ("train", "test"):
        ds = make_multi_concept_bags(split, 2, num_bags=400)
        c = _per_bag_counts(ds)
        pos = ds.labels == 1
        both = (c[:, CONCEPT_A] >= 1) & (c[:, CONCEPT_B] >= 1)
        assert np.array_equal(both, pos)  # the real rule: positive iff A and B
        assert np.array_equal(c[pos, CONCEPT_A], c[pos, CONCEPT_B]) and set(np.unique(c[pos, CONCEPT_A])) == {1, 2, 3}
        assert (c[~pos, CONCEPT_A] + c[~pos, CONCEPT_B] == 1).all()
        assert 0.35 < (c[~pos, CONCEPT_A] == 1).mean() < 0.65  # A or B with probability 1/2


def test_false_frequency_count_shortcut_is_reversed() -> None:
    train, test = (
        make_false_frequency_bags("train", 0, num_bags=400),
        make_false_frequency_bags("test", 0, num_bags=400),
    )
    for ds in (train, test):
        c = _per_bag_counts(ds)
        pos = ds.labels == 1
        assert np.array_equal((c[:, CONCEPT_A] >= 1) & (c[:, CONCEPT_B] >= 1), pos)  # the real rule
        assert (c[:, POISON] == 0).all()
        assert set(np.unique(c[pos, CONCEPT_A])) == {1, 2} and set(np.unique(c[pos, CONCEPT_B])) == {1, 2}
        assert ((c[~pos, CONCEPT_A] == 0) | (c[~pos, CONCEPT_B] == 0)).all()  # one concept per negative
        assert 0.35 < (c[~pos, CONCEPT_A] > 0).mean() < 0.65
    count = {
        name: _per_bag_counts(ds)[:, CONCEPT_A] + _per_bag_counts(ds)[:, CONCEPT_B]
        for name, ds in (("train", train), ("test", test))
    }
    assert (count["train"][train.labels == 0] == 1).all() and (count["train"][train.labels == 1] >= 2).all()
    neg_test = count["test"][test.labels == 0]
    assert neg_test.min() >= 35 and neg_test.max() <= 44
    assert _auc(train.labels, count["train"]) == 1.0 and _auc(test.labels, count["test"]) == 0.0


def test_distributions() -> None:
    sc = make_single_concept_bags("train", 0, num_bags=2000, dim=8)
    bg = _instances(sc, BACKGROUND)
    assert abs(bg.mean()) < 0.03 and abs(bg.std() - 1.0) < 0.02
    poison = _instances(sc, POISON)
    assert poison.shape == (1000, 8) and abs(poison.mean() + 10) < 0.01 and abs(poison.std() - 0.1) < 0.005
    # concept: 1/2 N(0, 3^2 I) + 1/2 N(1, I): per-coordinate mean 1/2, variance 1/2*9 + 1/2*2 - 1/4 = 5.25
    concept = _instances(sc, CONCEPT_A)
    assert abs(concept.mean() - 0.5) < 0.1 and abs(concept.var() - 5.25) < 0.3
    mc = make_multi_concept_bags("test", 0, num_bags=1000, dim=8)
    for code, mean in ((CONCEPT_A, 2.0), (CONCEPT_B, 3.0)):
        x = _instances(mc, code)
        assert abs(x.mean() - mean) < 0.01 and abs(x.std() - 0.1) < 0.005


def test_arguments_are_used() -> None:
    ds = make_single_concept_bags("test", 0, num_bags=50, dim=3, background=4, concept_count=2, poison_mean=7.0)
    c = _per_bag_counts(ds)
    assert (c[:, BACKGROUND] == 4).all() and (c[ds.labels == 1, CONCEPT_A] == 2).all()
    assert np.allclose(_instances(ds, POISON).mean(), 7.0, atol=0.05)
    ff = make_false_frequency_bags("test", 0, num_bags=40, test_negative_copies=(5, 6))
    cf = _per_bag_counts(ff)[ff.labels == 0]
    assert set(np.unique(cf[:, CONCEPT_A] + cf[:, CONCEPT_B])) <= {5, 6}


@pytest.mark.parametrize("name", list(ASSUMPTION_TESTS))
def test_seeds_reproduce(name: str) -> None:
    gen = ASSUMPTION_TESTS[name].generator
    a, b = gen("train", 7, num_bags=60), gen("train", 7, num_bags=60)
    assert torch.equal(a.to_flat()[0], b.to_flat()[0]) and np.array_equal(a.labels, b.labels)
    assert torch.equal(a.instance_labels, b.instance_labels) and np.array_equal(a.offsets, b.offsets)
    c = gen("train", 8, num_bags=60)
    t = gen("test", 7, num_bags=60)
    assert not torch.equal(a[0].x, c[0].x) and not torch.equal(a[0].x, t[0].x)
    np.random.seed(0)  # noqa: NPY002 - disturb the global state on purpose
    torch.manual_seed(0)
    d = gen("train", 7, num_bags=60)  # no global RNG involved
    assert torch.equal(a.to_flat()[0], d.to_flat()[0])


@pytest.mark.parametrize(
    ("make", "kwargs", "word"),
    [
        (make_single_concept_bags, {"split": "val"}, "split"),
        (make_single_concept_bags, {"seed": -1}, "seed"),
        (make_single_concept_bags, {"num_bags": 1}, "num_bags"),
        (make_single_concept_bags, {"num_bags": 10.5}, "num_bags"),
        (make_single_concept_bags, {"dim": 0}, "dim"),
        (make_single_concept_bags, {"background": (0, 3)}, "background"),
        (make_single_concept_bags, {"background": (5, 2)}, "background"),
        (make_single_concept_bags, {"concept_count": "many"}, "concept_count"),
        (make_single_concept_bags, {"concept_wide_std": -1.0}, "concept_wide_std"),
        (make_single_concept_bags, {"poison_std": 0}, "poison_std"),
        (make_multi_concept_bags, {"pairs": 0}, "pairs"),
        (make_multi_concept_bags, {"concept_means": (2.0, 2.0)}, "concept_means"),
        (make_multi_concept_bags, {"concept_means": (2.0,)}, "concept_means"),
        (make_multi_concept_bags, {"concept_std": float("nan")}, "concept_std"),
        (make_false_frequency_bags, {"positive_copies": (0, 1)}, "positive_copies"),
        (make_false_frequency_bags, {"train_negative_copies": (2, 1)}, "train_negative_copies"),
        (make_false_frequency_bags, {"test_negative_copies": True}, "test_negative_copies"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(make, kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        make(**kwargs)
