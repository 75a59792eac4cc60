"""The vectorized engine: each run of a group is the run the Trainer would train alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from manyruns_data import toy_bags

import lossattn
from lossattn.engine import Trainer, denormals_flushed
from lossattn.engine import manyruns as V
from lossattn.engine.manyruns import arch as VA
from lossattn.engine.manyruns import grads as VG
from lossattn.protocols import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ProtocolConfig,
    TrainConfig,
    plan_runs,
    run_experiment,
)

METHODS = {
    "la_mean": ("loss_attention", {"lam": 0.5, "reduction": "mean"}),
    "la_sum": ("loss_attention", {"lam": 0.3, "reduction": "sum"}),
    "attention": ("attention", {"hidden": 5}),
    "gated": ("gated_attention", {"hidden": 5}),
}


def make_model(model: str, kwargs: dict, seed: int, dropout: float = 0.0, dim: int = 6):
    torch.manual_seed(seed)
    return lossattn.create_model(
        model, in_features=dim, extractor_kwargs={"hidden": [16, 8], "dropout": dropout}, **kwargs
    )


def config(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=1, lr=3e-3, weight_decay=5e-4, eval_batch_size=8, oracle=True)
    base.update(kw)
    return TrainConfig(**base)


# three runs with different numbers of training bags: the shorter runs are inactive at the end of each epoch
SEEDS = [11, 12, 13]


def splits():
    trains = [toy_bags(14 + 3 * i, seed=i) for i in range(3)]
    vals = [toy_bags(8, seed=10 + i) for i in range(3)]
    tests = [toy_bags(10, seed=20 + i) for i in range(3)]
    return trains, vals, tests


def max_param_diff(a, b) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("levels", [1, 4], ids=["dense", "levels"])
def test_each_run_equals_the_trainer_without_dropout(method, levels):
    model, kwargs = METHODS[method]
    trains, vals, tests = splits()
    cfg = config()
    engine = V.VectorizedTrainer(
        [make_model(model, kwargs, s) for s in SEEDS], cfg, SEEDS, max_levels=levels, level_overhead=0, gather_cost=0
    )
    results = engine.fit(trains, vals, tests)
    for i, seed in enumerate(SEEDS):
        ref = Trainer(make_model(model, kwargs, seed), cfg, seed=seed).fit(trains[i], vals[i], tests[i])
        got = results[i]
        assert got.selected_epoch == ref.selected_epoch
        assert max_param_diff(got.model, ref.model) < 1e-5
        np.testing.assert_allclose(got.test.probabilities, ref.test.probabilities, atol=1e-5)
        np.testing.assert_allclose(
            [h["val_loss"] for h in got.history], [h["val_loss"] for h in ref.history], atol=1e-5
        )
        assert [h["val_error"] for h in got.history] == [h["val_error"] for h in ref.history]
        assert got.oracle_test_accuracy == ref.oracle_test_accuracy
        np.testing.assert_allclose(
            [h["train_loss"] for h in got.history], [h["train_loss"] for h in ref.history], atol=1e-5
        )
    if levels > 1:
        assert engine.stats["multi_level_steps"] > 0  # the level split was exercised
    assert not denormals_flushed()  # the engine trains with denormals flushed and restores the mode


@pytest.mark.parametrize("rule", ["loss", "auc", "balanced_error"])
def test_selection_rule_is_the_trainers(rule):
    """The epoch is selected by the task's key under ``TrainConfig.selection`` (not always by validation error),
    and the history rows hold the Trainer's validation and oracle figures."""
    model, kwargs = METHODS["la_mean"]
    trains, vals, tests = splits()
    cfg = config(epochs=6, selection=rule, lr=1e-2)
    results = V.VectorizedTrainer([make_model(model, kwargs, s) for s in SEEDS], cfg, SEEDS).fit(trains, vals, tests)
    for i, seed in enumerate(SEEDS):
        ref = Trainer(make_model(model, kwargs, seed), cfg, seed=seed).fit(trains[i], vals[i], tests[i])
        assert results[i].selected_epoch == ref.selected_epoch
        assert max_param_diff(results[i].model, ref.model) < 1e-5
        for key in ("val_loss", "val_error", "val_balanced_accuracy", "val_auc", "test_accuracy", "test_auc"):
            np.testing.assert_allclose(
                [h[key] for h in results[i].history], [h[key] for h in ref.history], atol=1e-5, err_msg=key
            )
    if rule == "loss":
        assert [r.selected_epoch for r in results] == [
            int(np.argmin([h["val_loss"] for h in r.history])) for r in results
        ]


