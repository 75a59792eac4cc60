"""The torch.func many-runs backend: each run of a group is the run the Trainer would train alone, for every bag model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from manyruns_data import toy_bags

import lossattn
from lossattn.datasets import BagDataset
from lossattn.engine import TrainConfig, Trainer, denormals_flushed
from lossattn.engine import manyruns as V
from lossattn.engine.manyruns import func as VF
from lossattn.engine.manyruns import funceval as VE
from lossattn.models.bag import EmbeddingPoolMIL
from lossattn.models.extractors import MLPExtractor

# every registered single-label bag model (MI-Net DS/RC build their own layers: their kwargs set the widths)
METHODS = {
    "la_mean": ("loss_attention", {"lam": 0.5, "reduction": "mean"}),
    "la_sum": ("loss_attention", {"lam": 0.3, "reduction": "sum"}),
    "attention": ("attention", {"hidden": 5}),
    "gated": ("gated_attention", {"hidden": 5}),
    "attention_sigmoid": ("attention_sigmoid", {"hidden": 5}),
    "gated_sigmoid": ("gated_attention_sigmoid", {"hidden": 5}),
    "instance_max": ("instance_max", {}),
    "instance_mean": ("instance_mean", {}),
    "embedding_max": ("embedding_max", {}),
    "embedding_mean": ("embedding_mean", {}),
    "minet_instance": ("minet_instance", {}),
    "minet_embedding": ("minet_embedding", {}),
    "minet_ds": ("minet_ds", {"hidden": [16, 8]}),
    "minet_rc": ("minet_rc", {"hidden": 8, "depth": 2}),
}


def make_model(model: str, kwargs: dict, seed: int, dropout: float = 0.0, dim: int = 6):
    torch.manual_seed(seed)
    if model in ("minet_ds", "minet_rc"):
        return lossattn.create_model(model, in_features=dim, dropout=dropout, **kwargs)
    return lossattn.create_model(
        model, in_features=dim, extractor_kwargs={"hidden": [16, 8], "dropout": dropout}, **kwargs
    )


def config(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=1, lr=3e-3, weight_decay=5e-4, eval_batch_size=8, oracle=True)
    base.update(kw)
    return TrainConfig(**base)


SEEDS = [11, 12, 13]  # three runs with different numbers of training bags


def splits(dim: int = 6):
    trains = [toy_bags(10 + 3 * i, dim=dim, seed=i) for i in range(3)]
    vals = [toy_bags(6, dim=dim, seed=10 + i) for i in range(3)]
    tests = [toy_bags(7, dim=dim, seed=20 + i) for i in range(3)]
    return trains, vals, tests


def max_param_diff(a, b) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


def assert_same_run(got, ref, atol: float = 1e-5) -> None:
    """Same selected epoch, weights, final probabilities and every history value the Trainer records."""
    assert got.selected_epoch == ref.selected_epoch
    assert max_param_diff(got.model, ref.model) < atol
    np.testing.assert_allclose(got.test.probabilities, ref.test.probabilities, atol=atol)
    assert [set(h) for h in got.history] == [set(h) for h in ref.history]
    for key in ref.history[0]:
        if key != "seconds":
            a, b = [h[key] for h in got.history], [h[key] for h in ref.history]
            np.testing.assert_allclose(a, b, atol=atol, err_msg=key)
    assert got.oracle_test_accuracy == ref.oracle_test_accuracy


@pytest.mark.parametrize("method", list(METHODS))
def test_each_run_equals_the_trainer_without_dropout(method):
    model, kwargs = METHODS[method]
    trains, vals, tests = splits()
    cfg = config()
    engine = V.FuncVectorizedTrainer([make_model(model, kwargs, s) for s in SEEDS], cfg, SEEDS)
    results = engine.fit(trains, vals, tests)
    for i, seed in enumerate(SEEDS):
        ref = Trainer(make_model(model, kwargs, seed), cfg, seed=seed).fit(trains[i], vals[i], tests[i])
        assert_same_run(results[i], ref)
        assert results[i].extra == {"engine": "func", "group_size": 3}
    assert engine.stats["updates"] == [3 * len(t) for t in trains]
    assert not denormals_flushed()  # trained with denormals flushed, mode restored


@pytest.mark.parametrize("rule", ["loss", "auc", "balanced_error"])
def test_selection_rule_is_the_trainers(rule):
    """The selection key comes from the task under ``TrainConfig.selection``, as in the Trainer."""
    model, kwargs = METHODS["embedding_mean"]
    trains, vals, tests = splits()
    cfg = config(epochs=5, selection=rule, lr=1e-2)
    results = V.FuncVectorizedTrainer([make_model(model, kwargs, s) for s in SEEDS], cfg, SEEDS).fit(
        trains, vals, tests
    )
    for i, seed in enumerate(SEEDS):
        ref = Trainer(make_model(model, kwargs, seed), cfg, seed=seed).fit(trains[i], vals[i], tests[i])
        assert_same_run(results[i], ref)
    if rule == "loss":  # the selected epoch is the one of lowest validation loss (not of lowest error)
        for res in results:
            losses = [h["val_loss"] for h in res.history]
            assert res.selected_epoch == int(np.argmin(losses))


@pytest.mark.parametrize("method", ["la_mean", "gated", "minet_ds"])
def test_buckets_equal_one_padded_call(method):
    """Splitting a step's runs into buckets of similar bag size changes nothing but the padding."""
    model, kwargs = METHODS[method]
    trains, vals, tests = splits()
    cfg = config(epochs=2)
    runs = {}
    for name, kw in {"one": {"max_buckets": 1}, "split": {"bucket_overhead": 0, "gather_cost": 0}}.items():
        engine = V.FuncVectorizedTrainer([make_model(model, kwargs, s, dropout=0.3) for s in SEEDS], cfg, SEEDS, **kw)
        runs[name] = (engine.fit(trains, vals, tests), engine.stats)
    assert runs["one"][1]["bucketed_steps"] == 0 and runs["split"][1]["bucketed_steps"] > 0
    assert runs["split"][1]["padded_rows"] < runs["one"][1]["padded_rows"]
    for a, b in zip(runs["one"][0], runs["split"][0], strict=True):
        assert a.selected_epoch == b.selected_epoch
        assert max_param_diff(a.model, b.model) < 1e-5
        # per-epoch evaluation in one size class vs many (some reached by only a few runs) gives the same
        for key in ("val_loss", "test_accuracy"):
            np.testing.assert_allclose([h[key] for h in a.history], [h[key] for h in b.history], atol=1e-5)
    ev = VE.eval_batches(vals, tests, torch.device("cpu"), overhead=0, budget=256 * 2**20)
    assert len(ev.batches) > 1 and any(bt.runs is not None for bt in ev.batches)
    # every real bag of every run sits in exactly one slot
    for r in range(3):
        slots = np.concatenate(
            [bt.slot_bag[list(range(3) if bt.runs is None else bt.runs).index(r)] for bt in ev.batches
             if bt.runs is None or r in bt.runs]
        )  # fmt: skip
        assert sorted(slots[slots >= 0].tolist()) == list(range(len(vals[r]) + len(tests[r])))


