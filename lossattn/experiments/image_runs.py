"""Image classification runs (the paper's Tables 4 and 5): ResNet18-MIL, every image one bag of its positions.

The runs use the one training loop (:class:`~lossattn.engine.Trainer`) with the image classification task
(:class:`~lossattn.engine.tasks.ImageClassificationTask`: top-1, top-5, localization AP) and an image source
(minibatches of whole images, augmentation by torchvision transforms). This module prepares the runs of a
preset — class-balanced training subsets seeded per repeat, shared by all methods of a repeat — trains them
and writes their records.

Protocol (ours, not the paper's): the model is selected on a validation split carved from the training images
when the preset has one (lowest validation error, then loss); the image presets keep the last epoch (no
validation split; the learning rate is ramped down to ~0). The test images never influence training or
selection; with ``train.oracle`` the reference code's optimistic figure (best test accuracy over epochs) is
recorded, clearly labelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lossattn.datasets.images import ImageArrayDataset, class_balanced_subset, image_transforms, take_images
from lossattn.datasets.splits import train_val_split
from lossattn.engine.config import TrainConfig
from lossattn.engine.loop import Trainer
from lossattn.engine.results import FitResult
from lossattn.engine.tasks import ImageClassificationTask
from lossattn.experiments.table3 import scaled_length
from lossattn.io import atomic_write_json, atomic_write_text, versions
from lossattn.metrics import summarize
from lossattn.models.registry import create_model
from lossattn.protocols.config import ExperimentConfig, apply_overrides, config_to_dict, load_preset

__all__ = [
    "IMAGE_DATASETS",
    "IMAGE_METHODS",
    "QUICK_IMAGES",
    "QUICK_TABLE4_SIZES",
    "QUICK_TEST_SIZE",
    "QUICK_WIDTH",
    "device_name",
    "image_config",
    "image_train_config",
    "is_image_preset",
    "run_image_experiment",
    "size_key",
    "summaries",
    "train_image_classifier",
]

IMAGE_DATASETS = ("cifar10-images", "tinyimagenet-images")
#: method label -> registered model
IMAGE_METHODS: dict[str, str] = {
    "max": "resnet18_max",
    "mean": "resnet18_mean",
    "attention": "resnet18_attention",
    "gated_attention": "resnet18_gated_attention",
    "loss_attention": "resnet18_loss_attention",
}


def is_image_preset(cfg: ExperimentConfig) -> bool:
    """True for the image-classification presets, which :func:`run_image_experiment` runs (not ``run_experiment``)."""
    return cfg.data.name in IMAGE_DATASETS


#: smoke-test overrides of the image presets (2 epochs, one repeat): not a result
QUICK_IMAGES: dict[str, Any] = {
    "protocol.repeats": 1,
    "train.epochs": 2,
    "train.rampup_length": 1,
    "train.rampdown_length": 1,
    "methods.loss_attention.train.consistency_rampup": 1,
    "train.batch_size": 50,
    "train.eval_batch_size": 200,
}
QUICK_WIDTH = 8  # ResNet18 with 8/16/32/64 channels: seconds per epoch on a CPU core
QUICK_TABLE4_SIZES: tuple[int, ...] = (100,)
QUICK_TEST_SIZE = 200


def image_train_config(
    cfg: ExperimentConfig, method: str, *, epochs: int | None = None, device: str | None = None
) -> TrainConfig:
    """The training config of one method; ``epochs`` rescales the ramps so the schedule keeps its shape."""
    tc = cfg.train_config_for(method)
    if epochs is not None and int(epochs) != tc.epochs:
        ref = tc.epochs
        tc.rampup_length = scaled_length(tc.rampup_length, epochs, ref)
        tc.rampdown_length = min(scaled_length(tc.rampdown_length, epochs, ref), int(epochs))
        if tc.consistency_rampup:
            tc.consistency_rampup = max(1, scaled_length(tc.consistency_rampup, epochs, ref))
        tc.epochs = int(epochs)
    if device is not None:
        tc.device = device
    tc.validate()
    return tc


def image_config(
    preset: str, quick: bool, overrides: dict[str, Any] | None, methods: Sequence[str] | None, root: str | None
) -> ExperimentConfig:
    cfg = load_preset(preset)
    settings = {**(QUICK_IMAGES if quick else {}), **(overrides or {})}
    if root is not None:
        settings["data.root"] = root
    cfg = apply_overrides(cfg, settings) if settings else cfg
    if methods:
        cfg = apply_overrides(cfg, {"methods": list(methods)})
    return cfg


def size_key(size: int | None) -> str:
    return "all" if size is None else str(int(size))


def train_image_classifier(
    model: torch.nn.Module,
    train_set: ImageArrayDataset,
    config: TrainConfig,
    *,
    val_set: ImageArrayDataset | None = None,
    test_set: ImageArrayDataset | None = None,
    seed: int = 0,
    num_workers: int = 0,
    localization: bool = False,
    run_dir: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    resume: bool = True,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train an image model (ResNet18-MIL) with the one loop and the image classification task.

    Minibatches of images (``config.batch_size``), the schedules of ``config``, the temporal ensemble of the
    weights addressed by (image index, feature-map position) when ``config.consistency_weight > 0``. With
    ``run_dir``, a ``checkpoint.pt`` found there is resumed from (``resume``): with ``num_workers=0`` the result
    equals the uninterrupted run's. ``localization`` adds localization AP on ``test_set`` (it needs boxes).
    ``log`` is called with every epoch's history row once the epoch is complete.
    """
    if getattr(model, "input_kind", None) != "image":
        raise TypeError(f"train_image_classifier needs an image model (input_kind='image'), got {type(model).__name__}")
    config.num_workers = int(num_workers)
    task = ImageClassificationTask(localization)
    trainer = Trainer(model, config, run_dir, seed, metadata, task=task, on_epoch_end=log)
    return trainer.fit(train_set, val_set, test_set, resume=resume)