@pytest.mark.parametrize("method", ["la_mean", "gated"])
def test_dropout_run_does_not_depend_on_its_group(method):
    model, kwargs = METHODS[method]
    trains, vals, tests = splits()
    cfg = config(epochs=3)
    group = V.VectorizedTrainer([make_model(model, kwargs, s, dropout=0.5) for s in SEEDS], cfg, SEEDS).fit(
        trains, vals, tests
    )
    for i, seed in enumerate(SEEDS):
        alone = V.VectorizedTrainer([make_model(model, kwargs, seed, dropout=0.5)], cfg, [seed]).fit(
            [trains[i]], [vals[i]], [tests[i]]
        )[0]
        assert group[i].selected_epoch == alone.selected_epoch
        assert max_param_diff(group[i].model, alone.model) < 1e-5
    # dropout is on: the runs differ from the dropout-free ones
    plain = V.VectorizedTrainer([make_model(model, kwargs, s) for s in SEEDS], cfg, SEEDS).fit(trains, vals, tests)
    assert max_param_diff(group[0].model, plain[0].model) > 1e-4


def test_inactive_runs_get_no_update():
    """A run whose epoch is over keeps its parameters and Adam state bit for bit until the next epoch."""
    seen = {"inactive_steps": 0}

    class Checked(V.VectorizedTrainer):
        def _step(self, t, k, params, grads, *args, **kw):
            self._k = k
            self._before = {n: v.clone() for n, v in params.items()}
            self._params = params
            return super()._step(t, k, params, grads, *args, **kw)

        def _adam(self, active, lr, b1, b2, fused):
            state_before = [[x.clone() for x in cls[2] + cls[3]] for cls in self._all_classes]
            super()._adam(active, lr, b1, b2, fused)
            k, R = self._k, next(iter(self._params.values())).shape[0]
            for n, v in self._params.items():
                assert torch.equal(v[k:], self._before[n][k:]), n  # inactive runs: untouched
                assert not torch.equal(v[:k], self._before[n][:k]), n  # active runs: updated
            for cls, before in zip(self._all_classes, state_before, strict=True):
                if not any(cls is a for a in active):
                    assert all(torch.equal(x, y) for x, y in zip(cls[2] + cls[3], before, strict=True))
            seen["inactive_steps"] += int(k < R)

    trains, vals, tests = splits()
    model, kwargs = METHODS["la_mean"]
    engine = Checked([make_model(model, kwargs, s) for s in SEEDS], config(epochs=2), SEEDS)
    engine.fit(trains, vals, tests)
    assert seen["inactive_steps"] == 2 * (len(trains[2]) - len(trains[0]))
    # every run made exactly epochs × its number of training bags optimizer steps
    assert engine.stats["updates"] == [2 * len(t) for t in trains]


@pytest.mark.parametrize("method", list(METHODS))
def test_hand_written_gradients_match_autograd(method):
    """Loss and parameter gradients of one batched step, dense and split into row levels, against autograd."""
    model, kwargs = METHODS[method]
    torch.manual_seed(0)
    models = [make_model(model, kwargs, s, dim=5) for s in range(4)]
    arch = VA.arch_of(models[0])
    params = {
        n: torch.stack([VA.to_engine(dict(m.named_parameters())[n].detach()) for m in models]).double()
        for n in arch.names
    }
    sizes = np.array([7, 2, 5, 1])
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    mask = torch.from_numpy(np.arange(7)[None, :] < sizes[:, None])
    x = x * mask.unsqueeze(-1)
    y = torch.tensor([1, 0, 1, 1])
    n = torch.from_numpy(sizes).double()
    drop = [(torch.rand(4, 7, w, dtype=torch.float64) > 0.3).double() / 0.7 for w in arch.widths]
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    ref_loss = VG.reference_loss(arch, leaves, x, mask, y, n, drop)
    ref_loss.sum().backward()
    grads = {k: torch.empty_like(v) for k, v in params.items()}
    loss = VG.loss_and_grads(arch, params, grads, x, mask, y, n, drop)
    torch.testing.assert_close(loss, ref_loss.detach())
    for k in params:
        torch.testing.assert_close(grads[k], leaves[k].grad, msg=k)
    # the same step split into row pieces: rows [0, 2) of every run, rows [2, 7) of the runs longer than 2
    long = torch.tensor([0, 2])
    mlp = [nm for pair in arch.layers for nm in pair]
    h0, c0 = VG.mlp_forward(arch, params, x[:, :2], [d[:, :2] for d in drop])
    p1 = {nm: params[nm][long] for nm in mlp}
    d1 = [d[long, 2:] for d in drop]
    h1, c1 = VG.mlp_forward(arch, p1, x[long, 2:], d1)
    g = {k: torch.empty_like(v) for k, v in params.items()}
    loss2, (gh0, gh1) = VG.head_pieces(arch, params, g, [(None, h0, mask[:, :2]), (long, h1, mask[long, 2:])], y, n)
    VG.mlp_backward(arch, params, g, gh0, c0, [d[:, :2] for d in drop])
    g1 = {nm: torch.empty_like(v) for nm, v in p1.items()}
    VG.mlp_backward(arch, p1, g1, gh1, c1, d1)
    for nm in mlp:
        g[nm].index_add_(0, long, g1[nm])
    torch.testing.assert_close(loss2, ref_loss.detach())
    for k in params:
        torch.testing.assert_close(g[k], leaves[k].grad, msg=k)


