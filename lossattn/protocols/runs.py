"""One run of an experiment: its split, its model, its training, its record and files.

Every way of running (one at a time, a batched group, DDP ranks) goes through :func:`prepare_run` (the split,
the standardiser fitted on the run's training bags, the seeded model, ``config.yaml`` and ``versions.json``)
and :func:`finish_run` (the record, ``result.json`` written last and atomically, so a run folder without it is
incomplete). Runs are seeded from (protocol seed, repeat, fold) — shared by all methods, so methods see the
same bags, split and initial RNG state — and give the same record in any order or process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lossattn import datasets as D
from lossattn.engine.config import TrainConfig
from lossattn.engine.loop import Trainer
from lossattn.engine.results import FitResult
from lossattn.engine.tasks import task_for
from lossattn.io import atomic_write_json, atomic_write_text, versions
from lossattn.models.registry import create_model
from lossattn.protocols.config import ExperimentConfig, config_from_dict, config_to_dict
from lossattn.protocols.data import is_generator, load_dataset, make_generated
from lossattn.slides.localization import localization_scores

__all__ = [
    "PreparedRun",
    "RunSpec",
    "execute_run",
    "finish_run",
    "model_classes",
    "plan_runs",
    "prepare_run",
    "prepare_split",
    "read_finished",
    "run_record",
    "run_seed",
]


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method on one (repeat, fold) split."""

    method: str
    repeat: int
    fold: int | None = None

    @property
    def key(self) -> str:
        return f"r{self.repeat}" + ("" if self.fold is None else f"_f{self.fold}")


def run_seed(cfg: ExperimentConfig, repeat: int, fold: int | None) -> int:
    """Seed of one split; shared by all methods so they see the same bags, split and initial RNG state."""
    return int(cfg.protocol.seed) * 1_000_003 + repeat * 1_009 + (0 if fold is None else fold + 1)


def plan_runs(cfg: ExperimentConfig) -> list[RunSpec]:
    """All runs of an experiment, split-major so that methods on one split are adjacent."""
    p = cfg.protocol
    folds: list[int | None] = list(range(p.folds)) if p.kind == "cv" else [None]
    return [RunSpec(m, r, f) for r in range(p.repeats) for f in folds for m in cfg.methods]


_DATA_CACHE: dict[str, Any] = {}


def _cached(key: str, build):
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) > 8:
            _DATA_CACHE.clear()
        _DATA_CACHE[key] = build()
    return _DATA_CACHE[key]


def prepare_split(cfg: ExperimentConfig, repeat: int, fold: int | None, return_scaler: bool = False):
    """The (train, val, test) bag datasets of one split, standardised on the training bags if asked.

    ``test`` is None for ``protocol.kind == "all"``. A fixed split of data whose split column also names validation
    bags (``val``, ``valid``, ``validation``) uses them instead of carving a validation split. With ``return_scaler`` the fitted
    :class:`~lossattn.datasets.Standardizer` (or None) is returned too.
    """
    p, data_cfg = cfg.protocol, cfg.data
    seed = run_seed(cfg, repeat, fold)
    data_key = json.dumps(config_to_dict(data_cfg), sort_keys=True)
    if p.kind in ("cv", "all") or not is_generator(data_cfg.name):
        if is_generator(data_cfg.name):
            full = _cached(data_key + f"|gen|{p.seed}", lambda: make_generated(data_cfg, "train", p.seed))
        else:
            full = _cached(data_key, lambda: load_dataset(data_cfg))
    if p.kind == "cv":
        groups = _groups(full, p)
        folds = _cached(
            data_key + f"|folds|{p.seed}|{repeat}|{groups is not None}",
            lambda: D.stratified_kfold(full.labels, p.folds, seed=p.seed * 7919 + repeat, groups=groups),
        )
        train_idx, test_idx = folds[fold]
        train_all, test = full.subset(train_idx), full.subset(test_idx)
    elif p.kind == "all":
        train_all, test = full, None
    elif is_generator(data_cfg.name):
        train_all = make_generated(data_cfg, "train", seed)
        test = _cached(data_key + f"|test|{repeat}", lambda: make_generated(data_cfg, "test", seed + 500_000))
    else:
        train_all, test = full.subset(D.split_indices(full, "train")), full.subset(D.split_indices(full, "test"))
        named_val = _named_validation(full)
        if named_val is not None:  # the data's own validation split (train/val/test columns, as CLAM writes)
            val = full.subset(named_val)
            return _standardised(data_cfg, train_all, val, test, return_scaler)
    if p.val_fraction > 0:
        tr, va = D.train_val_split(
            train_all.labels, val_fraction=p.val_fraction, seed=seed, groups=_groups(train_all, p)
        )
        train, val = train_all.subset(tr), train_all.subset(va)
    else:
        train, val = train_all, None
    return _standardised(data_cfg, train, val, test, return_scaler)


