"""Evaluation protocols: repeated stratified k-fold CV by bag, fixed train/test with repeats.

Every run carves a stratified validation split out of its *training* bags; model selection uses
only that split. Runs are independent and seeded from (protocol seed, repeat, fold), so they can
run in any order, in parallel processes (``jobs``) or on a Dask cluster (``scheduler``) and give
the same records as a serial run.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lossattn import datasets as D
from lossattn.registry import create_model
from lossattn.train import metrics as M
from lossattn.train.config import ExperimentConfig, config_from_dict, config_to_dict
from lossattn.train.data import is_generator, load_dataset, make_generated, split_indices
from lossattn.train.io import atomic_write_json, atomic_write_text, versions
from lossattn.train.trainer import Trainer

__all__ = [
    "RunSpec",
    "plan_runs",
    "execute_run",
    "run_experiment",
    "aggregate",
    "prepare_split",
    "run_seed",
    "run_record",
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

    With ``return_scaler`` the fitted :class:`~lossattn.datasets.Standardizer` (or None) is returned too.
    """
    p, data_cfg = cfg.protocol, cfg.data
    seed = run_seed(cfg, repeat, fold)
    data_key = json.dumps(config_to_dict(data_cfg), sort_keys=True)
    if p.kind == "cv":
        if is_generator(data_cfg.name):
            full = _cached(data_key + f"|gen|{p.seed}", lambda: make_generated(data_cfg, "train", p.seed))
        else:
            full = _cached(data_key, lambda: load_dataset(data_cfg))
        folds = _cached(
            data_key + f"|folds|{p.seed}|{repeat}",
            lambda: D.stratified_kfold(full.labels, p.folds, seed=p.seed * 7919 + repeat),
        )
        train_idx, test_idx = folds[fold]
        train_all, test = full.subset(train_idx), full.subset(test_idx)
    elif is_generator(data_cfg.name):
        train_all = make_generated(data_cfg, "train", seed)
        test = _cached(data_key + f"|test|{repeat}", lambda: make_generated(data_cfg, "test", seed + 500_000))
    else:
        full = _cached(data_key, lambda: load_dataset(data_cfg))
        train_all, test = full.subset(split_indices(full, "train")), full.subset(split_indices(full, "test"))
    if p.val_fraction > 0:
        tr, va = D.train_val_split(train_all.labels, val_fraction=p.val_fraction, seed=seed)
        train, val = train_all.subset(tr), train_all.subset(va)
    else:
        train, val = train_all, None
    scaler = None
    if data_cfg.standardize:
        scaler = D.Standardizer().fit(train)
        train, test = scaler.transform(train), scaler.transform(test)
        val = scaler.transform(val) if val is not None else None
    return (train, val, test, scaler) if return_scaler else (train, val, test)


def run_record(
    method: str, model: str, repeat: int, fold: int | None, seed: int, train_cfg, splits, fit
) -> dict[str, Any]:
    """The record of one finished run (the fields of ``result.json``), shared by every engine.

    Args:
        splits: ``(train, val, test)`` datasets (``val`` may be None).
        fit: a :class:`~lossattn.train.trainer.FitResult` (or any object with the same fields).
    """
    train, val, test = splits
    record: dict[str, Any] = {
        "method": method,
        "model": model,
        "repeat": repeat,
        "fold": fold,
        "seed": seed,
        "selected_epoch": fit.selected_epoch,
        "epochs": train_cfg.epochs,
        "n_train": len(train),
        "n_val": 0 if val is None else len(val),
        "n_test": len(test),
        "test_accuracy": fit.test.accuracy,
        "test_auc": fit.test.auc,
        "test_loss": fit.test.loss,
        "val_accuracy": None if fit.val is None else fit.val.accuracy,
        "val_loss": None if fit.val is None else fit.val.loss,
        "oracle_test_accuracy": fit.oracle_test_accuracy,
        "last_epoch_test_accuracy": fit.history[-1].get("test_accuracy"),
        "seconds": fit.seconds,
    }
    retrieval = fit.test.retrieval()
    if retrieval is not None:
        record["instance_retrieval"] = {str(t): v for t, v in retrieval.items()}
    return record


