"""Whole-slide batching: no copy for a one-bag batch, evaluation batches bounded by their padded size, loader
workers with exact results, size buckets, per-step patch subsampling and chunked training through the engine."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

import lossattn
from lossattn.datasets import BagDataset, load_feature_folder
from lossattn.datasets.folder import FeatureFolderDataset
from lossattn.engine import TrainConfig, Trainer, evaluate
from lossattn.engine.buffers import RecycledBuffers
from lossattn.engine.sources import BagSource, eval_index_batches, subsample_positions
from lossattn.slides import make_synthetic_slides


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """The tiny synthetic slide set: 12 slides of 40–400 patches of 32-d features, coords, case-grouped splits."""
    root = tmp_path_factory.mktemp("slides")
    make_synthetic_slides(root, preset="tiny", seed=3)
    return load_feature_folder(root)


def bags(n: int = 20, dim: int = 4, seed: int = 0) -> BagDataset:
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(int(rng.integers(1, 60)), dim)).astype(np.float32) for _ in range(n)]
    return BagDataset(xs, [i % 2 for i in range(n)])


def model(name: str = "loss_attention", dim: int = 32, dropout: float = 0.0):
    torch.manual_seed(0)
    return lossattn.create_model(name, in_features=dim, extractor_kwargs={"hidden": [8], "dropout": dropout})


def state(m) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same_batch(a, b) -> bool:
    return (
        torch.equal(a.x, b.x)
        and torch.equal(a.mask, b.mask)
        and torch.equal(a.index, b.index)
        and torch.equal(a.labels, b.labels)
        and torch.equal(a.instance_labels, b.instance_labels)
        and a.names == b.names
    )


# --------------------------------------------------------------------------- one-bag batches


class Remembering(BagDataset):
    """Remembers the last bag it handed out."""

    def __getitem__(self, index):
        self.last = super().__getitem__(index)
        return self.last


def test_a_one_bag_batch_is_the_bags_own_tensor():
    ds = bags()
    ds.__class__ = Remembering
    batch = BagSource(ds).collate(np.array([3]))
    assert batch.x.shape == (1, ds.bag_sizes[3], 4) and batch.mask.all()
    assert batch.x.data_ptr() == ds.last.x.data_ptr()  # the dataset's tensor, not a padded copy
    two = BagSource(ds).collate(np.array([3, 4]))
    assert two.x.data_ptr() != ds.last.x.data_ptr()


# --------------------------------------------------------------------------- evaluation batches


@pytest.mark.parametrize("budget", [1, 45, 200, None])
def test_eval_batches_are_bounded_by_their_padded_instance_count(budget):
    ds = bags(40)
    sizes = ds.bag_sizes
    batches = list(eval_index_batches(sizes, 8, budget))
    assert sorted(np.concatenate(batches).tolist()) == list(range(40))
    order = np.concatenate(batches)
    assert (np.diff(sizes[order]) >= 0).all()  # in order of size
    for k, b in enumerate(batches):
        padded = len(b) * int(sizes[b].max())
        assert len(b) <= 8
        assert budget is None or padded <= budget or len(b) == 1
        if k + 1 < len(batches) and len(b) < 8:  # greedy: the next bag would have broken the bound
            assert budget is not None and (len(b) + 1) * int(sizes[batches[k + 1][0]]) > budget
    if budget == 1:
        assert all(len(b) == 1 for b in batches)


def test_bounded_evaluation_equals_unbounded_evaluation(slides):
    m = model()
    full = evaluate(m, slides, batch_size=64, max_instances=None)
    bounded = evaluate(m, slides, batch_size=64, max_instances=500)
    assert len(list(eval_index_batches(slides.bag_sizes, 64, 500))) > 1
    np.testing.assert_allclose(bounded.probabilities, full.probabilities, rtol=1e-5, atol=1e-7)
    assert bounded.loss == pytest.approx(full.loss, rel=1e-5)
    for a, b in zip(bounded.weights, full.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_predict_bags_follows_the_instance_budget(slides, tmp_path):
    from lossattn.inference.checkpoint import TrainedModel
    from lossattn.inference.predict import predict_bags

    trained = TrainedModel(model(), "loss_attention", {}, tmp_path / "best.pt", num_classes=2)
    a = predict_bags(trained, slides, batch_size=64, max_instances=None)
    b = predict_bags(trained, slides, batch_size=64, max_instances=300)
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-5, atol=1e-7)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- validation once


def test_each_slide_file_is_validated_once_over_a_run(slides, monkeypatch):
    calls: list[str] = []
    original = FeatureFolderDataset._validate_bag

    def counting(self, i, x, inst):
        calls.append(str(self.files[i]))
        return original(self, i, x, inst)

    monkeypatch.setattr(FeatureFolderDataset, "_validate_bag", counting)
    fresh = load_feature_folder(slides.meta["source_folder"])
    train, val = fresh.subset(fresh.split_indices("train")), fresh.subset(fresh.split_indices("val"))
    Trainer(model(), TrainConfig(epochs=3, lr=1e-3)).fit(train, val)
    assert sorted(calls) == sorted({str(f) for f in train.files + val.files})


# --------------------------------------------------------------------------- workers


def test_loader_workers_give_the_same_batches_in_the_same_order(slides):
    inline = BagSource(slides, subsample=60)
    workers = BagSource(slides, num_workers=2, subsample=60)
    for epoch in (0, 1):
        a = list(inline.batches(epoch, 7, 3))
        b = list(workers.batches(epoch, 7, 3))
        assert len(a) == len(b) == 4
        assert all(same_batch(p, q) for p, q in zip(a, b, strict=True))


def test_a_run_with_loader_workers_equals_the_run_without(slides):
    train = slides.subset(slides.split_indices("train"))
    results = []
    for workers in (0, 2):
        m = model(dropout=0.3)  # dropout draws from the training process's RNG: the workers must not touch it
        cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-3, num_workers=workers, train_subsample=100)
        fit = Trainer(m, cfg, seed=4).fit(train)
        results.append(([h["train_loss"] for h in fit.history], state(m)))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(results[0][1][k], results[1][1][k]) for k in results[0][1])
    assert not multiprocessing.active_children()  # the workers stopped with the end of the fit


# --------------------------------------------------------------------------- size buckets


def test_size_buckets_visit_every_bag_once_with_less_padding():
    ds = bags(40)
    sizes = ds.bag_sizes
    plain, bucketed = BagSource(ds), BagSource(ds, bucket_by_size=True)

    def padded(batches):
        return sum(len(b) * int(sizes[b].max()) for b in batches)

    for epoch in range(3):
        a = list(plain.index_batches(epoch, 0, 4))
        b = list(bucketed.index_batches(epoch, 0, 4))
        assert sorted(np.concatenate(b).tolist()) == list(range(40))
        assert padded(b) < padded(a)
        # bags of similar size together: sorted by size, the batches do not overlap in size
        ranges = sorted((int(sizes[x].min()), int(sizes[x].max())) for x in b)
        assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(ranges, ranges[1:], strict=False))
    epochs = [[x.tolist() for x in bucketed.index_batches(e, 0, 4)] for e in range(2)]
    assert epochs[0] != epochs[1]  # a new batch order every epoch
    assert [x.tolist() for x in bucketed.index_batches(0, 0, 4)] == epochs[0]  # and reproducible
    # one bag per step: bucketing changes nothing
    assert [x.tolist() for x in bucketed.index_batches(2, 0, 1)] == [x.tolist() for x in plain.index_batches(2, 0, 1)]


def test_training_with_size_buckets(slides):
    train = slides.subset(slides.split_indices("train"))
    fit = Trainer(model(), TrainConfig(epochs=2, batch_size=3, lr=1e-3, bucket_by_size=True)).fit(train)
    assert len(fit.history) == 2 and np.isfinite(fit.history[-1]["train_loss"])


# --------------------------------------------------------------------------- subsampling


def test_subsampled_bags_are_seeded_sorted_subsets_of_their_bag(slides):
    source = BagSource(slides, subsample=50)
    sizes = slides.bag_sizes
    big = int(np.argmax(sizes))
    batch = source.collate(np.array([big]), subsample_key=(1, 0))
    keep = subsample_positions(int(sizes[big]), 50, (1, 0), big)
    assert batch.x.shape[1] == 50 and (np.diff(keep.numpy()) > 0).all()
    torch.testing.assert_close(batch.x[0], slides[big].x[keep], rtol=0, atol=0)
    assert torch.equal(batch.instance_labels[0], slides[big].instance_labels[keep])
    again = source.collate(np.array([big]), subsample_key=(1, 0))
    other_epoch = source.collate(np.array([big]), subsample_key=(1, 1))
    assert torch.equal(again.x, batch.x) and not torch.equal(other_epoch.x, batch.x)
    small = int(np.argmin(sizes))
    assert subsample_positions(int(sizes[small]), int(sizes[small]), (1, 0), small) is None  # the whole bag
    # evaluation always sees every instance
    assert sum(int(b.mask.sum()) for b in source.eval_batches(64)) == int(sizes.sum())


def test_training_on_subsamples(slides):
    train = slides.subset(slides.split_indices("train"))
    whole = Trainer(model(), TrainConfig(epochs=2, lr=1e-3), seed=1).fit(train)
    # a subsample at least as large as every bag is the whole bag: the same run
    same = Trainer(model(), TrainConfig(epochs=2, lr=1e-3, train_subsample=10_000), seed=1).fit(train)
    assert [h["train_loss"] for h in same.history] == [h["train_loss"] for h in whole.history]
    sub = Trainer(model(), TrainConfig(epochs=2, lr=1e-3, train_subsample=30), seed=1).fit(train)
    assert [h["train_loss"] for h in sub.history] != [h["train_loss"] for h in whole.history]
    with pytest.raises(ValueError, match="temporal ensemble"):
        TrainConfig(train_subsample=30, consistency_weight=1.0).validate()


# --------------------------------------------------------------------------- chunked training


@pytest.mark.parametrize("name", ["loss_attention", "gated_attention"])
def test_chunked_training_equals_in_memory_training(slides, name):
    train, val = slides.subset(slides.split_indices("train")), slides.subset(slides.split_indices("val"))
    runs = []
    for chunk in (None, 37):
        m = model(name)
        cfg = TrainConfig(epochs=2, lr=1e-3, instance_chunk=chunk, consistency_weight=0.5)
        fit = Trainer(m, cfg, seed=2).fit(train, val)
        runs.append((fit, state(m)))
    (a, sa), (b, sb) = runs
    for ha, hb in zip(a.history, b.history, strict=True):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
        assert hb["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-5)
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-6)


def test_chunked_training_needs_a_model_that_supports_it():
    with pytest.raises(ValueError, match="instance chunks"):
        Trainer(model("instance_max"), TrainConfig(instance_chunk=16))


@pytest.mark.parametrize(
    "field, value",
    [("eval_max_instances", 0), ("train_subsample", -1), ("instance_chunk", 2.5), ("instance_chunk", True)],
)
def test_whole_slide_options_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validate()


# --------------------------------------------------------------------------- recycled read buffers


def test_recycled_buffers_are_reused_only_when_nothing_refers_to_them():
    pool = RecycledBuffers(keep=2)
    a = pool.take((10, 4))
    t = torch.from_numpy(a).unsqueeze(0)  # a tensor on it, as a batch holds it
    del a
    b = pool.take((10, 4))  # the first buffer is still referred to by t
    assert not np.shares_memory(b, t.numpy())
    c = pool.take((3, 4))  # both kept buffers busy: a new one, not kept
    assert pool.reused == 0 and len(pool.buffers) == 2
    del b, c
    d = pool.take((5, 4))  # the second buffer is free again and large enough
    assert pool.reused == 1 and np.shares_memory(d, pool.buffers[1]) and d.shape == (5, 4)
    del t
    e = pool.take((40, 4))  # free but too small: replaced by a larger one
    assert e.shape == (40, 4) and pool.buffers[0].size == 160


def test_a_standardised_slide_read_into_a_recycled_buffer_equals_the_plain_read(slides):
    from lossattn.datasets import Standardizer

    view = Standardizer().fit(slides).transform(slides)
    source = BagSource(view)
    for epoch in range(2):  # the second pass reads into recycled buffers
        for batch in source.batches(epoch, 0, 1):
            i = int(batch.index[0])
            torch.testing.assert_close(batch.x[0], view[i].x, rtol=0, atol=0)
    assert source.buffers.reused > 0