def test_partition_is_the_cheapest_split():
    """Against brute force over every split of 6 sizes into at most 3 contiguous parts."""
    import itertools

    sizes = np.array([1.0, 2.0, 5.0, 9.0, 30.0, 31.0])
    counts = np.array([4, 1, 3, 2, 1, 5])
    cum = np.concatenate([[0], np.cumsum(counts)])
    W = (cum[None, 1:] - cum[:-1, None]).astype(np.float64)
    overhead, per_item = 7.0, 0.5

    def cost(ends):
        parts = list(zip([0] + [e + 1 for e in ends[:-1]], ends, strict=True))
        total = sum(W[i, j] * sizes[j] + overhead for i, j in parts)
        return total + (per_item * counts.sum() if len(parts) > 1 else 0.0)

    best = min(
        (list(c) + [5] for n in range(3) for c in itertools.combinations(range(5), n)), key=lambda e: (cost(e), len(e))
    )
    got = VE.partition(sizes, W, 3, overhead, per_item)
    assert cost(got) == pytest.approx(cost(best))
    assert VE.partition(sizes, W, 1, overhead, per_item) == [5]


@pytest.mark.parametrize("method", ["la_mean", "gated", "attention"])
def test_dropout_masks_are_the_hand_written_backends(method):
    """Both backends draw a run's keep-masks from its own generator: with dropout on they train the same run."""
    model, kwargs = METHODS[method]
    trains, vals, tests = splits()
    cfg = config(epochs=2)
    hand = V.VectorizedTrainer([make_model(model, kwargs, s, dropout=0.5) for s in SEEDS], cfg, SEEDS)
    func = V.FuncVectorizedTrainer([make_model(model, kwargs, s, dropout=0.5) for s in SEEDS], cfg, SEEDS)
    plain = V.FuncVectorizedTrainer([make_model(model, kwargs, s) for s in SEEDS], cfg, SEEDS)
    for a, b, c in zip(
        hand.fit(trains, vals, tests), func.fit(trains, vals, tests), plain.fit(trains, vals, tests), strict=True
    ):
        assert a.selected_epoch == b.selected_epoch
        assert max_param_diff(a.model, b.model) < 1e-5
        assert max_param_diff(b.model, c.model) > 1e-4  # dropout is on