def execute_run(
    cfg: ExperimentConfig | dict, spec: RunSpec, out_dir: str | Path | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train and evaluate one run; returns its record (also written to ``<run dir>/result.json``).

    ``result.json`` is written last and atomically, so a run directory without it is incomplete.
    With ``resume``, a complete run is read back instead of retrained, and an incomplete one continues
    from its checkpoint.
    """
    if isinstance(cfg, dict):
        cfg = config_from_dict(ExperimentConfig, cfg).validate()
    run_dir = None if out_dir is None else Path(out_dir) / spec.method / spec.key
    if run_dir is not None and resume and (run_dir / "result.json").exists():
        return json.loads((run_dir / "result.json").read_text())
    train_cfg = cfg.train_config_for(spec.method)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    method = cfg.methods[spec.method]
    seed = run_seed(cfg, spec.repeat, spec.fold)
    train, val, test, scaler = prepare_split(cfg, spec.repeat, spec.fold, return_scaler=True)
    torch.manual_seed(seed)
    model = create_model(
        method.model, in_features=train.num_features, num_classes=int(train.num_classes), **method.kwargs
    )
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = config_to_dict(cfg)
        resolved["run"] = {"method": spec.method, "repeat": spec.repeat, "fold": spec.fold, "seed": seed}
        resolved["train_resolved"] = config_to_dict(train_cfg)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_json(run_dir / "versions.json", versions())
    metadata = {
        "standardizer": None if scaler is None else scaler.state_dict(),
        "data_config": config_to_dict(cfg.data),
        "num_classes": int(train.num_classes),
        "instance_shape": list(train.instance_shape),
        "method": spec.method,
    }
    fit = Trainer(model, train_cfg, run_dir, seed, metadata).fit(train, val, test, resume=resume)
    record = run_record(spec.method, method.model, spec.repeat, spec.fold, seed, train_cfg, (train, val, test), fit)
    if run_dir is not None:
        atomic_write_json(run_dir / "result.json", record)
    return record


# One run at a time per process: runs share torch's global RNG (seeded per run) and thread setting, so two
# runs in threads of one process (a Dask worker with several threads) would change each other's results.
_RUN_LOCK = threading.Lock()


def _execute_payload(payload: tuple[dict, RunSpec, str | None, bool, int | None]) -> dict[str, Any]:
    cfg_dict, spec, out_dir, resume, threads = payload
    with _RUN_LOCK:
        if threads:
            torch.set_num_threads(threads)
        return execute_run(cfg_dict, spec, out_dir, resume)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    progress: bool = False,
    runs: list[RunSpec] | None = None,
    engine: str = "trainer",
) -> dict[str, Any]:
    """Run every planned run of an experiment and aggregate the records.

    Args:
        cfg: the experiment.
        out_dir: where run directories, ``results.json`` and ``summary.md`` go (None: in memory).
        jobs: local worker processes (joblib); 1 runs serially in this process.
        scheduler: address of a Dask distributed scheduler (``tcp://host:port``); overrides ``jobs``.
        resume: reuse complete runs and continue interrupted ones from their checkpoints.
        progress: show a progress bar over runs.
        runs: a subset of :func:`plan_runs` to execute (default: all).
        engine: ``"trainer"`` trains every run alone with :class:`Trainer`; ``"vectorized"`` trains all
            runs of a method as one batched computation (:mod:`lossattn.train.vectorized`; same splits,
            initialisation, batch order, optimiser and selection; records get ``"engine": "vectorized"``)
            and raises for a method it cannot vectorize; ``"auto"`` vectorizes the methods it can and
            trains the others run by run. With ``jobs > 1`` a method's runs are split into ``jobs`` groups
            trained in parallel (also on a ``scheduler``); a run's result does not depend on its group.

    Returns:
        ``{"experiment", "protocol", "runs": [...], "summary": {...}}``.
    """
    cfg.validate()
    specs = runs if runs is not None else plan_runs(cfg)
    out = None if out_dir is None else Path(out_dir)
    cfg_dict = config_to_dict(cfg)
    start = time.perf_counter()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))
        atomic_write_json(out / "versions.json", versions())
    threads = cfg.train.threads or (1 if (jobs > 1 or scheduler) else None)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    payloads = [(cfg_dict, s, None if out is None else str(out), resume, threads) for s in specs]
    if engine != "trainer":
        records = _run_engine_tasks(cfg, cfg_dict, specs, out, resume, threads, engine, jobs, scheduler, progress)
    elif scheduler:
        records = _run_dask(payloads, scheduler)
    elif jobs > 1:
        records = _joblib_map(_execute_payload, payloads, jobs)
    else:
        records = []
        bar = payloads
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(payloads, desc=cfg.name, unit="run")
        for p in bar:
            records.append(_execute_payload(p))
    result = {
        "experiment": cfg.name,
        "protocol": protocol_description(cfg),
        "config": cfg_dict,
        "runs": records,
        "summary": aggregate(records),
        "seconds": time.perf_counter() - start,
        "versions": versions(),
    }
    if out is not None:
        atomic_write_json(out / "results.json", result)
    return result


ENGINES = ("trainer", "vectorized", "auto")


def _joblib_map(fn, items: Sequence[Any], jobs: int) -> list[Any]:
    """``[fn(x) for x in items]`` in ``jobs`` loky worker processes, results in order.

    loky restarts a worker whose memory grew by more than 300 MB since it started and warns "A worker
    stopped ... memory leak". Image-bag runs grow that much by design (oneDNN caches one convolution
    primitive per batch shape; evaluation on 1,000 test bags of many sizes fills it), so the restart is
    expected and harmless -- the run's result was already returned -- and the warning is silenced.
    """
    from joblib import Parallel, delayed

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given", category=UserWarning)
        return Parallel(n_jobs=jobs, backend="loky")(delayed(fn)(x) for x in items)


def _execute_task(task: tuple) -> list[dict[str, Any]]:
    """One unit of work of :func:`run_experiment` with an engine: a single run or a vectorized group."""
    kind, cfg_dict, specs, out_dir, resume, threads = task
    if threads:
        torch.set_num_threads(threads)
    if kind == "run":
        return [execute_run(cfg_dict, specs[0], out_dir, resume)]
    from lossattn.train.vectorized import run_group

    return run_group(cfg_dict, specs[0].method, specs, out_dir, resume)


def _run_engine_tasks(cfg, cfg_dict, specs, out, resume, threads, engine, jobs, scheduler, progress):
    from lossattn.train.vectorized import method_unsupported_reason

    out_dir = None if out is None else str(out)
    parts = max(1, jobs)
    tasks: list[tuple] = []
    for method in dict.fromkeys(s.method for s in specs):
        mine = [s for s in specs if s.method == method]
        reason = method_unsupported_reason(cfg, method)
        if reason is not None:
            if engine == "vectorized":
                raise ValueError(f"engine='vectorized' cannot train method {method!r}: {reason} (use engine='auto')")
            tasks += [("run", cfg_dict, [s], out_dir, resume, threads) for s in mine]
            continue
        for chunk in np.array_split(np.arange(len(mine)), min(parts, len(mine))):
            tasks.append(("group", cfg_dict, [mine[i] for i in chunk], out_dir, resume, threads))
    if scheduler:
        results = _run_dask(tasks, scheduler, _execute_task)
    elif jobs > 1:
        results = _joblib_map(_execute_task, tasks, jobs)
    else:
        bar = tasks
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(tasks, desc=cfg.name, unit="task")
        results = [_execute_task(t) for t in bar]
    by_key = {(r["method"], r["repeat"], r["fold"]): r for part in results for r in part}
    return [by_key[(s.method, s.repeat, s.fold)] for s in specs]


def _run_dask(payloads, scheduler: str, fn=None) -> list[Any]:
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(
            "a Dask scheduler was given but `distributed` is not installed: pip install 'lossattn[distributed]'"
        ) from exc
    with Client(scheduler) as client:
        futures = client.map(fn or _execute_payload, payloads, pure=False)
        return client.gather(futures)


def protocol_description(cfg: ExperimentConfig) -> str:
    """A sentence stating the protocol, for reports."""
    p = cfg.protocol
    selection = (
        f"model selection on a stratified validation split of {p.val_fraction:.0%} of each run's training bags "
        "(lowest validation error, then lowest validation loss); the test bags never influence training or selection"
        if p.val_fraction > 0
        else "no validation split: the last epoch is kept"
    )
    if p.kind == "cv":
        times = "run once" if p.repeats == 1 else f"repeated {p.repeats} times"
        split = f"{p.folds}-fold stratified cross-validation by bag, {times} (seed {p.seed})"
    else:
        repeats = "1 repeat" if p.repeats == 1 else f"{p.repeats} repeats with fresh seeds"
        split = f"fixed train/test bags, {repeats} (seed {p.seed})"
    return f"{split}; {selection}; {cfg.train.epochs} epochs, batch size {cfg.train.batch_size}."


def _mean_retrieval(per_run: list[dict[str, float]]) -> dict[str, float]:
    """Mean precision / recall / F over runs at one τ, plus how many runs retrieved anything.

    A run that retrieves nothing has no precision (its per-run record says 0, as scikit-learn's
    ``zero_division=0``); averaging that 0 in would drag the curve down for a run that made no false
    retrieval at all, so precision is averaged over the runs that retrieved something (NaN when none did).
    Recall and F are 0 for such a run and are averaged over all runs.
    """
    retrieving = [r.get("retrieved", 1) > 0 for r in per_run]
    precision = [r["precision"] if got else float("nan") for r, got in zip(per_run, retrieving, strict=True)]
    return {
        "precision": M.summarize(precision)["mean"],
        "recall": M.summarize([r["recall"] for r in per_run])["mean"],
        "f1": M.summarize([r["f1"] for r in per_run])["mean"],
        "runs_retrieving": sum(retrieving),
        "runs": len(per_run),
    }


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean ± std of test accuracy/AUC over runs, over repeat means, oracle figure, retrieval."""
    summary: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        by_repeat: dict[int, list[float]] = {}
        for r in rows:
            by_repeat.setdefault(r["repeat"], []).append(r["test_accuracy"])
        entry = {
            "runs": len(rows),
            "accuracy": M.summarize([r["test_accuracy"] for r in rows]),
            "accuracy_repeat_means": M.summarize([float(np.mean(v)) for v in by_repeat.values()]),
            "auc": M.summarize([r["test_auc"] for r in rows]),
            "oracle_accuracy": M.summarize([r.get("oracle_test_accuracy") for r in rows]),
            "selected_epoch": M.summarize([r["selected_epoch"] for r in rows]),
            "seconds": M.summarize([r["seconds"] for r in rows]),
        }
        retrievals = [r["instance_retrieval"] for r in rows if r.get("instance_retrieval")]
        if retrievals:
            entry["instance_retrieval"] = {tau: _mean_retrieval([x[tau] for x in retrievals]) for tau in retrievals[0]}
        summary[method] = entry
    return summary
