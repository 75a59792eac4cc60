"""Train many runs: the batched backend where it applies, the one loop elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossattn.engine.checkpoint import model_identity, save_model_file
from lossattn.engine.config import TrainConfig
from lossattn.engine.loop import Trainer, write_history
from lossattn.engine.manyruns.arch import unsupported_reason
from lossattn.engine.manyruns.trainer import VectorizedTrainer
from lossattn.engine.results import FitResult
from lossattn.engine.tasks import task_for, with_threshold

__all__ = ["BACKENDS", "fit_many"]

#: ``auto``: batched where every run is supported, else one run at a time; ``vectorized``: batched or a
#: ValueError saying why not; ``loop``: one run at a time through :class:`~lossattn.engine.loop.Trainer`
BACKENDS = ("auto", "vectorized", "loop")


def fit_many(
    models: Sequence[Any],
    config: TrainConfig,
    seeds: Sequence[int],
    train_sets: Sequence[Any],
    val_sets: Sequence[Any] | None = None,
    test_sets: Sequence[Any] | None = None,
    *,
    backend: str = "auto",
    run_dirs: Sequence[Any] | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
) -> list[FitResult]:
    """Train run ``r`` = (``models[r]``, ``seeds[r]``, ``train_sets[r]``...) for every ``r``; results in input order.

    The batched backend writes no per-epoch checkpoints (an interrupted group is retrained); the one loop does,
    into ``run_dirs[r]`` when given. Each result's ``extra["engine"]`` names the backend that trained it.

    Raises:
        ValueError: an unknown backend, mismatched lengths, or ``backend="vectorized"`` for runs it cannot train.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    R = len(models)
    vals = list(val_sets) if val_sets is not None else [None] * R
    tests = list(test_sets) if test_sets is not None else [None] * R
    dirs = list(run_dirs) if run_dirs is not None else [None] * R
    meta = list(metadata) if metadata is not None else [None] * R
    if not (len(seeds) == len(train_sets) == len(vals) == len(tests) == len(dirs) == len(meta) == R):
        raise ValueError(f"fit_many needs one seed, training set, (val, test, run dir, metadata) per model ({R})")
    reason = next((r for m in models if (r := unsupported_reason(m, config)) is not None), None) if R else None
    if reason is None and not all(hasattr(ds, "to_flat") for ds in train_sets):
        reason = "bags read from disk one at a time; the batched backend holds every run's bags in memory"
    if backend == "vectorized" and reason is not None:
        raise ValueError(f"the vectorized backend cannot train these runs: {reason}")
    if backend == "loop" or reason is not None or R == 0:
        results = []
        for model, seed, train, val, test, run_dir, md in zip(
            models, seeds, train_sets, vals, tests, dirs, meta, strict=True
        ):
            fit = Trainer(model, config, run_dir, seed, md).fit(train, val, test)
            fit.extra["engine"] = "loop"
            results.append(fit)
        return results
    results = VectorizedTrainer(models, config, seeds).fit(train_sets, vals, tests)
    for fit, seed, run_dir, md in zip(results, seeds, dirs, meta, strict=True):
        task = task_for(fit.model)
        fit.val, fit.test, threshold = with_threshold(task, fit.model, config.threshold, fit.val, fit.test)
        if run_dir is not None:  # the batched backend keeps no run folders of its own: write best.pt here
            state = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
            identity = model_identity(fit.model, config, seed, task.name)
            record = {**identity, "model": state, "epoch": fit.selected_epoch, **(md or {}), "engine": "vectorized"}
            save_model_file(Path(run_dir) / "best.pt", {**record, "decision_threshold": threshold})
            write_history(run_dir, fit.history)
    return results