@pytest.mark.parametrize("method", ["minet_rc", "instance_max"])
def test_dropout_run_does_not_depend_on_its_group(method):
    model, kwargs = METHODS[method]
    trains, vals, tests = splits()
    cfg = config(epochs=2)
    group = V.FuncVectorizedTrainer([make_model(model, kwargs, s, dropout=0.5) for s in SEEDS], cfg, SEEDS)
    group_res = group.fit(trains, vals, tests)
    for i, seed in enumerate(SEEDS):
        alone = V.FuncVectorizedTrainer([make_model(model, kwargs, seed, dropout=0.5)], cfg, [seed])
        res = alone.fit([trains[i]], [vals[i]], [tests[i]])[0]
        assert group_res[i].selected_epoch == res.selected_epoch
        assert max_param_diff(group_res[i].model, res.model) < 1e-5


def image_bags(n_bags: int, seed: int) -> BagDataset:
    rng = np.random.default_rng(seed)
    bags = [rng.normal(size=(int(rng.integers(1, 5)), 1, 16, 16)).astype(np.float32) for _ in range(n_bags)]
    return BagDataset(bags, [i % 2 for i in range(n_bags)])


def test_lenet5_extractor_equals_the_trainer():
    kw = {"extractor": "lenet5", "extractor_kwargs": {"image_size": 16, "out_features": 12, "dropout": 0.0}}

    def build(seed):
        torch.manual_seed(seed)
        return lossattn.create_model("loss_attention", lam=0.2, **kw)

    seeds = [3, 4]
    trains = [image_bags(6 + i, seed=i) for i in range(2)]
    vals = [image_bags(4, seed=5 + i) for i in range(2)]
    tests = [image_bags(4, seed=9 + i) for i in range(2)]
    cfg = config(epochs=2)
    results = V.FuncVectorizedTrainer([build(s) for s in seeds], cfg, seeds).fit(trains, vals, tests)
    for i, seed in enumerate(seeds):
        ref = Trainer(build(seed), cfg, seed=seed).fit(trains[i], vals[i], tests[i])
        assert_same_run(results[i], ref, atol=1e-4)


def test_gradient_clipping_is_per_run_as_the_trainer():
    model, kwargs = METHODS["gated"]
    trains, vals, tests = splits()
    cfg = config(epochs=2, grad_clip=0.05, lr=1e-2)
    results = V.FuncVectorizedTrainer([make_model(model, kwargs, s) for s in SEEDS], cfg, SEEDS).fit(
        trains, vals, tests
    )
    for i, seed in enumerate(SEEDS):
        ref = Trainer(make_model(model, kwargs, seed), cfg, seed=seed).fit(trains[i], vals[i], tests[i])
        assert_same_run(results[i], ref)
    unclipped = V.FuncVectorizedTrainer([make_model(model, kwargs, SEEDS[0])], config(epochs=2, lr=1e-2), SEEDS[:1])
    assert max_param_diff(unclipped.fit(trains[:1], vals[:1], tests[:1])[0].model, results[0].model) > 1e-4


