"""Train many runs: a batched backend where one applies, the one loop elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossattn.engine.checkpoint import model_identity, save_model_file
from lossattn.engine.config import TrainConfig
from lossattn.engine.loop import Trainer, write_history
from lossattn.engine.manyruns.arch import unsupported_reason
from lossattn.engine.manyruns.func import FuncVectorizedTrainer
from lossattn.engine.manyruns.funcplan import unsupported_reason as func_unsupported_reason
from lossattn.engine.manyruns.trainer import VectorizedTrainer
from lossattn.engine.results import FitResult
from lossattn.engine.tasks import task_for, with_threshold

__all__ = ["BACKENDS", "backend_for", "fit_many"]

#: ``auto``: the hand-written batched backend where every run is supported, else the torch.func one, else one
#: run at a time; ``vectorized`` (hand-written backward, :class:`VectorizedTrainer`) and ``func`` (torch.func,
#: :class:`FuncVectorizedTrainer`): that backend or a ValueError saying why not; ``loop``: one run at a time
#: through :class:`~lossattn.engine.loop.Trainer`
BACKENDS = ("auto", "vectorized", "func", "loop")

_TRAINERS = {"vectorized": VectorizedTrainer, "func": FuncVectorizedTrainer}


def _func_reason(models: Sequence[Any], config: TrainConfig) -> str | None:
    """Why the torch.func backend cannot train ``models``: config and module tree of every model, and one probe
    step of the first (a group shares class and hyperparameters; :class:`FuncVectorizedTrainer` checks that)."""
    rest = (func_unsupported_reason(m, config, probe=False) for m in models[1:])
    return func_unsupported_reason(models[0], config) or next((r for r in rest if r is not None), None)


def backend_for(models: Sequence[Any], config: TrainConfig, backend: str = "auto") -> tuple[str, str | None]:
    """The backend that trains ``models`` under ``backend``, and why they are not batched (None when they are).

    Returns:
        ``("vectorized" | "func" | "loop", reason)``: ``auto`` picks the hand-written backend, then torch.func,
        then the loop (the torch.func reason says why).

    Raises:
        ValueError: an unknown backend, or ``vectorized`` / ``func`` for runs that backend cannot train.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "loop" or not models:
        return "loop", "backend=loop" if backend == "loop" else "no runs"
    if backend in ("auto", "vectorized"):
        reason = next((r for m in models if (r := unsupported_reason(m, config)) is not None), None)
        if reason is None:
            return "vectorized", None
        if backend == "vectorized":
            raise ValueError(f"the vectorized backend cannot train these runs: {reason}")
    reason = _func_reason(models, config)
    if reason is None:
        return "func", None
    if backend == "func":
        raise ValueError(f"the torch.func backend cannot train these runs: {reason}")
    return "loop", reason


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

    ``backend`` is one of :data:`BACKENDS` (:func:`backend_for` picks). The batched backends write no per-epoch
    checkpoints (an interrupted group is retrained): ``best.pt`` (with the decision threshold) and the metrics
    files go into ``run_dirs[r]`` at the end; the one loop writes its own checkpoints there. Each result's
    ``extra["engine"]`` names the backend that trained it (``"vectorized"``, ``"func"`` or ``"loop"``).

    Raises:
        ValueError: an unknown backend, mismatched lengths, or ``backend="vectorized"`` / ``"func"`` for runs that
            backend cannot train.
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
    if R and not all(hasattr(ds, "to_flat") for ds in train_sets):
        if backend in ("vectorized", "func"):
            raise ValueError(
                f"the {backend} backend cannot train these runs: bags read from disk one at a time; the batched "
                "backends hold every run's bags in memory"
            )
        chosen = "loop"
    else:
        chosen, _ = backend_for(models, config, backend)
    if chosen == "loop":
        results = []
        for model, seed, train, val, test, run_dir, md in zip(
            models, seeds, train_sets, vals, tests, dirs, meta, strict=True
        ):
            fit = Trainer(model, config, run_dir, seed, md).fit(train, val, test)
            fit.extra["engine"] = "loop"
            results.append(fit)
        return results
    results = _TRAINERS[chosen](models, config, seeds).fit(train_sets, vals, tests)
    for fit, seed, run_dir, md in zip(results, seeds, dirs, meta, strict=True):
        task = task_for(fit.model)
        fit.val, fit.test, threshold = with_threshold(task, fit.model, config.threshold, fit.val, fit.test)
        if run_dir is not None:  # the batched backends keep no run folders of their own: write best.pt here
            state = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
            identity = model_identity(fit.model, config, seed, task.name)
            record = {**identity, "model": state, "epoch": fit.selected_epoch, **(md or {}), "engine": chosen}
            save_model_file(Path(run_dir) / "best.pt", {**record, "decision_threshold": threshold})
            write_history(run_dir, fit.history)
    return results