#: values of a split column that name the validation bags of a fixed split
VALIDATION_SPLITS = ("val", "valid", "validation")


def _named_validation(dataset) -> Any:
    splits = getattr(dataset, "splits", None)
    if splits is None:
        return None
    values = np.asarray(splits)
    idx = np.flatnonzero(np.isin(values, VALIDATION_SPLITS))
    return idx if idx.size else None


def _standardised(data_cfg, train, val, test, return_scaler: bool):
    """The split with features standardised on the training bags (never on validation or test bags)."""
    scaler = None
    if data_cfg.standardize:
        scaler = D.Standardizer().fit(train)
        train = scaler.transform(train)
        test = None if test is None else scaler.transform(test)
        val = scaler.transform(val) if val is not None else None
    return (train, val, test, scaler) if return_scaler else (train, val, test)


def _groups(dataset, protocol) -> list[str] | None:
    """The bags' group ids (case / patient) when the protocol keeps groups together, else None."""
    return getattr(dataset, "groups", None) if protocol.grouped else None


def _plain(values):
    """Label values as plain Python scalars (numpy scalars would not survive a weights-only load or YAML)."""
    return None if values is None else [v.item() if hasattr(v, "item") else v for v in values]


def model_classes(dataset) -> int:
    """What ``num_classes`` a model of this data needs: the classes, or the labels L of multi-label bags."""
    if D.is_multilabel(dataset):
        return D.num_labels_of(dataset)
    return int(dataset.num_classes)


@dataclass
class PreparedRun:
    """A run ready to train: its spec, seed, datasets, fitted standardiser, seeded model and files."""

    spec: RunSpec
    seed: int
    train: Any
    val: Any
    test: Any
    scaler: D.Standardizer | None
    model: torch.nn.Module
    train_config: TrainConfig
    run_dir: Path | None
    metadata: dict[str, Any]


def prepare_run(
    cfg: ExperimentConfig,
    spec: RunSpec,
    out_dir: str | Path | None = None,
    *,
    extra_config: dict[str, Any] | None = None,
    write_files: bool = True,
) -> PreparedRun:
    """Split, standardiser, seeded model (``torch.manual_seed(seed)`` then ``create_model``) and run folder.

    With ``out_dir`` (and ``write_files``), ``<out_dir>/<method>/<key>/`` gets ``config.yaml`` (the resolved
    experiment, the run and its resolved training config, plus ``extra_config``) and ``versions.json``.
    """
    train_cfg = cfg.train_config_for(spec.method)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    method = cfg.methods[spec.method]
    seed = run_seed(cfg, spec.repeat, spec.fold)
    train, val, test, scaler = prepare_split(cfg, spec.repeat, spec.fold, return_scaler=True)
    if not D.is_multilabel(train):  # one class would train a constant classifier that reports an accuracy
        D.check_trainable(train, f"training set of run {spec.method}/{spec.key}")
    torch.manual_seed(seed)
    model = create_model(
        method.model, in_features=train.num_features, num_classes=model_classes(train), **method.kwargs
    )
    run_dir = None if out_dir is None else Path(out_dir) / spec.method / spec.key
    if run_dir is not None and write_files:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = config_to_dict(cfg)
        resolved["run"] = {"method": spec.method, "repeat": spec.repeat, "fold": spec.fold, "seed": seed}
        resolved["train_resolved"] = config_to_dict(train_cfg)
        resolved.update(extra_config or {})
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_json(run_dir / "versions.json", versions())
    metadata = {
        "standardizer": None if scaler is None else scaler.state_dict(),
        "data_config": config_to_dict(cfg.data),
        "num_classes": model_classes(train),
        "instance_shape": list(train.instance_shape),
        "method": spec.method,
        "label_values": _plain(getattr(train, "label_values", None)),
        "class_names": getattr(train, "class_names", None),
    }
    return PreparedRun(spec, seed, train, val, test, scaler, model, train_cfg, run_dir, metadata)