def test_clip_per_run_is_clip_grad_norm_of_each_run():
    torch.manual_seed(0)
    grads = {"a": torch.randn(3, 4, 2), "b": torch.randn(3, 5)}
    grads["a"][1] *= 1e-3  # run 1 is below the norm: unchanged
    want = []
    for r in range(3):
        ps = [torch.nn.Parameter(torch.zeros_like(g[r])) for g in grads.values()]
        for p, g in zip(ps, grads.values(), strict=True):
            p.grad = g[r].clone()
        torch.nn.utils.clip_grad_norm_(ps, 0.5)
        want.append([p.grad for p in ps])
    VF.clip_per_run(grads, 0.5)
    for r in range(3):
        for g, w in zip(grads.values(), want[r], strict=True):
            torch.testing.assert_close(g[r], w)


class _ItemPool(EmbeddingPoolMIL):
    """A bag model whose pooling steers Python by a tensor value: it cannot run under vmap."""

    def pool(self, h, mask):
        if bool(h.detach().sum() > 1e9):
            h = h * 0
        return super().pool(h, mask)


def test_unsupported_cases_are_named():
    reason = V.func_unsupported_reason
    m = make_model("loss_attention", {}, 0)
    assert reason(m, config()) is None
    assert "batch_size" in reason(m, config(batch_size=2))
    assert "consistency" in reason(m, config(consistency_weight=1.0))
    assert "AMP" in reason(m, config(amp=True))
    image = lossattn.create_model("resnet18_mean", num_classes=2, width=8)
    assert "images" in reason(image, config())
    multi = lossattn.create_model("embedding_max_multilabel", in_features=6, num_labels=3)
    assert "multi-label" in reason(multi, config())
    bn = make_model("embedding_max", {}, 0)
    bn.extractor.net.insert(1, torch.nn.BatchNorm1d(16))
    assert "BatchNorm1d" in reason(bn, config())
    d2 = make_model("embedding_max", {}, 0)
    d2.extractor.net[2] = torch.nn.Dropout1d(0.3)
    assert "Dropout1d" in reason(d2, config())
    torch.manual_seed(0)
    item = _ItemPool(MLPExtractor(6, [8], 0.0))
    assert reason(item, config()).startswith("its forward/loss does not vmap")
    with pytest.raises(ValueError, match="does not vmap"):
        V.FuncVectorizedTrainer([item], config(), [0])
    with pytest.raises(ValueError, match="share the model"):
        V.FuncVectorizedTrainer(
            [make_model("loss_attention", {"lam": 0.5}, 0), make_model("loss_attention", {}, 1)], config(), [0, 1]
        )
    # the supported list is every single-label instance model of the registry, each with dropout on
    assert set(V.FUNC_SUPPORTED_MODELS) == set(lossattn.list_models(task="single_label", input_kind="instances"))
    for name in V.FUNC_SUPPORTED_MODELS:
        probe = make_model(name, METHODS[next(k for k, v in METHODS.items() if v[0] == name)][1], 0, dropout=0.5)
        assert reason(probe, config()) is None, name


def test_bad_labels_are_named_before_training():
    model, kwargs = METHODS["embedding_max"]
    trains, vals, tests = splits()
    bad = BagDataset([np.zeros((2, 6), np.float32)] * 4, [0, 1, 2, 1])
    with pytest.raises(ValueError, match="classes up to 2"):
        V.FuncVectorizedTrainer([make_model(model, kwargs, 0)], config(), [0]).fit([bad], [vals[0]], [tests[0]])


# --------------------------------------------------------------------------- backend selection


def test_fit_many_picks_the_backend_per_model():
    trains, vals, tests = splits()
    models = {name: [make_model(*METHODS[name], s) for s in SEEDS] for name in ("la_mean", "embedding_max")}
    assert V.backend_for(models["la_mean"], config()) == ("vectorized", None)
    assert V.backend_for(models["embedding_max"], config()) == ("func", None)
    assert V.backend_for(models["la_mean"], config(), "func") == ("func", None)
    backend, why = V.backend_for(models["embedding_max"], config(batch_size=2))
    assert backend == "loop" and "batch_size" in why
    with pytest.raises(ValueError, match="torch.func backend cannot train"):
        V.backend_for(models["embedding_max"], config(batch_size=2), "func")
    with pytest.raises(ValueError, match="vectorized backend cannot train"):
        V.fit_many(models["embedding_max"], config(), SEEDS, trains, backend="vectorized")
    with pytest.raises(ValueError, match="unknown backend"):
        V.backend_for(models["la_mean"], config(), "fast")
    cfg = config(epochs=2, threshold="validation")
    fits = V.fit_many(models["embedding_max"], cfg, SEEDS, trains, vals, tests)
    assert [f.extra["engine"] for f in fits] == ["func"] * 3
    # the decision threshold is chosen on the validation bags and applied to both results, as for every backend
    assert all(f.val.threshold is not None and f.test.threshold == f.val.threshold for f in fits)


