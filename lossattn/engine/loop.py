"""The training loop: one for every model, task and strategy.

Per epoch ``m``: the schedule's learning rate and Adam betas; the training batches of the source in the run's
order for ``m``; forward (mixed precision on CUDA when asked), the model's own loss with the consistency cost
against the temporal ensemble of its weights, backward, optional gradient clipping, (fused) Adam; then the
validation bags are evaluated and the epoch is selected by the task's key (the paper's rule by default:
lowest validation error, then lowest validation loss — test bags never influence it); the resume state is
written atomically. At the end the selected weights are restored, evaluated and written to ``best.pt``.

Data differ between tracks, not loops: a *source* (:mod:`lossattn.engine.sources`) makes the batches, a
*task* (:mod:`lossattn.engine.tasks`) gives targets, metrics and the selection key, a *strategy*
(:mod:`lossattn.engine.strategies`) shards the steps over processes.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lossattn import functional as LF
from lossattn.engine import checkpoint as ckpt
from lossattn.engine.config import EVAL_MAX_INSTANCES, TrainConfig, epoch_schedule
from lossattn.engine.results import FitResult
from lossattn.engine.runtime import amp_dtype, build_adam, flush_denormals, progress, resolve_device
from lossattn.engine.sources import make_source
from lossattn.engine.strategies import LocalStrategy
from lossattn.engine.tasks import autocast, better, task_for, with_threshold
from lossattn.ensemble import TemporalEnsemble
from lossattn.io import atomic_write_text
from lossattn.multilabel.ensemble import LabelwiseTemporalEnsemble

__all__ = ["Trainer", "evaluate", "fit", "write_history"]


class Trainer:
    """Train one model on one split.

    Args:
        model: a registered model (:func:`lossattn.create_model`) or any module with the model contract.
        config: :class:`~lossattn.engine.config.TrainConfig`.
        run_dir: where ``checkpoint.pt`` (resume state), ``metrics.jsonl``/``metrics.csv`` and ``best.pt`` go
            (None: everything stays in memory).
        seed: seeds the batch order and the torch RNG (dropout, augmentation).
        metadata: extra entries of ``best.pt`` (the fitted standardiser, the data config, label values...), so
            the checkpoint alone suffices for prediction.
        task: default: chosen from the model's tags (:func:`~lossattn.engine.tasks.task_for`).
        strategy: default: :class:`~lossattn.engine.strategies.LocalStrategy`.
        on_epoch_end: called with each epoch's history row once the epoch is complete (its checkpoint
            written), e.g. to log it elsewhere; an exception raised there stops the run, which ``resume`` can
            continue.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        seed: int = 0,
        metadata: dict[str, Any] | None = None,
        *,
        task=None,
        strategy=None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        config.validate()
        if config.instance_chunk is not None and not getattr(model, "supports_instance_chunk", False):
            raise ValueError(
                f"TrainConfig.instance_chunk={config.instance_chunk}: model {type(model).__name__} cannot run a bag in "
                "instance chunks; the attention models can (loss_attention, attention, gated_attention, *_sigmoid)"
            )
        self.on_epoch_end = on_epoch_end
        self.model = model
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = int(seed)
        self.metadata = dict(metadata or {})
        self.task = task if task is not None else task_for(model)
        self.strategy = strategy if strategy is not None else LocalStrategy()
        self.device = resolve_device(config.device)
        self.model.to(self.device)
        if self.device.type == "cuda" and getattr(model, "input_kind", "instances") == "image":
            self.model.to(memory_format=torch.channels_last)
        self.forward_model = self.strategy.wrap(self.model, self.device)
        self.optimizer = build_adam(self.model.parameters(), config)
        self.amp_dtype = amp_dtype(config, self.device)
        # float16 gradients underflow without loss scaling; the scaler is a no-op otherwise
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ------------------------------------------------------------------ fit
    def fit(self, train_set, val_set=None, test_set=None, resume: bool = False) -> FitResult:
        """Train ``config.epochs`` epochs; select the epoch on ``val_set``; report on ``test_set``.

        With ``resume=True`` and a ``checkpoint.pt`` in ``run_dir``, training continues after the last completed
        epoch and ends with the same weights as an uninterrupted run. Denormal floats are flushed to zero while
        training when ``config.flush_denormal`` is set (see :func:`~lossattn.engine.runtime.flush_denormals`).
        """
        with flush_denormals(self.config.flush_denormal):
            return self._fit(train_set, val_set, test_set, resume)

    def _fit(self, train_set, val_set, test_set, resume: bool) -> FitResult:
        c = self.config
        start = time.perf_counter()
        if c.threads:
            torch.set_num_threads(c.threads)
        train = make_source(train_set, c.num_workers, bucket_by_size=c.bucket_by_size, subsample=c.train_subsample)
        if len(train) == 0:
            raise ValueError(f"the training set has no {train.unit}")
        main = self.strategy.is_main  # only the main process evaluates, selects and writes
        val = make_source(val_set) if main and val_set is not None and len(val_set) else None
        test = make_source(test_set) if main and test_set is not None and len(test_set) else None
        for source, what in ((train, "training"), (val, "validation"), (test, "test")):
            if source is not None:
                self.task.check_data(self.model, source, what)
        if self.run_dir is not None and main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        state = self._restore(train) if resume else None
        if state is None:
            torch.manual_seed(self.seed)
            state = {"next_epoch": 0, "history": [], "best": None, "best_epoch": -1, "best_state": None}
            state["ensemble"] = (
                self.task.make_ensemble(self.model, train.instance_counts(self.model), c.ensemble_momentum)
                if c.consistency_weight > 0
                else None
            )
        history = state["history"]
        elapsed_before = float(history[-1].get("seconds", 0.0)) if history else 0.0
        epochs = progress(range(state["next_epoch"], c.epochs), c.progress and main, "epochs", unit="epoch")
        for epoch in epochs:
            row = self._train_epoch(epoch, train, state["ensemble"])
            candidate = (0.0, -float(epoch))  # no validation: the last epoch wins
            if val is not None:
                result = self._evaluate(val)
                row.update(self.task.val_row(result))
                candidate = self.task.selection_key(result, c.selection)
            if c.oracle and test is not None:
                result = self._evaluate(test)
                row.update(self.task.oracle_row(result))
            if better(candidate, state["best"]):
                state["best"], state["best_epoch"] = candidate, epoch
                state["best_state"] = copy.deepcopy(self.model.state_dict())
            row["selected_epoch"] = state["best_epoch"]
            row["seconds"] = elapsed_before + time.perf_counter() - start
            history.append(row)
            if hasattr(epochs, "set_postfix"):
                epochs.set_postfix(loss=f"{row['train_loss']:.3f}", selected=state["best_epoch"] + 1)
            last = epoch + 1 == c.epochs
            if self.run_dir is not None and main and ((epoch + 1) % c.checkpoint_every == 0 or last):
                state["next_epoch"] = epoch + 1
                self._save_state(train, state)
                write_history(self.run_dir, history)
            if self.on_epoch_end is not None:
                self.on_epoch_end(row)
        if state["best_state"] is None:
            raise RuntimeError("no epoch was trained: the checkpoint holds no selected weights")
        self.model.load_state_dict(state["best_state"])
        final_val = final_test = None
        if val is not None:
            final_val = self._evaluate(val)
        if test is not None:
            final_test = self._evaluate(test)
        final_val, final_test, threshold = with_threshold(self.task, self.model, c.threshold, final_val, final_test)
        if self.run_dir is not None and main:
            ckpt.save_model_file(self.run_dir / "best.pt", {**self._model_file(state), "decision_threshold": threshold})
        oracle = max((h["test_accuracy"] for h in history if "test_accuracy" in h), default=None)
        return FitResult(
            selected_epoch=int(state["best_epoch"]),
            history=history,
            val=final_val,
            test=final_test,
            oracle_test_accuracy=oracle,
            model=self.model,
            seconds=elapsed_before + time.perf_counter() - start,
        )

    def _evaluate(self, source):
        c = self.config
        return self.task.evaluate(
            self.model,
            source,
            c.eval_batch_size,
            self.device,
            self.amp_dtype,
            max_instances=c.eval_max_instances,
            instance_chunk=c.instance_chunk,
        )

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, epoch: int, train, ensemble) -> dict[str, Any]:
        c = self.config
        sched = epoch_schedule(c, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
            group["betas"] = (sched["beta1"], sched["beta2"])
        self.model.train()
        self.strategy.begin_epoch(self.seed, epoch)
        omega = sched["consistency_weight"] if ensemble is not None else 0.0
        totals: dict[str, float] = {}
        counts: dict[str, float] = {}
        pin = self.device.type == "cuda"
        with LF.input_checks(not train.validated):
            for batch, weight in self.strategy.batches(train, epoch, self.seed, c.batch_size, pin):
                self._step(epoch, batch.to(self.device, non_blocking=pin), weight, ensemble, omega, totals, counts)
        if ensemble is not None:
            self.strategy.sync_ensemble(ensemble)
            ensemble.step()
        keys = sorted(totals)
        count_keys = sorted(counts)
        summed = self.strategy.reduce_sum([totals[k] for k in keys] + [counts[k] for k in count_keys])
        totals = dict(zip(keys, summed[: len(keys)], strict=True))
        counts = dict(zip(count_keys, summed[len(keys) :], strict=True))
        n_bags = len(train)
        row: dict[str, Any] = {"epoch": epoch, **sched, "train_loss": totals.pop("total") / n_bags}
        row.update({f"train_{k}": v / n_bags for k, v in totals.items()})
        row.update(self.task.train_row(counts, n_bags, self.model))
        return row

    def _step(self, epoch: int, batch, weight: float, ensemble, omega: float, totals, counts) -> None:
        c = self.config
        if batch.mask is None and self.device.type == "cuda":
            batch.x = batch.x.contiguous(memory_format=torch.channels_last)
        y = self.task.targets(batch)
        with autocast(self.device, self.amp_dtype):
            if c.instance_chunk is None:
                out = self.forward_model(batch.x, batch.mask)
            else:
                out = self.forward_model(batch.x, batch.mask, instance_chunk=c.instance_chunk)
        mask = batch.mask if batch.mask is not None else _full_mask(out)
        target = ensemble.target(batch.index, mask) if (ensemble is not None and omega > 0) else None
        with autocast(self.device, self.amp_dtype):
            loss, terms = self.model.loss(
                out, y, batch.mask, ensemble=target, consistency_weight=omega if target is not None else 0.0
            )
        if weight > 0 and not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {float(loss)} at epoch {epoch} (bags {batch.names or batch.index.tolist()}) "
                f"with learning rate {c.lr:g}: lower the learning rate (TrainConfig.lr / --lr)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
        if c.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if weight == 0:
            return
        if ensemble is not None and out.weights is not None:
            ensemble.record(batch.index, out.weights.float(), mask)
        n = len(batch)
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) * n
        for k, v in self.task.train_counts(out, y).items():
            counts[k] = counts.get(k, 0.0) + v

    # ------------------------------------------------------------------ files
    def _checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoint.pt"

    def _identity(self) -> dict[str, Any]:
        return ckpt.model_identity(self.model, self.config, self.seed, self.task.name)

    def _save_state(self, train, state: dict[str, Any]) -> None:
        ensemble = state["ensemble"]
        ckpt.save_training_state(
            self._checkpoint_path(),
            {
                **self._identity(),
                "next_epoch": state["next_epoch"],
                "n_train": len(train),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ensemble": None if ensemble is None else {"kind": type(ensemble).__name__, **ensemble.state_dict()},
                "history": state["history"],
                "best": state["best"],
                "best_epoch": state["best_epoch"],
                "best_state": state["best_state"],
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "source": train.state_dict(),
            },
        )

    def _restore(self, train) -> dict[str, Any] | None:
        path = self._checkpoint_path()
        if path is None or not path.exists():
            return None
        saved = ckpt.load_training_state(path, map_location="cpu")
        if int(saved["n_train"]) != len(train):
            raise ValueError(
                f"{path} was written for {saved['n_train']} training {train.unit}, this run has {len(train)}; "
                "delete it or use another run folder"
            )
        name = getattr(self.model, "model_name", type(self.model).__name__)
        if saved["model_name"] != name:
            raise ValueError(f"{path} was written for model {saved['model_name']!r}, this run trains {name!r}")
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in saved["cuda_rng"]])
        train.load_state_dict(saved.get("source") or {})
        best = saved["best"]
        return {
            "next_epoch": int(saved["next_epoch"]),
            "history": list(saved["history"]),
            "best": None if best is None else tuple(best),
            "best_epoch": int(saved["best_epoch"]),
            "best_state": saved["best_state"],
            "ensemble": _restore_ensemble(saved["ensemble"]),
        }

    def _model_file(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**self._identity(), "model": state["best_state"], "epoch": int(state["best_epoch"]), **self.metadata}


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` (one JSON row per epoch) and ``metrics.csv`` of a run, written atomically."""
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_text(Path(run_dir) / "metrics.jsonl", lines)
    keys = list(dict.fromkeys(k for row in history for k in row))
    csv = ",".join(keys) + "\n" + "".join(",".join(_fmt(row.get(k)) for k in keys) + "\n" for row in history)
    atomic_write_text(Path(run_dir) / "metrics.csv", csv)


def _full_mask(out) -> torch.Tensor:
    """The all-True mask ``(B, N)`` of an output whose every instance is real (image models)."""
    ref = out.weights if out.weights is not None else out.instance_logits
    return torch.ones(ref.shape[:2], dtype=torch.bool, device=ref.device)


def _restore_ensemble(saved: dict[str, Any] | None):
    if saved is None:
        return None
    state = {k: v for k, v in saved.items() if k != "kind"}
    if saved.get("kind") == "LabelwiseTemporalEnsemble":
        return LabelwiseTemporalEnsemble.from_state_dict(state)
    return TemporalEnsemble.from_state_dict(state)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def fit(
    model: torch.nn.Module,
    train_set,
    val_set=None,
    test_set=None,
    *,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    task=None,
    strategy=None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train_set``, select on ``val_set``, report on ``test_set`` (see :class:`Trainer`)."""
    trainer = Trainer(
        model, config or TrainConfig(), run_dir, seed, metadata, task=task, strategy=strategy, on_epoch_end=on_epoch_end
    )
    return trainer.fit(train_set, val_set, test_set, resume=resume)


def evaluate(
    model: torch.nn.Module,
    dataset,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    *,
    task=None,
    max_instances: int | None = EVAL_MAX_INSTANCES,
):
    """Evaluate ``model`` on every bag of ``dataset`` (eval mode, no gradient); results in dataset order.

    A batch holds at most ``batch_size`` bags and ``max_instances`` padded instances (see
    :meth:`~lossattn.engine.sources.BagSource.eval_batches`).

    Returns an :class:`~lossattn.engine.results.EvalResult` (multi-label models: a
    :class:`~lossattn.engine.results.MultiLabelEvalResult`).
    """
    source = make_source(dataset)
    if len(source) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    task = task if task is not None else task_for(model)
    task.check_data(model, source, "evaluation")
    device = torch.device(device)
    model.to(device)
    return task.evaluate(model, source, batch_size, device, max_instances=max_instances)