def run_record(run: PreparedRun, fit: FitResult) -> dict[str, Any]:
    """The record of one finished run (the fields of ``result.json``), shared by every backend."""
    task = task_for(fit.model)
    record: dict[str, Any] = {
        "method": run.spec.method,
        "model": getattr(fit.model, "model_name", type(fit.model).__name__),
        "repeat": run.spec.repeat,
        "fold": run.spec.fold,
        "seed": run.seed,
        "selected_epoch": fit.selected_epoch,
        "epochs": run.train_config.epochs,
        "selection": run.train_config.selection,
        "n_train": len(run.train),
        "n_val": 0 if run.val is None else len(run.val),
        "n_test": 0 if run.test is None else len(run.test),
    }
    if fit.test is not None:
        record.update({f"test_{k}": v for k, v in fit.test.summary().items() if k != "error"})
    if fit.val is not None:
        record.update({f"val_{k}": v for k, v in fit.val.summary().items() if k not in ("error", "threshold")})
    record["oracle_test_accuracy"] = fit.oracle_test_accuracy
    record["last_epoch_test_accuracy"] = fit.history[-1].get("test_accuracy")
    record["seconds"] = fit.seconds
    record["engine"] = fit.extra.get("engine", "loop")
    retrieval = fit.test.retrieval() if task.name == "single_label" and fit.test is not None else None
    if retrieval is not None:
        record["instance_retrieval"] = {str(t): v for t, v in retrieval.items()}
        record.update({f"test_{k}": v for k, v in _localization(fit.test, run.test).items()})
    return record


def _localization(result, test) -> dict[str, float]:
    """Patch AP (and, for whole-slide data with coordinates, the FROC score) of the test weights."""
    if result.weights is None or result.instance_labels is None:
        return {}
    coords = [test.coords(i) for i in range(len(test))] if getattr(test, "has_coords", False) else None
    return localization_scores(result.weights, result.instance_labels, coords)


def finish_run(run: PreparedRun, fit: FitResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's record; with a run folder also ``result.json`` (written last: the run is complete)."""
    record = {**run_record(run, fit), **(extra or {})}
    if run.run_dir is not None:
        atomic_write_json(run.run_dir / "result.json", record)
    return record


def read_finished(out_dir: str | Path | None, spec: RunSpec) -> dict[str, Any] | None:
    """The record of a finished run in ``out_dir`` (its ``result.json``), or None."""
    if out_dir is None:
        return None
    path = Path(out_dir) / spec.method / spec.key / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def execute_run(
    cfg: ExperimentConfig | dict, spec: RunSpec, out_dir: str | Path | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train and evaluate one run; returns its record (also written to ``<run dir>/result.json``).

    With ``resume``, a complete run is read back instead of retrained, and an incomplete one continues from
    its checkpoint.
    """
    if isinstance(cfg, dict):
        cfg = config_from_dict(ExperimentConfig, cfg).validate()
    if resume and (done := read_finished(out_dir, spec)) is not None:
        return done
    run = prepare_run(cfg, spec, out_dir)
    trainer = Trainer(run.model, run.train_config, run.run_dir, run.seed, run.metadata)
    fit = trainer.fit(run.train, run.val, run.test, resume=resume)
    return finish_run(run, fit)
