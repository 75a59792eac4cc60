"""Golden values: today's exact numbers of short, fixed-seed runs of every training path.

Each ``golden_<path>(tmp_path)`` runner below trains a few tiny runs through one training path (the
bag Trainer through ``execute_run``, batched bags with the temporal-ensemble consistency cost, the
vectorized many-runs engine, the multi-label trainer, the image loop, DDP with two gloo ranks, and
resume after an interruption) and returns a flat ``{"<run>.<metric>": number}`` dict. The test
compares that dict with ``golden_values.json`` (next to this file), recorded from the code as it is:

* the key sets must be equal (a missing or new metric fails);
* integers (selected epochs, split sizes) must be equal;
* accuracy-type ratios (``*accuracy``, ``*top5``, ``*hamming``: counts over counts) must be equal
  (``abs=1e-12``);
* every other float (losses, AUCs, F1, mAP) must agree to ``rel=1e-5, abs=1e-7`` (float rounding).

The runners call only public APIs, so that a rewrite of the training code can keep the recorded
numbers and port only the runners' calls.

Recording: ``LOSSATTN_GOLDEN_RECORD=1 python -m pytest tests/golden`` reruns every runner and rewrites
its entry of ``golden_values.json`` (sorted keys, floats at full precision); a runner that skips (e.g.
``vectorized_real`` without ``$LOSSATTN_DATA``) keeps its recorded entry. Without the variable the test
compares. A changed golden value needs a written, measured reason in the commit that changes it: which
runner and keys, old and new numbers, and why the new behaviour is the right one (a bug fix, a
deliberate change of semantics, ...). "The refactor changed the numbers" is not such a reason: the
point of these tests is that a refactor does not.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import lossattn
from lossattn.datasets import ImageArrayDataset, image_transforms, make_digits_bags, make_multilabel_digits_bags
from lossattn.engine import TrainConfig, Trainer
from lossattn.experiments.image_runs import train_image_classifier
from lossattn.protocols import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ProtocolConfig,
    RunSpec,
    apply_overrides,
    config_to_dict,
    execute_run,
    load_preset,
    run_experiment,
)

GOLDEN_FILE = Path(__file__).with_name("golden_values.json")
RECORD_ENV = "LOSSATTN_GOLDEN_RECORD"

Numbers = dict[str, float | int]

# --------------------------------------------------------------------------- helpers of the runners

#: the fields of a run record (``execute_run`` / ``run_experiment``) that the golden values keep
RECORD_KEYS = (
    "selected_epoch",
    "n_train",
    "n_val",
    "n_test",
    "test_accuracy",
    "test_auc",
    "test_loss",
    "val_accuracy",
    "val_loss",
)


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"golden values must be numbers, got {value!r} ({type(value).__name__})")
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def _put(out: Numbers, prefix: str, values: Mapping[str, Any], keys) -> None:
    """``out[f"{prefix}.{k}"] = values[k]`` for every ``k`` in ``keys``."""
    for k in keys:
        out[f"{prefix}.{k}"] = _number(values[k])


def _put_history(out: Numbers, prefix: str, history: list[dict[str, Any]], keys, consistency: bool = False) -> None:
    """Per-epoch values: ``out[f"{prefix}.history.{epoch}.{k}"]``; with ``consistency`` also ``train_consistency``
    from the second epoch on (the temporal ensemble has no target during the first)."""
    for row in history:
        for k in (*keys, "train_consistency") if consistency and row["epoch"] > 0 else keys:
            out[f"{prefix}.history.{row['epoch']}.{k}"] = _number(row[k])


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _mlp(dropout: float) -> dict[str, Any]:
    return {"extractor": "mlp", "extractor_kwargs": {"hidden": [32, 16], "dropout": dropout}}


def _digits_experiment(name: str, data: str, methods: dict[str, MethodConfig], **train: Any) -> ExperimentConfig:
    """Fixed protocol on freshly generated digits bags: ~40 training, ~13 validation and 60 test bags."""
    settings = dict(epochs=3, batch_size=1, lr=2e-3, weight_decay=1e-4, eval_batch_size=64, threads=1)
    settings.update(train)
    return ExperimentConfig(
        name=name,
        data=DataConfig(
            name=data, kwargs={"num_bags": 53, "mean_bag_size": 6, "std_bag_size": 2}, test_kwargs={"num_bags": 60}
        ),
        protocol=ProtocolConfig(kind="fixed", repeats=1, val_fraction=0.25, seed=3),
        train=TrainConfig(**settings),
        methods=methods,
    ).validate()


def _execute_all(cfg: ExperimentConfig, out_dir: Path) -> Numbers:
    """``execute_run`` of every method of ``cfg`` (repeat 0): record fields and per-epoch history."""
    out: Numbers = {}
    for method in cfg.methods:
        record = execute_run(cfg, RunSpec(method, 0), out_dir)
        _put(out, method, record, RECORD_KEYS)
        consistency = cfg.train_config_for(method).consistency_weight > 0
        _put_history(out, method, _history(out_dir / method / "r0"), ("train_loss", "val_loss"), consistency)
    return out


# --------------------------------------------------------------------------- 1. bag models, one bag per step


def golden_bag_models(tmp_path: Path) -> Numbers:
    """Trainer via ``execute_run``: loss attention and attention, batch size 1, dropout 0.1, multi-class."""
    cfg = _digits_experiment(
        "golden_bag_models",
        "digits-bags-multi",
        {
            "loss_attention": MethodConfig("loss_attention", {**_mlp(0.1), "lam": 1.0, "reduction": "mean"}),
            "attention": MethodConfig("attention", {**_mlp(0.1), "hidden": 16}),
        },
    )
    return _execute_all(cfg, tmp_path)


# --------------------------------------------------------------------------- 2. batches, consistency, other heads


def golden_bag_batched_consistency(tmp_path: Path) -> Numbers:
    """Trainer via ``execute_run`` with 3 bags per step: loss attention with the temporal-ensemble consistency
    cost (multi-class), and the other bag model families (sigmoid heads, instance/embedding pooling, MI-Net
    DS/RC) on binary digits bags."""
    multi = _digits_experiment(
        "golden_consistency",
        "digits-bags-multi",
        {"loss_attention": MethodConfig("loss_attention", {**_mlp(0.1), "lam": 1.0, "reduction": "mean"})},
        batch_size=3,
        consistency_weight=5.0,
        consistency_rampup=2,
    )
    out = _execute_all(multi, tmp_path / "multi")
    binary = _digits_experiment(
        "golden_families",
        "digits-bags",
        {
            "gated_attention_sigmoid": MethodConfig("gated_attention_sigmoid", {**_mlp(0.1), "hidden": 16}),
            "instance_max": MethodConfig("instance_max", _mlp(0.1)),
            "embedding_mean": MethodConfig("embedding_mean", _mlp(0.1)),
            "minet_ds": MethodConfig("minet_ds", {"hidden": [32, 16, 8], "dropout": 0.1}),
            "minet_rc": MethodConfig("minet_rc", {"hidden": 16, "depth": 2, "dropout": 0.1}),
        },
        batch_size=3,
    )
    out.update(_execute_all(binary, tmp_path / "binary"))
    return out


# --------------------------------------------------------------------------- 3. the vectorized engine


def _cv_experiment(dropout: float, methods: tuple[str, ...]) -> ExperimentConfig:
    """3-fold CV on 45 standardised digits bags (30 train/val, 15 test per fold), one bag per step."""
    kwargs = {
        "loss_attention": {**_mlp(dropout), "lam": 1.0, "reduction": "mean"},
        "attention": {**_mlp(dropout), "hidden": 16},
        "gated_attention": {**_mlp(dropout), "hidden": 16},
    }
    return ExperimentConfig(
        name="golden_vectorized",
        data=DataConfig(
            name="digits-bags-multi", kwargs={"num_bags": 45, "mean_bag_size": 6, "std_bag_size": 2}, standardize=True
        ),
        protocol=ProtocolConfig(kind="cv", folds=3, repeats=1, val_fraction=0.25, seed=4),
        train=TrainConfig(epochs=3, batch_size=1, lr=2e-3, weight_decay=1e-4, eval_batch_size=64, threads=1),
        methods={m: MethodConfig(m, kwargs[m]) for m in methods},
    ).validate()


def _put_runs(out: Numbers, prefix: str, records: list[dict[str, Any]]) -> None:
    for r in records:
        _put(out, f"{prefix}.{r['method']}.{RunSpec(r['method'], r['repeat'], r['fold']).key}", r, RECORD_KEYS)


def golden_vectorized(tmp_path: Path) -> Numbers:
    """``run_experiment(engine="vectorized")`` with dropout 0.2 (the engine's own dropout masks), and with
    dropout 0 ``engine="trainer"``, which the vectorized engine reproduces to float rounding (checked here)."""
    out: Numbers = {}
    vec = run_experiment(_cv_experiment(0.2, ("loss_attention", "attention", "gated_attention")), engine="vectorized")
    _put_runs(out, "vectorized", vec["runs"])
    plain = _cv_experiment(0.0, ("loss_attention",))
    ref = run_experiment(plain, engine="trainer")
    same = run_experiment(plain, engine="vectorized")
    for a, b in zip(ref["runs"], same["runs"], strict=True):
        assert (a["selected_epoch"], a["test_accuracy"], a["val_accuracy"]) == (
            b["selected_epoch"],
            b["test_accuracy"],
            b["val_accuracy"],
        )
        for key in ("test_loss", "val_loss", "test_auc"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    _put_runs(out, "trainer_dropout0", ref["runs"])
    return out


def golden_vectorized_real(tmp_path: Path) -> Numbers:
    """The ``classic_mil`` preset on MUSK1 (2 folds, 3 epochs) with the vectorized engine."""
    root = os.environ.get("LOSSATTN_DATA", "").strip()
    if not root:
        pytest.skip("LOSSATTN_DATA is not set: the vectorized_real golden values need the MUSK1 files")
    if not (Path(root) / "musk1").is_dir():
        pytest.skip(f"LOSSATTN_DATA={root} has no musk1 folder")
    cfg = apply_overrides(
        load_preset("classic_mil"),
        {
            "methods": ["loss_attention", "attention"],
            "data.root": root,
            "protocol.folds": 2,
            "protocol.repeats": 1,
            "train.epochs": 3,
            "train.threads": 1,
        },
    )
    out: Numbers = {}
    _put_runs(out, "musk1", run_experiment(cfg, engine="vectorized")["runs"])
    return out


# --------------------------------------------------------------------------- 5. multi-label


def golden_multilabel(tmp_path: Path) -> Numbers:
    """MultiLabelTrainer on multi-label digits bags (3 labels), with and without the consistency cost."""
    pool = make_multilabel_digits_bags("train", 54, mean_bag_size=6, seed=5)
    train, val = pool.subset(np.arange(40)), pool.subset(np.arange(40, 54))
    test = make_multilabel_digits_bags("test", 40, mean_bag_size=6, seed=6)
    models = {
        "loss_attention_multilabel": {"lam": 1.0},
        "attention_multilabel": {"hidden": 16},
    }
    out: Numbers = {}
    for name, kwargs in models.items():
        for omega in (0.0, 5.0):
            torch.manual_seed(7)
            model = lossattn.create_model(
                name,
                in_features=train.num_features,
                num_classes=3,
                extractor_kwargs={"hidden": [32, 16], "dropout": 0.1},
                **kwargs,
            )
            cfg = TrainConfig(
                epochs=3,
                batch_size=4,
                lr=5e-3,
                weight_decay=1e-4,
                eval_batch_size=64,
                threads=1,
                consistency_weight=omega,
                consistency_rampup=2,
            )
            fit = Trainer(model, cfg, seed=8).fit(train, val, test)
            prefix = f"{name}.consistency_{omega:g}"
            out[f"{prefix}.selected_epoch"] = fit.selected_epoch
            _put(out, f"{prefix}.test", fit.test.summary(), ("loss", "micro_f1", "macro_f1", "map", "hamming"))
            _put(out, f"{prefix}.test", fit.test.summary(), ("subset_accuracy", "macro_auc"))
            _put(out, f"{prefix}.val", fit.val.summary(), ("loss", "hamming"))
            _put_history(out, prefix, fit.history, ("train_loss", "val_loss"), omega > 0)
    return out


# --------------------------------------------------------------------------- 6. images


def _toy_images(n: int, seed: int = 0, size: int = 16, classes: int = 4):
    """uint8 images ``(n, 3, size, size)``: class c has a bright square in quadrant c."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 80, size=(n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n) % classes
    h = size // 2
    for i, c in enumerate(labels):
        r0, c0 = (c // 2) * h, (c % 2) * h
        imgs[i, :, r0 + 2 : r0 + h - 2, c0 + 2 : c0 + h - 2] = 230
    return imgs, labels


def _image_sets(n_train: int, n_val: int, n_test: int):
    imgs, labels = _toy_images(n_train + n_val + n_test)
    mean, std = (0.3,) * 3, (0.3,) * 3
    train_tf, eval_tf = image_transforms(True, mean, std, 16, padding=2), image_transforms(False, mean, std, 16)
    a, b = n_train, n_train + n_val
    return (
        ImageArrayDataset(imgs[:a], labels[:a], train_tf),
        ImageArrayDataset(imgs[a:b], labels[a:b], eval_tf),
        ImageArrayDataset(imgs[b:], labels[b:], eval_tf),
    )


def _image_config(consistency: float) -> TrainConfig:
    return TrainConfig(
        epochs=2,
        batch_size=8,
        lr=3e-3,
        betas=(0.9, 0.99),
        eval_batch_size=16,
        threads=1,
        consistency_weight=consistency,
        consistency_rampup=2,
    )


def golden_images(tmp_path: Path) -> Numbers:
    """``train_image_classifier``: tiny ResNet18-MIL (width 4) with loss attention (consistency on) and mean
    pooling on 32 training, 8 validation and 8 test images of 4 classes."""
    train, val, test = _image_sets(32, 8, 8)
    out: Numbers = {}
    for name, consistency in (("resnet18_loss_attention", 100.0), ("resnet18_mean", 0.0)):
        torch.manual_seed(9)
        model = lossattn.create_model(name, num_classes=4, width=4)
        fit = train_image_classifier(model, train, _image_config(consistency), val_set=val, test_set=test, seed=10)
        out[f"{name}.selected_epoch"] = fit.selected_epoch
        _put(out, f"{name}.val", fit.val.summary(), ("loss", "accuracy", "top5"))
        _put(out, f"{name}.test", fit.test.summary(), ("loss", "accuracy", "top5"))
        _put_history(out, name, fit.history, ("train_loss", "val_loss"), consistency > 0)
    return out


# --------------------------------------------------------------------------- 7. DDP, two gloo ranks


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def golden_ddp(tmp_path: Path) -> Numbers:
    """``python -m lossattn.train.ddp`` under ``torch.distributed.run`` with 2 gloo ranks on CPU (global batch 3,
    consistency cost on, dropout 0); rank 0's record and per-epoch metrics."""
    method = "loss_attention"
    cfg = ExperimentConfig(
        name="golden_ddp",
        data=DataConfig(
            name="digits-bags-multi", kwargs={"num_bags": 22, "mean_bag_size": 5}, test_kwargs={"num_bags": 16}
        ),
        protocol=ProtocolConfig(kind="fixed", repeats=1, val_fraction=0.25, seed=2),
        train=TrainConfig(
            epochs=3,
            batch_size=3,
            lr=3e-3,
            weight_decay=1e-4,
            consistency_weight=5.0,
            eval_batch_size=32,
            threads=1,
        ),
        methods={method: MethodConfig("loss_attention", {**_mlp(0.0), "lam": 2.0})},
    ).validate()
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    # the ranks must import the checkout under test, whatever package is installed
    checkout = str(Path(lossattn.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH", "")) if p),
    }
    run_dir_root = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "lossattn.train.ddp",
        "--config",
        str(cfg_path),
        "--method",
        method,
        "--backend",
        "gloo",
        "--out",
        str(run_dir_root),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = run_dir_root / method / "r0"
    record = json.loads((run_dir / "result.json").read_text())
    out: Numbers = {}
    _put(out, method, record, (*RECORD_KEYS, "world_size", "global_batch"))
    _put_history(out, method, _history(run_dir), ("train_loss", "val_loss"), consistency=True)
    return out


# --------------------------------------------------------------------------- 8. resume after an interruption


class _Killed(RuntimeError):
    """Stands for a kill of the training process between two epochs."""


def _state_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows without their wall-clock ``seconds`` (the only entry that differs between equal runs)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def golden_resume(tmp_path: Path) -> Numbers:
    """A bag Trainer run (batch 2, dropout 0.1, consistency on) killed after 2 of 4 epochs and resumed from its
    ``run_dir``, and an image run killed after 1 of 2 epochs and resumed; each resumed run must equal the
    uninterrupted one exactly (checked here), and its numbers are recorded."""
    out: Numbers = {}
    # the bag Trainer: the kill is simulated as tests/train/test_trainer.py does, by an epoch that raises
    pool = make_digits_bags("train", 40, target_digits=(3, 5, 9), mean_bag_size=6, seed=11)
    train, val = pool.subset(np.arange(30)), pool.subset(np.arange(30, 40))
    test = make_digits_bags("test", 30, target_digits=(3, 5, 9), mean_bag_size=6, seed=12)
    cfg = TrainConfig(
        epochs=4,
        batch_size=2,
        lr=2e-3,
        weight_decay=1e-4,
        eval_batch_size=64,
        threads=1,
        consistency_weight=5.0,
        consistency_rampup=2,
    )

    def bag_model():
        torch.manual_seed(13)
        return lossattn.create_model(
            "loss_attention", in_features=train.num_features, num_classes=4, lam=1.0, **_mlp(0.1)
        )

    whole = Trainer(bag_model(), cfg, run_dir=tmp_path / "whole", seed=14).fit(train, val, test)

    def kill_after_epoch_1(row):  # the run stops once epochs 0 and 1 are complete (checkpoint written)
        if row["epoch"] == 1:
            raise _Killed

    cut = Trainer(bag_model(), cfg, run_dir=tmp_path / "cut", seed=14, on_epoch_end=kill_after_epoch_1)
    with pytest.raises(_Killed):
        cut.fit(train, val, test)
    resumed = Trainer(bag_model(), cfg, run_dir=tmp_path / "cut", seed=14).fit(train, val, test, resume=True)
    assert resumed.selected_epoch == whole.selected_epoch
    assert _state_equal(resumed.model.state_dict(), whole.model.state_dict())
    assert _untimed(resumed.history) == _untimed(whole.history)
    assert (resumed.test.loss, resumed.test.accuracy) == (whole.test.loss, whole.test.accuracy)
    out["trainer.selected_epoch"] = resumed.selected_epoch
    _put(out, "trainer.val", resumed.val.summary(), ("loss", "accuracy", "auc"))
    _put(out, "trainer.test", resumed.test.summary(), ("loss", "accuracy", "auc"))
    _put_history(out, "trainer", resumed.history, ("train_loss", "val_loss"), consistency=True)

    # the image loop: killed through its per-epoch log callback (after epoch 0's checkpoint)
    images, ival, itest = _image_sets(16, 8, 8)
    icfg = _image_config(100.0)

    def image_model():
        torch.manual_seed(15)
        return lossattn.create_model("resnet18_loss_attention", num_classes=4, width=4)

    def kill_at_epoch_1(row):  # after epoch 0 is complete (its checkpoint written)
        if row["epoch"] == 0:
            raise _Killed

    kw = dict(val_set=ival, test_set=itest, seed=16)
    iwhole = train_image_classifier(image_model(), images, icfg, run_dir=tmp_path / "iwhole", **kw)
    with pytest.raises(_Killed):
        train_image_classifier(image_model(), images, icfg, run_dir=tmp_path / "icut", log=kill_at_epoch_1, **kw)
    iresumed = train_image_classifier(image_model(), images, icfg, run_dir=tmp_path / "icut", **kw)
    assert iresumed.selected_epoch == iwhole.selected_epoch
    assert _state_equal(iresumed.model.state_dict(), iwhole.model.state_dict())
    assert [r["train_loss"] for r in iresumed.history] == [r["train_loss"] for r in iwhole.history]
    assert iresumed.test.summary() == iwhole.test.summary()
    out["images.selected_epoch"] = iresumed.selected_epoch
    _put(out, "images.val", iresumed.val.summary(), ("loss", "accuracy", "top5"))
    _put(out, "images.test", iresumed.test.summary(), ("loss", "accuracy", "top5"))
    _put_history(out, "images", iresumed.history, ("train_loss", "val_loss"), consistency=True)
    return out


# --------------------------------------------------------------------------- the comparison

RUNNERS: dict[str, Callable[[Path], Numbers]] = {
    "bag_models": golden_bag_models,
    "bag_batched_consistency": golden_bag_batched_consistency,
    "vectorized": golden_vectorized,
    "vectorized_real": golden_vectorized_real,
    "multilabel": golden_multilabel,
    "images": golden_images,
    "ddp": golden_ddp,
    "resume": golden_resume,
}

#: key endings of ratios of counts (compared exactly)
EXACT_RATIOS = ("accuracy", "top5", "hamming")


def compare(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Every difference between recorded and new golden values, as readable lines (empty when they agree)."""
    problems = [f"missing key {k!r} (recorded {expected[k]!r})" for k in sorted(set(expected) - set(got))]
    problems += [f"new key {k!r} = {got[k]!r} (not recorded)" for k in sorted(set(got) - set(expected))]
    for k in sorted(set(expected) & set(got)):
        want, have = expected[k], got[k]
        if isinstance(want, int):
            ok = isinstance(have, int) and have == want
        elif k.endswith(EXACT_RATIOS):
            ok = abs(have - want) <= 1e-12
        else:
            ok = have == pytest.approx(want, rel=1e-5, abs=1e-7, nan_ok=True)
        if not ok:
            rel = (
                abs(have - want) / abs(want)
                if isinstance(have, (int, float)) and want and math.isfinite(want)
                else None
            )
            problems.append(
                f"{k}: recorded {want!r}, got {have!r}" + ("" if rel is None else f" (rel. diff {rel:.3g})")
            )
    return problems


def _load_golden() -> dict[str, dict[str, Any]]:
    return json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.exists() else {}


def _write_golden(name: str, values: Numbers) -> None:
    data = _load_golden()
    data[name] = dict(sorted(values.items()))
    GOLDEN_FILE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


@pytest.fixture(autouse=True)
def _one_thread():
    """Runs on one torch thread (reductions then sum in a fixed order) and restores the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(RUNNERS))
def test_golden_values(name: str, tmp_path: Path) -> None:
    got = RUNNERS[name](tmp_path)
    if os.environ.get(RECORD_ENV):
        _write_golden(name, got)
    recorded = _load_golden()
    assert name in recorded, f"no golden values for {name!r}: record them with {RECORD_ENV}=1 (see the module doc)"
    problems = compare(recorded[name], got)
    assert not problems, f"{name}: {len(problems)} golden value(s) changed:\n" + "\n".join(problems)


def test_compare_flags_every_kind_of_change() -> None:
    recorded = {"a.selected_epoch": 2, "a.test_accuracy": 0.75, "a.test_loss": 0.5, "a.gone": 1.0}
    same = {"a.selected_epoch": 2, "a.test_accuracy": 0.75, "a.test_loss": 0.5 * (1 + 1e-7), "a.gone": 1.0}
    assert compare(recorded, same) == []
    changed = copy.deepcopy(same)
    changed.update({"a.selected_epoch": 1, "a.test_accuracy": 0.75 + 1e-9, "a.test_loss": 0.5 * (1 + 1e-4)})
    del changed["a.gone"]
    changed["a.new"] = 3.0
    problems = compare(recorded, changed)
    assert len(problems) == 5
    assert problems[0].startswith("missing key 'a.gone'") and problems[1].startswith("new key 'a.new'")
    assert {p.split(":")[0] for p in problems[2:]} == {"a.selected_epoch", "a.test_accuracy", "a.test_loss"}