def test_unsupported_configurations_are_named():
    m = make_model("loss_attention", {}, 0)
    assert V.unsupported_reason(m, config()) is None
    assert "batch_size" in V.unsupported_reason(m, config(batch_size=2))
    assert "consistency" in V.unsupported_reason(m, config(consistency_weight=1.0))
    torch.manual_seed(0)
    inst = lossattn.create_model("instance_max", in_features=6, extractor_kwargs={"hidden": [8]})
    assert "not vectorized" in V.unsupported_reason(inst, config())
    with pytest.raises(ValueError, match="cannot train"):
        V.VectorizedTrainer([inst], config(), [0])


# --------------------------------------------------------------------------- protocol integration


def write_table(path, n_bags: int = 24, dim: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lines = ["bag_id,label," + ",".join(f"f{k}" for k in range(dim))]
    for b in range(n_bags):
        n = int(rng.integers(1, 7))
        y = b % 2
        hit = int(rng.integers(n)) if y else -1
        for t in range(n):
            x = rng.normal(size=dim)
            if t == hit:
                x[0] += 3.0
            lines.append(f"bag{b:02d},{y}," + ",".join(f"{v:.5f}" for v in x))
    path.write_text("\n".join(lines) + "\n")


def experiment(path, dropout: float = 0.0, extra_methods: dict | None = None) -> ExperimentConfig:
    mlp = {"extractor_kwargs": {"hidden": [8], "dropout": dropout}}
    methods = {
        "loss_attention": MethodConfig("loss_attention", {**mlp, "lam": 0.1, "reduction": "mean"}),
        "gated_attention": MethodConfig("gated_attention", {**mlp, "hidden": 4}),
        **(extra_methods or {}),
    }
    return ExperimentConfig(
        name="vec",
        data=DataConfig(name=str(path), standardize=True),
        protocol=ProtocolConfig(kind="cv", folds=3, repeats=1, val_fraction=0.25, seed=2),
        train=TrainConfig(epochs=3, batch_size=1, lr=1e-2, weight_decay=5e-4, eval_batch_size=16),
        methods=methods,
    ).validate()


def test_run_experiment_vectorized_records_match_the_trainer(tmp_path):
    path = tmp_path / "bags.csv"
    write_table(path)
    cfg = experiment(path)
    ref = run_experiment(cfg)
    vec = run_experiment(cfg, tmp_path / "out", engine="vectorized")
    assert len(vec["runs"]) == len(ref["runs"]) == 6
    for a, b in zip(ref["runs"], vec["runs"], strict=True):
        assert set(b) == set(a)
        assert b["engine"] == "vectorized" and a["engine"] == "loop"
        for key in ("method", "model", "repeat", "fold", "seed", "selected_epoch", "epochs", "n_train", "n_val"):
            assert a[key] == b[key], key
        for key in ("test_accuracy", "test_auc", "test_loss", "val_accuracy", "val_loss"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key
        run_dir = tmp_path / "out" / b["method"] / (f"r{b['repeat']}_f{b['fold']}")
        assert (run_dir / "result.json").exists() and (run_dir / "best.pt").exists()
        best = torch.load(run_dir / "best.pt", weights_only=False)
        assert best["epoch"] == b["selected_epoch"] and best["standardizer"] is not None
    assert vec["summary"].keys() == ref["summary"].keys()
    # resume reads complete runs back
    again = run_experiment(cfg, tmp_path / "out", engine="vectorized", resume=True)
    assert [r["test_loss"] for r in again["runs"]] == [r["test_loss"] for r in vec["runs"]]


def test_auto_engine_falls_back_per_method(tmp_path):
    path = tmp_path / "bags.csv"
    write_table(path, n_bags=18)
    mlp = {"extractor_kwargs": {"hidden": [8]}}
    extra = {
        "embedding_max": MethodConfig("embedding_max", mlp),  # the torch.func backend only
        "two_per_step": MethodConfig("embedding_max", mlp, train={"batch_size": 2}),  # no batched backend
    }
    cfg = experiment(path, dropout=0.2, extra_methods=extra)
    with pytest.raises(ValueError, match="embedding_max"):
        run_experiment(cfg, engine="vectorized")
    with pytest.raises(ValueError, match="two_per_step"):
        run_experiment(cfg, engine="func")
    res = run_experiment(cfg, engine="auto")
    engines = {r["method"]: r.get("engine") for r in res["runs"]}
    assert engines == {
        "loss_attention": "vectorized",
        "gated_attention": "vectorized",
        "embedding_max": "func",
        "two_per_step": "loop",
    }
    # records come back in plan order
    assert [(r["method"], r["fold"]) for r in res["runs"]] == [(s.method, s.fold) for s in plan_runs(cfg)]
    with pytest.raises(ValueError, match="unknown engine"):
        run_experiment(cfg, engine="fast")
