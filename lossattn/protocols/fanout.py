"""Run every run of an experiment — serially, in local worker processes (joblib) or on a Dask cluster.

Runs are independent and seeded from (protocol seed, repeat, fold), so they can run in any order and place
and give the same records. With a batched backend (``engine="auto"`` / ``"vectorized"`` / ``"func"``) the runs
of one method form groups trained as one computation (:func:`lossattn.engine.manyruns.fit_many`).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lossattn.engine.manyruns import fit_many, func_unsupported_reason, unsupported_reason
from lossattn.io import atomic_write_json, atomic_write_text, versions
from lossattn.models.registry import create_model
from lossattn.protocols.comparison import PAIRED_TESTS, check_reference, compare_methods, spread_summary
from lossattn.protocols.config import ExperimentConfig, config_from_dict, config_to_dict
from lossattn.protocols.runs import RunSpec, execute_run, finish_run, plan_runs, prepare_run, read_finished
from lossattn.protocols.summary import aggregate, protocol_description

__all__ = [
    "DASK_WORKER_WAIT_S",
    "ENGINES",
    "engine_reason",
    "method_engine",
    "method_unsupported_reason",
    "run_experiment",
    "run_group",
]

#: ``trainer``: every run alone through the one loop; ``vectorized``: each method's runs batched by the
#: hand-written backend (a ValueError for a method it cannot batch); ``func``: likewise by the torch.func backend
#: (any single-label bag model whose forward vmaps; slower than ``vectorized`` where both apply); ``auto``:
#: ``vectorized`` where it applies, else ``func``, else one run at a time
ENGINES = ("trainer", "vectorized", "func", "auto")
#: how long a run fanned out to a Dask scheduler waits for its first worker before it gives up
DASK_WORKER_WAIT_S = 60.0

#: what each backend's unsupported-reason function is (on a probe model and the method's train config)
_REASONS = {"vectorized": unsupported_reason, "func": func_unsupported_reason}

# One run at a time per process: runs share torch's global RNG (seeded per run) and thread setting, so two
# runs in threads of one process (a Dask worker with several threads) would change each other's results.
_RUN_LOCK = threading.Lock()


def method_unsupported_reason(cfg: ExperimentConfig, method: str, backend: str = "vectorized") -> str | None:
    """None when the runs of ``method`` can be batched by ``backend`` (``"vectorized"`` / ``"func"``), else why not.

    Checked on a probe model of the method (4 features, 2 classes; the instance width does not change what a
    backend supports).
    """
    if backend not in _REASONS:
        raise ValueError(f"unknown batched backend {backend!r}; valid: {', '.join(_REASONS)}")
    spec = cfg.methods[method]
    try:
        probe = create_model(spec.model, in_features=4, num_classes=2, **spec.kwargs)
    except Exception as exc:  # noqa: BLE001 - the per-run path will raise the real error
        return f"cannot build the model to check it: {exc}"
    return _REASONS[backend](probe, cfg.train_config_for(method))


def method_engine(cfg: ExperimentConfig, method: str, runs: int, engine: str) -> tuple[str | None, str | None]:
    """``(backend, reason)``: the batched backend that trains ``runs`` runs of ``method`` under ``engine``
    (``"vectorized"`` / ``"func"``; None: one run at a time) and why they are not batched (None when they are).

    ``auto`` batches a method with at least two runs: by the hand-written backend where it supports the model
    and settings, else by torch.func where that does; a single run gains nothing from batching and keeps the
    loop's per-epoch checkpoints. ``vectorized`` / ``func`` name that backend whatever it says (the caller
    raises with the reason).
    """
    if engine == "trainer":
        return None, "engine=trainer"
    if Path(cfg.data.name).is_dir():
        return (
            None,
            "bags read from disk one at a time (a feature folder); the batched engines hold every run's bags in memory",
        )
    if engine in _REASONS:
        reason = method_unsupported_reason(cfg, method, engine)
        return (engine if reason is None else None), reason
    reason = method_unsupported_reason(cfg, method, "vectorized")
    backend = "vectorized"
    if reason is not None:
        reason = method_unsupported_reason(cfg, method, "func")
        backend = "func"
    if reason is None and runs < 2:
        return None, "a single run"
    return (backend if reason is None else None), reason


def engine_reason(cfg: ExperimentConfig, method: str, runs: int, engine: str) -> str | None:
    """None when ``runs`` runs of ``method`` are batched under ``engine``, else why they run one at a time
    (:func:`method_engine`)."""
    return method_engine(cfg, method, runs, engine)[1]


def run_group(
    cfg: ExperimentConfig | dict,
    method: str,
    specs: Sequence[RunSpec],
    out_dir: str | Path | None = None,
    resume: bool = False,
    backend: str = "vectorized",
) -> list[dict[str, Any]]:
    """Train the runs ``specs`` (all of ``method``) as one group; records in ``specs`` order.

    ``backend`` is that of :func:`~lossattn.engine.manyruns.fit_many` (``"vectorized"``, ``"func"``, ``"auto"``);
    records get ``"engine"``: the backend that trained the run. Each run is prepared exactly as :func:`~lossattn.protocols.runs.execute_run` prepares it (same split,
    standardiser, seed and initial parameters); ``seconds`` is the group's time divided by its runs. With
    ``resume``, finished runs are read back (an interrupted group is retrained: no per-epoch checkpoints).
    """
    if isinstance(cfg, dict):
        cfg = config_from_dict(ExperimentConfig, cfg).validate()
    if any(s.method != method for s in specs):
        raise ValueError(f"every run of a group must be of method {method!r}")
    records: dict[int, dict[str, Any]] = {}
    todo = []
    for i, spec in enumerate(specs):
        done = read_finished(out_dir, spec) if resume else None
        if done is not None:
            records[i] = done
        else:
            todo.append((i, prepare_run(cfg, spec, out_dir, extra_config={"engine": backend})))
    if todo:
        runs = [run for _, run in todo]
        start = time.perf_counter()
        fits = fit_many(
            [r.model for r in runs],
            runs[0].train_config,
            [r.seed for r in runs],
            [r.train for r in runs],
            [r.val for r in runs],
            [r.test for r in runs],
            backend=backend,
            run_dirs=[r.run_dir for r in runs],
            metadata=[r.metadata for r in runs],
        )
        share = (time.perf_counter() - start) / len(runs)
        for (i, run), fit in zip(todo, fits, strict=True):
            fit.seconds = share
            records[i] = finish_run(run, fit)
    return [records[i] for i in range(len(specs))]


def _execute_task(task: tuple) -> list[dict[str, Any]]:
    """One unit of work: a single run (``kind == "run"``) or a group batched by the backend ``kind``
    (``"vectorized"`` / ``"func"``); picklable, for worker processes."""
    kind, cfg_dict, specs, out_dir, resume, threads = task
    with _RUN_LOCK:
        if threads:
            torch.set_num_threads(threads)
        if kind == "run":
            return [execute_run(cfg_dict, specs[0], out_dir, resume)]
        return run_group(cfg_dict, specs[0].method, specs, out_dir, resume, backend=kind)


def _tasks(cfg: ExperimentConfig, specs: list[RunSpec], engine: str, parts: int, common: tuple) -> list[tuple]:
    cfg_dict, out_dir, resume, threads = common
    tasks: list[tuple] = []
    for method in dict.fromkeys(s.method for s in specs):
        mine = [s for s in specs if s.method == method]
        backend, reason = method_engine(cfg, method, len(mine), engine)
        if backend is None and engine in _REASONS:
            raise ValueError(f"engine={engine!r} cannot train method {method!r}: {reason} (use engine='auto')")
        if backend is None:
            tasks += [("run", cfg_dict, [s], out_dir, resume, threads) for s in mine]
            continue
        for chunk in np.array_split(np.arange(len(mine)), min(parts, len(mine))):
            tasks.append((backend, cfg_dict, [mine[i] for i in chunk], out_dir, resume, threads))
    return tasks


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
    on_task_done: Callable[[int, int], None] | None = None,
    reference: str | None = None,
    paired_test: str = "wilcoxon",
) -> dict[str, Any]:
    """Run every planned run of an experiment and aggregate the records.

    Args:
        cfg: the experiment.
        out_dir: where run folders, ``results.json`` and ``config.yaml`` go (None: in memory).
        jobs: local worker processes (joblib); 1 runs serially in this process.
        scheduler: address of a Dask distributed scheduler (``tcp://host:port``); overrides ``jobs``.
        resume: reuse finished runs and continue interrupted ones from their checkpoints.
        progress: a progress bar over the units of work (with an ETA; only on a terminal).
        runs: a subset of :func:`~lossattn.protocols.runs.plan_runs` (default: all).
        engine: one of :data:`ENGINES`. With ``jobs > 1`` a method's batched runs are split into ``jobs``
            groups trained in parallel; a run's result does not depend on its group.
        on_task_done: called with (units done, units) after each unit of work (serial runs only).
        reference: the method every other is compared with (default: the first method run); checked before
            any training.
        paired_test: the paired test of the comparison, one of
            :data:`~lossattn.protocols.comparison.PAIRED_TESTS`.

    Returns:
        ``{"experiment", "protocol", "config", "runs": [...], "summary": {...}, "comparison": {...},
        "spread": {...}, "seconds", "versions"}``: ``comparison`` pairs every method with the reference over
        identical (repeat, fold) splits (:func:`~lossattn.protocols.comparison.compare_methods`), ``spread``
        separates fold-to-fold from repeat-to-repeat spread (:func:`~lossattn.protocols.comparison.spread_summary`).

    Raises:
        ValueError: an unknown engine, reference method or paired test, or ``jobs < 1``.
    """
    cfg.validate()
    if paired_test not in PAIRED_TESTS:
        raise ValueError(f"unknown paired test {paired_test!r}; valid tests: {', '.join(PAIRED_TESTS)}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1 (worker processes), got {jobs}")
    specs = runs if runs is not None else plan_runs(cfg)
    reference = check_reference((s.method for s in specs), reference)
    out = None if out_dir is None else Path(out_dir)
    cfg_dict = config_to_dict(cfg)
    start = time.perf_counter()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))
        atomic_write_json(out / "versions.json", versions())
    threads = cfg.train.threads or (1 if (jobs > 1 or scheduler) else None)
    common = (cfg_dict, None if out is None else str(out), resume, threads)
    tasks = _tasks(cfg, list(specs), engine, max(1, jobs), common)
    if scheduler:
        results = _run_dask(tasks, scheduler, _execute_task)
    elif jobs > 1:
        results = _joblib_map(_execute_task, tasks, jobs)
    else:
        from lossattn.engine.runtime import progress as bar

        results = []
        for i, task in enumerate(bar(tasks, progress, cfg.name, total=len(tasks), unit="run"), 1):
            results.append(_execute_task(task))
            if on_task_done is not None:
                on_task_done(i, len(tasks))
    by_key = {(r["method"], r["repeat"], r["fold"]): r for part in results for r in part}
    records = [by_key[(s.method, s.repeat, s.fold)] for s in specs]
    result = {
        "experiment": cfg.name,
        "protocol": protocol_description(cfg),
        "config": cfg_dict,
        "runs": records,
        "summary": aggregate(records),
        "comparison": compare_methods(records, reference, paired_test),
        "spread": spread_summary(records),
        "seconds": time.perf_counter() - start,
        "versions": versions(),
    }
    if out is not None:
        atomic_write_json(out / "results.json", result)
    return result


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


def _run_dask(payloads, scheduler: str, fn) -> list[Any]:
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(
            "a Dask scheduler was given but `distributed` is not installed: pip install 'lossattn[distributed]'"
        ) from exc
    with Client(scheduler) as client:
        # a scheduler without workers queues the runs forever: say so instead of waiting silently
        try:
            client.wait_for_workers(1, timeout=DASK_WORKER_WAIT_S)
        except (TimeoutError, OSError) as exc:  # distributed raises asyncio's / the builtin TimeoutError
            raise ValueError(
                f"the Dask scheduler at {scheduler} has no worker after {DASK_WORKER_WAIT_S:g} s; start workers "
                f"(`dask worker {scheduler}`) or run without --scheduler"
            ) from exc
        futures = client.map(fn, payloads, pure=False)
        return client.gather(futures)