# --------------------------------------------------------------------------- protocol integration


def func_experiment(tmp_path, epochs: int = 2):
    from lossattn.protocols import DataConfig, ExperimentConfig, MethodConfig, ProtocolConfig

    rng = np.random.default_rng(0)
    lines = ["bag_id,label,f0,f1,f2,f3"]
    for b in range(18):
        for _ in range(int(rng.integers(1, 7))):
            x = rng.normal(size=4) + (b % 2) * np.array([1.5, 0, 0, 0])
            lines.append(f"bag{b:02d},{b % 2}," + ",".join(f"{v:.5f}" for v in x))
    path = tmp_path / "bags.csv"
    path.write_text("\n".join(lines) + "\n")
    mlp = {"extractor_kwargs": {"hidden": [8], "dropout": 0.0}}
    return ExperimentConfig(
        name="func",
        data=DataConfig(name=str(path), standardize=True),
        protocol=ProtocolConfig(kind="cv", folds=3, repeats=1, val_fraction=0.25, seed=2),
        train=TrainConfig(epochs=epochs, batch_size=1, lr=1e-2, weight_decay=5e-4, eval_batch_size=16),
        methods={
            "embedding_max": MethodConfig("embedding_max", mlp),
            "minet_ds": MethodConfig("minet_ds", {"hidden": [8, 4], "dropout": 0.0}),
            "loss_attention": MethodConfig("loss_attention", mlp),
        },
    ).validate()


def test_run_experiment_func_records_match_the_trainer(tmp_path):
    from lossattn.protocols import plan_runs, run_experiment

    cfg = func_experiment(tmp_path)
    specs = [s for s in plan_runs(cfg) if s.method != "loss_attention"]
    ref = run_experiment(cfg, runs=specs)
    got = run_experiment(cfg, tmp_path / "out", engine="func", runs=specs)
    assert len(got["runs"]) == len(ref["runs"]) == 6
    for a, b in zip(ref["runs"], got["runs"], strict=True):
        assert set(b) == set(a)
        assert b["engine"] == "func" and a["engine"] == "loop"
        for key in ("method", "repeat", "fold", "seed", "selected_epoch", "n_train", "n_val"):
            assert a[key] == b[key], key
        for key in ("test_accuracy", "test_auc", "test_loss", "val_accuracy", "val_loss"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
        run_dir = tmp_path / "out" / b["method"] / f"r{b['repeat']}_f{b['fold']}"
        assert (run_dir / "result.json").exists() and (run_dir / "metrics.csv").exists()
        best = torch.load(run_dir / "best.pt", weights_only=False)
        assert best["engine"] == "func" and best["epoch"] == b["selected_epoch"]
        assert best["standardizer"] is not None
    with pytest.raises(ValueError, match="engine='vectorized' cannot train method 'embedding_max'"):
        run_experiment(cfg, engine="vectorized", runs=specs)


def test_run_plan_names_and_times_each_backend(tmp_path):
    from lossattn.cli.plan import make_plan
    from lossattn.protocols import plan_runs

    cfg = func_experiment(tmp_path, epochs=20)
    plan = make_plan(cfg, plan_runs(cfg), "auto", jobs=1)
    assert plan.engines == {
        "embedding_max": "batched (torch.func)",
        "minet_ds": "batched (torch.func)",
        "loss_attention": "batched many-runs engine",
    }
    assert all(0 < plan.seconds[m] < 600 for m in plan.engines)
    lines = "\n".join(plan.lines(cfg))
    assert "embedding_max: 3 run(s), batched (torch.func)" in lines
    one = make_plan(cfg, plan_runs(cfg)[:1], "auto", jobs=1, estimate=False)
    assert one.engines == {"embedding_max": "one run at a time (a single run)"}
