"""Image experiments: subsets, transforms, the image training loop, and the quick Table 3/4/5 reproductions."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import lossattn
from lossattn import datasets as D
from lossattn.datasets.tinyimagenet import make_synthetic_tinyimagenet
from lossattn.engine import ImageClassificationTask, TrainConfig, evaluate
from lossattn.experiments import image_runs as I
from lossattn.experiments import image_tables as IT
from lossattn.experiments import table3 as T3
from lossattn.protocols import load_preset
from lossattn.schedules import consistency_weight, learning_rate


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("LOSSATTN_DATA", raising=False)
    torch.set_num_threads(1)


def write_fake_cifar(root: Path, per_class_train: int = 6, per_class_test: int = 4) -> Path:
    """Tiny CIFAR-10 pickle batches (lossless layout): class c has a bright channel c % 3."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n_per_class: int) -> dict:
        labels = np.repeat(np.arange(10), n_per_class)
        data = rng.integers(0, 80, size=(len(labels), 3, 32, 32), dtype=np.uint8)
        for i, c in enumerate(labels):
            data[i, c % 3] += 150
        return {b"labels": labels.tolist(), b"data": data.reshape(len(labels), 3072)}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_class_train)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(per_class_test)))
    return root


def toy_images(n: int = 24, size: int = 16, seed: int = 0):
    """Two classes: the object (a bright square) sits in the left half for class 0, the right half for class 1."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 60, size=(n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n) % 2
    boxes = np.zeros((n, 4), dtype=np.int64)
    q = size // 4
    for i, y in enumerate(labels):
        x0 = 0 if y == 0 else size // 2
        imgs[i, :, q : q + q, x0 + 1 : x0 + 1 + q] = 250
        boxes[i] = [x0 + 1, q, x0 + q, 2 * q - 1]
    return imgs, labels, boxes


# --------------------------------------------------------------------------- subsets and transforms


def test_class_balanced_subset():
    labels = np.repeat(np.arange(10), 50)[np.random.default_rng(0).permutation(500)]
    idx = D.class_balanced_subset(labels, 100, seed=3)
    assert idx.dtype == np.int64 and len(idx) == 100 and len(np.unique(idx)) == 100
    assert (np.diff(idx) > 0).all()
    assert np.bincount(labels[idx]).tolist() == [10] * 10
    assert np.array_equal(idx, D.class_balanced_subset(labels, 100, seed=3))
    assert not np.array_equal(idx, D.class_balanced_subset(labels, 100, seed=4))
    assert np.array_equal(D.class_balanced_subset(labels, None), np.arange(500))
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        D.class_balanced_subset(labels, 105)
    with pytest.raises(ValueError, match="fewer than the 60"):
        D.class_balanced_subset(labels, 600)


def test_image_transforms():
    x = torch.full((3, 8, 8), 51, dtype=torch.uint8)  # 0.2 after scaling
    ev = D.image_transforms(False, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5), 8)(x)
    assert ev.dtype == torch.float32 and ev.shape == (3, 8, 8)
    torch.testing.assert_close(ev[:, 0, 0], torch.tensor([0.2, 0.0, -0.2]))
    tr = D.image_transforms(True, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 8, padding=4)
    torch.manual_seed(0)
    outs = [tr(x) for _ in range(20)]
    assert all(o.shape == (3, 8, 8) for o in outs)
    # zero padding shows up in some random crops; the image itself is 0.2 everywhere
    assert any(float(o.min()) == 0.0 for o in outs) and all(
        math.isclose(float(o.max()), 0.2, rel_tol=1e-6) for o in outs
    )
    ramp = torch.arange(8, dtype=torch.uint8).repeat(3, 8, 1)  # columns 0..7
    flips = D.image_transforms(True, (0.0,) * 3, (1.0,) * 3, 8, padding=0)
    seen = {round(float(flips(ramp)[0, 0, 0]) * 255) for _ in range(30)}
    assert seen == {0, 7}  # padding 0: only the horizontal flip changes the image


def test_image_array_dataset_sources():
    imgs, labels, boxes = toy_images(4)
    ds = D.ImageArrayDataset(imgs, labels, boxes=boxes)
    x, y, i = ds[2]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and (y, i) == (0, 2)
    assert ds.image_size == (16, 16) and ds.boxes.shape == (4, 4)

    class Lazy:  # like JpegZipImages: source[[i]] -> (1, C, H, W)
        def __len__(self):
            return len(imgs)

        def __getitem__(self, idx):
            return imgs[np.asarray(idx)]

    assert torch.equal(D.ImageArrayDataset(Lazy(), labels)[3][0], torch.from_numpy(imgs[3]))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        D.ImageArrayDataset(imgs, labels[:3])


# --------------------------------------------------------------------------- the training loop


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        epochs=3,
        batch_size=8,
        lr=3e-3,
        betas=(0.9, 0.99),
        rampup_length=2,
        rampdown_length=1,
        beta1_rampdown_to=0.5,
        beta2_after_rampup=0.999,
        eval_batch_size=16,
        oracle=True,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_loss_attention_with_consistency_and_schedules():
    imgs, labels, boxes = toy_images(24)
    tf = D.image_transforms(True, (0.2,) * 3, (0.3,) * 3, 16, padding=2)
    ev = D.image_transforms(False, (0.2,) * 3, (0.3,) * 3, 16)
    train = D.ImageArrayDataset(imgs, labels, tf)
    test = D.ImageArrayDataset(imgs[:8], labels[:8], ev, boxes=boxes[:8])
    cfg = tiny_config(consistency_weight=400.0, consistency_rampup=2)
    torch.manual_seed(0)
    model = lossattn.create_model("resnet18_loss_attention", num_classes=2, width=4)
    rows = []
    fit = I.train_image_classifier(model, train, cfg, test_set=test, seed=5, localization=True, log=rows.append)
    assert rows == fit.history and len(rows) == 3
    for m, row in enumerate(rows):
        assert math.isclose(row["lr"], learning_rate(m, 3e-3, 3, 2, 1, 12.5))
        assert math.isclose(row["consistency_weight"], consistency_weight(m, 400.0, 2))
        assert row["beta2"] == (0.99 if m < 2 else 0.999)
        assert {"train_loss", "train_bag", "train_instance", "train_accuracy", "test_accuracy", "test_top5"} <= set(row)
        assert 0.0 <= row["test_localization_ap"] <= 1.0
    assert "train_consistency" not in rows[0]  # the ensemble has no target before the first epoch ends
    assert rows[1]["train_consistency"] > 0 and rows[2]["train_consistency"] > 0
    assert fit.selected_epoch == 2 and fit.val is None  # no validation set: the last epoch
    assert fit.test.accuracy == rows[-1]["test_accuracy"]
    assert fit.oracle_test_accuracy == max(r["test_accuracy"] for r in rows)
    assert 0.0 <= fit.test.localization_ap <= 1.0 and fit.test.top5 == 1.0  # two classes
    assert fit.test.predictions.shape == (8,)


def test_validation_selection_and_reproducibility():
    imgs, labels, _ = toy_images(24)
    ev = D.image_transforms(False, (0.2,) * 3, (0.3,) * 3, 16)
    train = D.ImageArrayDataset(imgs[:16], labels[:16], D.image_transforms(True, (0.2,) * 3, (0.3,) * 3, 16))
    val = D.ImageArrayDataset(imgs[16:], labels[16:], ev)

    def run():
        torch.manual_seed(1)
        model = lossattn.create_model("resnet18_attention", num_classes=2, width=4)
        return I.train_image_classifier(model, train, tiny_config(oracle=False), val_set=val, seed=2)

    a, b = run(), run()
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    errors = [(1 - r["val_accuracy"], r["val_loss"]) for r in a.history]
    assert a.selected_epoch == min(range(3), key=lambda e: errors[e])
    assert "test_accuracy" not in a.history[0] and a.test is None and a.oracle_test_accuracy is None
    assert math.isclose(a.val.accuracy, a.history[a.selected_epoch]["val_accuracy"])


def evaluate_images(model, ds, batch_size=64, localization=False):
    return evaluate(model, ds, batch_size, task=ImageClassificationTask(localization=localization))


def test_evaluate_images_and_bad_calls():
    imgs, labels, boxes = toy_images(8)
    ds = D.ImageArrayDataset(imgs, labels, D.image_transforms(False, (0.2,) * 3, (0.3,) * 3, 16), boxes=boxes)
    model = lossattn.create_model("resnet18_max", num_classes=2, width=4)
    res = evaluate_images(model, ds, batch_size=3, localization=True)
    assert 0 <= res.accuracy <= 1 and res.top5 == 1.0 and res.localization_ap is not None
    assert {"loss", "accuracy", "top5", "localization_ap"} <= set(res.summary())
    # arrays with a deterministic transform are evaluated a batch at a time: the same numbers as per image
    model.eval()
    tf = ds.transform
    slow = D.ImageArrayDataset(imgs, labels, lambda x: tf(x), boxes=boxes)  # no `deterministic` flag
    res_slow = evaluate_images(model, slow, batch_size=3, localization=True)
    assert math.isclose(res.loss, res_slow.loss, rel_tol=1e-5) and res.accuracy == res_slow.accuracy
    assert res.localization_ap == res_slow.localization_ap
    with pytest.raises(ValueError, match="needs a dataset with boxes"):
        evaluate_images(model, D.ImageArrayDataset(imgs, labels), localization=True)
    with pytest.raises(TypeError, match="needs an image model"):
        I.train_image_classifier(lossattn.create_model("loss_attention", in_features=3), ds, tiny_config())


# --------------------------------------------------------------------------- presets and configs


def test_image_presets_hold_the_spec_settings():
    cfg = load_preset("cifar10_images")
    assert I.is_image_preset(cfg) and not I.is_image_preset(load_preset("cifar10_bags"))
    assert {m.model for m in cfg.methods.values()} == set(I.IMAGE_METHODS.values())
    la = cfg.train_config_for("loss_attention")
    assert (la.epochs, la.lr, la.batch_size, la.rampup_length, la.rampdown_length) == (200, 3e-3, 100, 80, 50)
    assert (la.consistency_weight, la.consistency_rampup, la.beta1_rampdown_to, la.beta2_after_rampup) == (
        400.0,
        80,
        0.5,
        0.999,
    )
    assert cfg.methods["loss_attention"].kwargs["lam"] == 1.0
    assert cfg.train_config_for("mean").consistency_weight == 0
    assert cfg.protocol.val_fraction == 0 and cfg.data.kwargs["train_sizes"] == [1000, 5000, None]
    tiny = load_preset("tinyimagenet_images")
    assert I.is_image_preset(tiny) and set(tiny.methods) == set(cfg.methods)
    short = I.image_train_config(cfg, "loss_attention", epochs=20, device="cpu")
    assert (short.epochs, short.rampup_length, short.rampdown_length, short.consistency_rampup) == (20, 8, 5, 8)


def test_table3_config_scaling():
    cfg = T3.table3_config(50, 500, epochs=50, repeats=4)
    assert cfg.name == "table3_mean50_bags500"
    assert cfg.data.kwargs == {"num_bags": 500, "mean_bag_size": 50, "std_bag_size": 10.0}
    assert cfg.protocol.repeats == 4 and cfg.train.epochs == 50 and cfg.train.rampdown_length == 15
    assert cfg.train_config_for("loss_attention").consistency_rampup == 20
    full = T3.table3_config(10, 5000)
    assert (full.train.epochs, full.train.rampdown_length, full.data.kwargs["std_bag_size"]) == (100, 30, 2.0)
    assert full.methods["loss_attention"].kwargs["lam"] == 0.01


# --------------------------------------------------------------------------- quick reproductions


def test_reproduce_table3_quick(tmp_path: Path):
    root = write_fake_cifar(tmp_path / "data")
    tiny = {"data.kwargs.num_bags": 12, "data.test_kwargs.num_bags": 8, "data.kwargs.mean_bag_size": 3}
    report = T3.reproduce_table3(tmp_path / "t3", quick=True, root=str(root), overrides=tiny)
    assert report["data_source"] == "pickle" and list(report["settings"]) == ["10,500"]
    summary = report["settings"]["10,500"]["summary"]
    assert set(summary) == {"attention", "gated_attention", "loss_attention"}
    md = (tmp_path / "t3" / "table3.md").read_text()
    assert "Quick smoke-test settings" in md and "0.395" in md
    assert "## Paired comparison with attention — mean 10, 500 bags" in md
    assert "| balanced accuracy | loss_attention | 1 |" in md
    comparison = report["settings"]["10,500"]["comparison"]
    assert comparison["reference"] == "attention" and comparison["pair_on"] == ["repeat", "fold"]
    assert json.loads((tmp_path / "t3" / "table3.json").read_text())["table"] == "table3"


def test_reproduce_table4_quick_and_resume(tmp_path: Path):
    root = write_fake_cifar(tmp_path / "data")
    kw = dict(quick=True, root=str(root), sizes=(20,), test_size=20, methods=("mean", "loss_attention"), width=4)
    report = IT.reproduce_table4(tmp_path / "t4", **kw)
    assert [r["method"] for r in report["runs"]] == ["mean", "loss_attention"]
    assert all(r["n_train"] == 20 and r["n_test"] == 20 and r["epochs"] == 2 for r in report["runs"])
    assert report["data_source"] == "pickle" and report["device_name"] == "cpu"
    md = (tmp_path / "t4" / "table4.md").read_text()
    assert "| loss_attention | " in md and "Quick smoke-test" in md
    assert "## Paired comparison with mean — 20 training images" in md and "| accuracy | loss_attention | 1 |" in md
    pair = report["comparison"]["20"]["metrics"]["test_accuracy"]["loss_attention"]
    assert pair["n"] == 1 and pair["mean_diff"] == pytest.approx(
        report["runs"][1]["test_accuracy"] - report["runs"][0]["test_accuracy"]
    )
    assert report["spread"]["20"]["test_accuracy"]["mean"]["n_runs"] == 1
    assert (tmp_path / "t4" / "size_20" / "loss_attention" / "r0" / "metrics.jsonl").exists()
    again = IT.reproduce_table4(tmp_path / "t4", **kw)  # resumed: read back, not retrained
    assert [r["seconds"] for r in again["runs"]] == [r["seconds"] for r in report["runs"]]


def test_reproduce_table5_quick_on_a_tinyimagenet_tree(tmp_path: Path):
    top = make_synthetic_tinyimagenet(tmp_path / "data", num_classes=4, train_per_class=4, val_per_class=2)
    report = IT.reproduce_table5(tmp_path / "t5", quick=True, root=str(top), methods=("max", "loss_attention"), width=4)
    assert not report["synthetic"] and report["num_classes"] == 4 and report["test_size"] == 8
    for r in report["runs"]:
        assert 0.0 <= r["test_localization_ap"] <= 1.0 and r["n_train"] == 16
    md = (tmp_path / "t5" / "table5.md").read_text()
    assert "localization AP" in md and "| loss_attention |" in md
    # without data, quick falls back to a synthetic tree and says so
    report = IT.reproduce_table5(tmp_path / "t5s", quick=True, methods=("mean",), width=4, epochs=1)
    assert report["synthetic"] and "Synthetic data" in (tmp_path / "t5s" / "table5.md").read_text()


def test_repeats_whose_bags_cannot_be_split_are_skipped(monkeypatch: pytest.MonkeyPatch):
    import types

    from lossattn.protocols.runs import run_seed

    cfg = T3.table3_config(50, 500, repeats=3)
    singles = {run_seed(cfg, r, None) for r in (1, 2)}  # repeats 1 and 2 draw exactly one "none" bag

    def fake(data_cfg, split, seed):
        labels = np.array([0] * (1 if seed in singles else 0) + [1, 2, 3] * 5)
        return types.SimpleNamespace(labels=labels)

    monkeypatch.setattr(T3, "make_generated", fake)
    assert T3.splittable_repeats(cfg) == ([0, 3, 4], [1, 2])
    cfg.protocol.val_fraction = 0.0  # no validation split: nothing to skip
    assert T3.splittable_repeats(cfg) == ([0, 1, 2], [])


# --------------------------------------------------------------------------- checkpoints and resume


class _Killed(RuntimeError):
    pass


def test_image_run_resumes_after_a_kill_to_the_same_weights(tmp_path: Path):
    imgs, labels, _ = toy_images(16)
    ev = D.image_transforms(False, (0.2,) * 3, (0.3,) * 3, 16)
    train = D.ImageArrayDataset(imgs[:12], labels[:12], D.image_transforms(True, (0.2,) * 3, (0.3,) * 3, 16))
    val = D.ImageArrayDataset(imgs[12:], labels[12:], ev)
    cfg = tiny_config(consistency_weight=400.0, consistency_rampup=2, oracle=False)

    def fresh():
        torch.manual_seed(3)
        return lossattn.create_model("resnet18_loss_attention", num_classes=2, width=4)

    whole = I.train_image_classifier(fresh(), train, cfg, val_set=val, seed=4, run_dir=tmp_path / "whole")

    def kill_after_epoch_0(row):  # called once the epoch is complete: its checkpoint is written
        if row["epoch"] == 0:
            raise _Killed

    run = tmp_path / "killed"
    with pytest.raises(_Killed):
        I.train_image_classifier(fresh(), train, cfg, val_set=val, seed=4, run_dir=run, log=kill_after_epoch_0)
    assert (run / "checkpoint.pt").exists() and not (run / "best.pt").exists()  # nothing looks finished
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # as far as the checkpoint, no further
    resumed = I.train_image_classifier(fresh(), train, cfg, val_set=val, seed=4, run_dir=run)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    best = torch.load(run / "best.pt", weights_only=False)
    assert best["model_name"] == "resnet18_loss_attention" and best["input_kind"] == "image"
    assert best["epoch"] == resumed.selected_epoch and best["model_kwargs"]["width"] == 4


def test_image_checkpoint_for_another_training_set_is_refused(tmp_path: Path):
    imgs, labels, _ = toy_images(12)
    tf = D.image_transforms(False, (0.2,) * 3, (0.3,) * 3, 16)
    model = lossattn.create_model("resnet18_mean", num_classes=2, width=4)
    cfg = tiny_config(oracle=False, epochs=1)
    I.train_image_classifier(model, D.ImageArrayDataset(imgs, labels, tf), cfg, run_dir=tmp_path)
    (tmp_path / "best.pt").unlink()
    (tmp_path / "checkpoint.pt").exists() or pytest.fail("no checkpoint written")
    with pytest.raises(ValueError, match="12 training images, this run has 8"):
        I.train_image_classifier(model, D.ImageArrayDataset(imgs[:8], labels[:8], tf), cfg, run_dir=tmp_path)


def test_table4_runs_leave_a_best_checkpoint_and_no_resume_state(tmp_path: Path):
    root = write_fake_cifar(tmp_path / "data")
    IT.reproduce_table4(
        tmp_path / "t4", quick=True, root=str(root), sizes=(20,), test_size=20, methods=("max",), width=4
    )
    run = tmp_path / "t4" / "size_20" / "max" / "r0"
    assert {p.name for p in run.iterdir()} == {
        "best.pt",
        "config.yaml",
        "metrics.csv",
        "metrics.jsonl",
        "result.json",
        "versions.json",
    }
    best = torch.load(run / "best.pt", weights_only=False)
    assert best["class_names"][0] == "airplane" and best["image_shape"] == [3, 32, 32]
    assert best["normalization"]["mean"][0] == pytest.approx(0.4914)
    assert best["data_config"]["name"] == "cifar10-images" and best["method"] == "max"