def run_image_experiment(
    cfg: ExperimentConfig,
    out: Path,
    *,
    train_images: Any,
    train_labels: np.ndarray,
    test_set: ImageArrayDataset,
    sizes: Sequence[int | None],
    repeats_for: Callable[[int | None], int],
    norm: tuple[Sequence[float], Sequence[float]],
    crop: int | tuple[int, int],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    epochs: int | None,
    device: str | None,
    width: int | None,
    resume: bool,
    localization: bool,
    num_workers: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Every (training-set size, repeat, method) run of an image preset; their records.

    Run ``<out>/size_<n>/<method>/r<k>/`` gets ``config.yaml``, ``versions.json``, ``metrics.jsonl``,
    ``best.pt`` and, last, ``result.json`` (a run without it is incomplete; with ``resume`` a finished run is
    read back, an interrupted one continues from its ``checkpoint.pt``, which is deleted once the run is done).
    """
    padding = int(cfg.data.kwargs.get("padding", 4))
    train_tf = image_transforms(True, norm[0], norm[1], crop, padding)
    eval_tf = image_transforms(False, norm[0], norm[1], crop)
    records: list[dict[str, Any]] = []
    for size in sizes:
        for rep in range(repeats_for(size)):
            seed = int(cfg.protocol.seed) * 1_000_003 + rep * 1_009 + (0 if size is None else int(size))
            subset = class_balanced_subset(train_labels, size, seed)
            if cfg.protocol.val_fraction > 0:
                tr, va = train_val_split(train_labels, subset, cfg.protocol.val_fraction, seed)
            else:
                tr, va = subset, None
            datasets: tuple[ImageArrayDataset, ImageArrayDataset | None] | None = None
            for label, method in cfg.methods.items():
                run_dir = out / f"size_{size_key(size)}" / label / f"r{rep}"
                done = run_dir / "result.json"
                if resume and done.exists():
                    records.append(json.loads(done.read_text()))
                    continue
                if datasets is None:  # decode lazily: a resumed setting decodes nothing
                    train_set = ImageArrayDataset(take_images(train_images, tr), train_labels[tr], train_tf)
                    val_set = (
                        None
                        if va is None
                        else ImageArrayDataset(take_images(train_images, va), train_labels[va], eval_tf)
                    )
                    datasets = (train_set, val_set)
                train_set, val_set = datasets
                tc = image_train_config(cfg, label, epochs=epochs, device=device)
                tc.progress = tc.progress or progress
                kwargs = dict(method.kwargs)
                if width is not None:
                    kwargs["width"] = int(width)
                torch.manual_seed(seed)
                model = create_model(method.model, num_classes=num_classes, **kwargs)
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(_run_config(cfg, label, tc, size, rep, seed)))
                atomic_write_json(run_dir / "versions.json", versions())
                fit = train_image_classifier(
                    model,
                    train_set,
                    tc,
                    val_set=val_set,
                    test_set=test_set,
                    seed=seed,
                    num_workers=num_workers,
                    localization=localization,
                    run_dir=run_dir,
                    resume=resume,
                    metadata={
                        "method": label,
                        "data_config": config_to_dict(cfg.data),
                        "num_classes": num_classes,
                        "class_names": list(class_names) if class_names else None,
                        "image_shape": list(train_set.raw(0).shape),
                        "crop": crop,
                        "normalization": {"mean": list(norm[0]), "std": list(norm[1])},
                    },
                )
                record = _record(label, method.model, size, rep, seed, tc, fit, train_set, val_set, test_set)
                record["width"] = kwargs.get("width", 64)
                atomic_write_json(run_dir / "result.json", record)
                # the run is complete (result.json, best.pt): the resume state is ~2× the model, drop it
                (run_dir / "checkpoint.pt").unlink(missing_ok=True)
                records.append(record)
    return records


def _record(label, model_name, size, rep, seed, tc, fit, train_set, val_set, test_set) -> dict[str, Any]:
    test, last = fit.test, fit.history[-1]
    return {
        "method": label,
        "model": model_name,
        "size": size,
        "repeat": rep,
        "seed": seed,
        "epochs": tc.epochs,
        "selected_epoch": fit.selected_epoch,
        "n_train": len(train_set),
        "n_val": 0 if val_set is None else len(val_set),
        "n_test": len(test_set),
        "test_accuracy": test.accuracy,
        "test_top5": test.top5,
        "test_loss": test.loss,
        "test_localization_ap": test.localization_ap,
        "val_accuracy": None if fit.val is None else fit.val.accuracy,
        "oracle_test_accuracy": fit.oracle_test_accuracy,
        "last_epoch_test_accuracy": last.get("test_accuracy"),
        "train_accuracy_last_epoch": last.get("train_accuracy"),
        "seconds": fit.seconds,
        "device": str(tc.device),
    }


def _run_config(
    cfg: ExperimentConfig, label: str, tc: TrainConfig, size: int | None, rep: int, seed: int
) -> dict[str, Any]:
    """The resolved config of one image run (its ``config.yaml``)."""
    data = config_to_dict(cfg)
    data["methods"] = {label: data["methods"][label]}
    data["train_resolved"] = config_to_dict(tc)
    data["run"] = {"method": label, "size": size, "repeat": rep, "seed": seed}
    return data


def summaries(records: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """``{size: {method: {key: summary}}}`` over repeats."""
    out: dict[str, Any] = {}
    for r in records:
        out.setdefault(size_key(r.get("size")), {}).setdefault(r["method"], []).append(r)
    return {
        size: {
            m: {"runs": len(rows), **{k: summarize([row.get(k) for row in rows]) for k in keys}}
            for m, rows in by_method.items()
        }
        for size, by_method in out.items()
    }


def device_name(device: str | None) -> str:
    if device and device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"
