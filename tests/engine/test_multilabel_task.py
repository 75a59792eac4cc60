"""The multi-label task of the one loop: training and evaluation on tiny synthetic multi-label bags (seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossattn import create_model
from lossattn.datasets import BagDataset
from lossattn.datasets.multilabel import make_multilabel_dataset, multilabel_targets
from lossattn.engine import MultiLabelEvalResult, MultiLabelTask, TrainConfig, Trainer, evaluate, task_for


def toy(n_bags=40, K=2, dim=4, seed=0):
    """Label c is present iff the bag holds an instance shifted by +4 along feature c."""
    rng = np.random.default_rng(seed)
    bags, Y, inst = [], [], []
    for _ in range(n_bags):
        n = int(rng.integers(3, 7))
        x = rng.normal(size=(n, dim)).astype(np.float32)
        y = (rng.random(K) < 0.5).astype(np.int64)
        il = np.zeros(n, dtype=np.int64)
        free = list(rng.permutation(n))
        for c in np.flatnonzero(y):
            j = free.pop()
            x[j, c] += 4.0
            il[j] = c + 1
        bags.append(x)
        Y.append(y)
        inst.append(il)
    return make_multilabel_dataset(bags, np.array(Y), instance_labels=inst)


def cfg(**kw):
    base = dict(epochs=6, batch_size=4, lr=1e-2, eval_batch_size=16)
    base.update(kw)
    return TrainConfig(**base)


def model(name="loss_attention_multilabel", **kw):
    torch.manual_seed(0)
    return create_model(name, in_features=4, num_classes=2, extractor_kwargs={"hidden": [16], "dropout": 0.0}, **kw)


def test_the_task_comes_from_the_model_and_targets_are_multi_hot():
    assert isinstance(task_for(model()), MultiLabelTask)
    from lossattn.engine import BagSource

    batch = BagSource(toy(6)).collate(np.arange(6))
    assert batch.targets.shape == (6, 2) and batch.targets.dtype == torch.float32
    assert set(batch.targets.unique().tolist()) <= {0.0, 1.0}


def test_loss_attention_learns_and_selects_on_validation():
    train, val, test = toy(60, seed=1), toy(20, seed=2), toy(30, seed=3)
    res = Trainer(model(lam=1.0), cfg(epochs=8), seed=0).fit(train, val, test)
    assert res.test.scores["micro_f1"] >= 0.85 and res.test.scores["map"] >= 0.9
    assert 0 <= res.selected_epoch < 8 and len(res.history) == 8
    assert {"train_loss", "train_bag", "train_instance", "val_hamming", "val_loss", "selected_epoch"} <= set(
        res.history[0]
    )
    best = min(res.history, key=lambda r: (r["val_hamming"], r["val_loss"]))
    assert best["epoch"] == res.selected_epoch
    w = res.test.weights
    assert len(w) == 30 and w[0].shape == (len(res.test.instance_labels[0]), 2)
    ret = res.test.retrieval(thresholds=(0.5,))
    assert set(ret) == {0, 1} and ret[0][0.5]["f1"] > 0.5
    assert all(v > 0.5 for v in res.test.instance_ap().values())


@pytest.mark.parametrize(
    "name",
    ["attention_multilabel", "gated_attention_multilabel", "embedding_max_multilabel", "instance_max_multilabel"],
)
def test_baselines_train(name):
    train, test = toy(40, seed=1), toy(20, seed=3)
    res = Trainer(model(name), cfg(epochs=3), seed=0).fit(train, None, test)
    assert res.selected_epoch == 2 and res.val is None  # no validation: the last epoch
    assert res.test.probabilities.shape == (20, 2)
    assert (res.test.weights is None) == name.startswith(("embedding", "instance"))


@pytest.mark.parametrize("name", ["loss_attention_multilabel", "attention_multilabel"])
def test_consistency_term_with_temporal_ensemble(name):
    train = toy(24, seed=1)
    res = Trainer(model(name), cfg(epochs=3, consistency_weight=1.0), seed=0).fit(train)
    assert "train_consistency" in res.history[-1]


def test_training_is_deterministic_by_seed():
    train, val = toy(30, seed=1), toy(10, seed=2)
    a = Trainer(model(), cfg(epochs=2), seed=3).fit(train, val)
    b = Trainer(model(), cfg(epochs=2), seed=3).fit(train, val)
    assert np.array_equal(a.val.probabilities, b.val.probabilities)


def test_evaluate_checks():
    ds = toy(10)
    ev = evaluate(model(), ds)
    assert (
        isinstance(ev, MultiLabelEvalResult)
        and np.array_equal(ev.targets, multilabel_targets(ds))
        and ev.loss > 0
        and "macro_f1" in ev.summary()
    )
    single = BagDataset([np.zeros((2, 4))], [1])
    with pytest.raises(ValueError, match="needs multi-label bags"):
        evaluate(model(), single)
    with pytest.raises(ValueError, match="labels"):
        Trainer(create_model("attention_multilabel", in_features=4, num_classes=3), cfg(epochs=1)).fit(ds)
