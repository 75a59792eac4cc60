"""Training loop with the paper's schedules, validation-based model selection, checkpoints and exact resume.

Model selection follows the paper's stopping criterion on *validation* bags only: the epoch with
the lowest validation error, ties broken by the lowest validation loss. Test bags, when given, are
evaluated after every epoch when ``TrainConfig.oracle`` is set, for the record (``oracle_test_accuracy`` = the best test accuracy over
epochs, the figure the reference code reported) but never influence the selected epoch.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn import functional as LF
from lossattn.datasets import collate_bags
from lossattn.ensemble import TemporalEnsemble
from lossattn.nn.models import MILModel
from lossattn.schedules import adam_betas, consistency_weight, learning_rate
from lossattn.train import metrics as M
from lossattn.train.config import TrainConfig, config_to_dict
from lossattn.train.io import atomic_write_text, load_checkpoint, save_checkpoint

__all__ = ["Trainer", "FitResult", "EvalResult", "evaluate", "iterate_batches"]


@dataclass
class EvalResult:
    """Predictions and metrics of a model on a set of bags (arrays are in dataset order)."""

    loss: float
    accuracy: float
    auc: float
    labels: np.ndarray
    probabilities: np.ndarray
    weights: list[np.ndarray] | None = None
    instance_probabilities: list[np.ndarray] | None = None
    instance_labels: list[np.ndarray] | None = None

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def retrieval(self, thresholds: Sequence[float] = M.DEFAULT_THRESHOLDS) -> dict | None:
        """Instance retrieval by weight (None when the model has no weights or labels are unknown)."""
        if self.weights is None or self.instance_labels is None:
            return None
        if not any((y > 0).any() for y in self.instance_labels):
            return None
        return M.instance_retrieval(self.weights, self.instance_labels, thresholds)

    def summary(self) -> dict[str, float]:
        out = {"loss": self.loss, "accuracy": self.accuracy, "error": self.error, "auc": self.auc}
        return out


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    selected_epoch: int
    history: list[dict[str, Any]]
    val: EvalResult | None
    test: EvalResult | None
    oracle_test_accuracy: float | None
    model: MILModel
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def iterate_batches(dataset, indices: Sequence[int], batch_size: int) -> Iterator:
    """Collated batches of ``dataset[indices]`` in the given order."""
    for start in range(0, len(indices), batch_size):
        yield collate_bags([dataset[int(i)] for i in indices[start : start + batch_size]])


def scatter_batch_outputs(out, batch, probs, inst_labels, weights, inst_probs) -> tuple[bool, bool]:
    """Copy one padded batch's outputs into per-bag slots (dataset order), real instances only.

    ``probs[idx]`` gets the bag's class probabilities, ``inst_labels[idx]`` / ``weights[idx]`` /
    ``inst_probs[idx]`` its instances' labels, weights and instance probabilities (the last two when the
    model gives them). Returns whether it gave weights and instance probabilities.
    """
    # one device-to-host copy per batch (not per bag): on a GPU each .cpu() is a synchronisation
    p = out.probabilities().float().cpu().numpy()
    ip = out.instance_probabilities()
    ip = None if ip is None else ip.float().cpu().numpy()
    w = None if out.weights is None else out.weights.float().cpu().numpy()
    masks = batch.mask.cpu().numpy()
    batch_inst_labels = batch.instance_labels.cpu().numpy()
    for j, idx in enumerate(batch.indices.tolist()):
        m = masks[j]
        probs[idx] = p[j]
        inst_labels[idx] = batch_inst_labels[j][m]
        if w is not None:
            weights[idx] = w[j][m]
        if ip is not None:
            inst_probs[idx] = ip[j][m]
    return w is not None, ip is not None


@torch.no_grad()
def evaluate(model: MILModel, dataset, batch_size: int = 64, device: str | torch.device = "cpu") -> EvalResult:
    """Evaluate ``model`` on every bag of ``dataset`` (eval mode, no gradient).

    Bags are batched in order of size so that padding stays small; results come back in dataset order.
    """
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.eval()
    order = np.argsort(dataset.bag_sizes, kind="stable")
    n = len(dataset)
    probs = np.zeros((n, model.num_classes))
    total_loss = 0.0
    weights: list[np.ndarray | None] = [None] * n
    inst_probs: list[np.ndarray | None] = [None] * n
    inst_labels: list[np.ndarray] = [np.zeros(0)] * n
    has_weights = has_inst = False
    for batch in iterate_batches(dataset, order, batch_size):
        batch = batch.to(device)
        out = model(batch.x, batch.mask)
        # the loss is a mean over bags, so batch-size weighting gives the per-bag mean of the dataset
        loss, _ = model.loss(out, batch.labels, batch.mask)
        total_loss += float(loss) * len(batch.labels)
        got_weights, got_inst = scatter_batch_outputs(out, batch, probs, inst_labels, weights, inst_probs)
        has_weights, has_inst = has_weights or got_weights, has_inst or got_inst
    model.train(was_training)
    labels = np.asarray(dataset.labels)
    return EvalResult(
        loss=total_loss / n,
        accuracy=M.accuracy(labels, probs.argmax(axis=1)),
        auc=M.roc_auc(labels, probs),
        labels=labels,
        probabilities=probs,
        weights=weights if has_weights else None,  # type: ignore[arg-type]
        instance_probabilities=inst_probs if has_inst else None,  # type: ignore[arg-type]
        instance_labels=inst_labels,
    )


def _better(candidate: tuple[float, float], best: tuple[float, float] | None) -> bool:
    # lowest validation error first, then lowest validation loss (the paper's stopping criterion)
    if best is None:
        return True
    err, loss = candidate
    best_err, best_loss = best
    if not math.isclose(err, best_err, abs_tol=1e-12):
        return err < best_err
    return loss < best_loss - 1e-12


def epoch_schedule(c: TrainConfig, epoch: int) -> dict[str, float]:
    """The SPEC §4 settings of one epoch: ``lr``, Adam ``beta1`` / ``beta2`` and the consistency weight.

    ``lr · ramp_up · ramp_down``; β1 from ``betas[0]`` to ``beta1_rampdown_to`` with the ramp-down; β2 from
    ``betas[1]`` to ``beta2_after_rampup`` once the ramp-up ends; ``consistency_weight · ramp_up`` over
    ``consistency_rampup`` epochs. One function for the Trainer, the vectorized engine and the image loop.
    """
    lr = learning_rate(epoch, c.lr, c.epochs, c.rampup_length, c.rampdown_length, c.rampdown_c)
    b1_end = c.beta1_rampdown_to if c.beta1_rampdown_to is not None else c.betas[0]
    b2_end = c.beta2_after_rampup if c.beta2_after_rampup is not None else c.betas[1]
    b1, b2 = adam_betas(
        epoch,
        c.epochs,
        c.rampup_length,
        c.rampdown_length,
        c.rampdown_c,
        (c.betas[0], b1_end),
        (c.betas[1], b2_end),
    )
    omega = consistency_weight(epoch, c.consistency_weight, c.consistency_rampup)
    return {"lr": lr, "beta1": b1, "beta2": b2, "consistency_weight": omega}


@contextlib.contextmanager
def flush_denormals(enabled: bool = True):
    """Flush denormal floats to zero inside the block (``torch.set_flush_denormal``), restored afterwards.

    After a few epochs of one-bag-per-step training with weight decay, a good share of the Adam moments
    of rarely-active inputs drift below 1.2e-38 (denormal), and x86 arithmetic on denormals is ~100×
    slower: a classic-MIL epoch then costs ~3× an early one. Flushing changes values only below
    1.2e-38. A no-op where the CPU cannot flush (``set_flush_denormal`` returns False).
    """
    if not enabled:
        yield
        return
    was_on = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def denormals_flushed() -> bool:
    """Whether denormals are flushed to zero on this thread now (1e-30 · 1e-10 = 1e-40 is denormal)."""
    return bool((torch.tensor([1e-30]) * 1e-10).item() == 0.0)


class Trainer:
    """Train one model on one split.

    Args:
        model: a registered model (:func:`lossattn.create_model`).
        config: :class:`TrainConfig`.
        run_dir: where checkpoints and per-epoch metrics go (None: keep everything in memory).
        seed: seeds batch order and the torch RNG (dropout).
        metadata: extra entries stored in ``best.pt`` (e.g. the fitted standardiser, the data
            config), so that the checkpoint alone suffices for prediction.
    """

    def __init__(
        self,
        model: MILModel,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        seed: int = 0,
        metadata: dict[str, Any] | None = None,
    ):
        config.validate()
        self.metadata = dict(metadata or {})
        self.model = model
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = int(seed)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("TrainConfig.device is 'cuda' but no CUDA device is available; use device=cpu")
        self.model.to(self.device)
        self.optimizer = _adam(self.model, config)
        # AMP (CUDA only): bfloat16 where the card supports it (no loss scaling needed), else float16 with a
        # GradScaler -- float16 gradients without loss scaling underflow
        self.amp_dtype = _amp_dtype() if (config.amp and self.device.type == "cuda") else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ------------------------------------------------------------------ schedules
    def _schedule(self, epoch: int) -> dict[str, float]:
        return epoch_schedule(self.config, epoch)

    def _set_optimizer(self, sched: dict[str, float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
            group["betas"] = (sched["beta1"], sched["beta2"])

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoint.pt"

    def _state(self, epoch: int, history, best, best_state, ensemble) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ensemble": ensemble.state_dict() if ensemble is not None else None,
            "history": history,
            "best": best,
            "best_state": best_state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "train_config": config_to_dict(self.config),
            "seed": self.seed,
            "model_name": getattr(self.model, "model_name", type(self.model).__name__),
            "model_kwargs": getattr(self.model, "model_kwargs", {}),
        }

    def _save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        # every checkpoint write goes through here (a distributed subclass writes on rank 0 only)
        save_checkpoint(path, state)

    def _write_epoch_metrics(self, history: list[dict[str, Any]]) -> None:
        if self.run_dir is None:
            return
        lines = "".join(json.dumps(row) + "\n" for row in history)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)
        keys = list(dict.fromkeys(k for row in history for k in row))
        csv = ",".join(keys) + "\n" + "".join(",".join(_fmt(row.get(k)) for k in keys) + "\n" for row in history)
        atomic_write_text(self.run_dir / "metrics.csv", csv)

    # ------------------------------------------------------------------ fit
    def fit(self, train_set, val_set=None, test_set=None, resume: bool = False) -> FitResult:
        """Train for ``config.epochs`` epochs; select the epoch on ``val_set``; report on ``test_set``.

        With ``resume=True`` and a checkpoint in ``run_dir``, training continues from the last
        completed epoch and ends with the same weights as an uninterrupted run. With
        ``config.flush_denormal`` (default) denormal floats are flushed to zero while training (see
        :func:`flush_denormals`).
        """
        with flush_denormals(self.config.flush_denormal):
            return self._fit(train_set, val_set, test_set, resume)

    def _fit(self, train_set, val_set, test_set, resume: bool) -> FitResult:
        if len(train_set) == 0:
            raise ValueError("the training set has no bags")
        c = self.config
        start = time.perf_counter()
        if c.threads:
            torch.set_num_threads(c.threads)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        use_ensemble = c.consistency_weight > 0
        ensemble = TemporalEnsemble(train_set.bag_sizes, c.ensemble_momentum) if use_ensemble else None
        history: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        best_state: dict[str, Tensor] | None = None
        first_epoch = 0
        ckpt_path = self._checkpoint_path()
        if resume and ckpt_path is not None and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            if ensemble is not None and state["ensemble"] is not None:
                ensemble.load_state_dict(state["ensemble"])
            history, best, best_state = state["history"], state["best"], state["best_state"]
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            first_epoch = int(state["epoch"])
        else:
            torch.manual_seed(self.seed)

        epochs = range(first_epoch, c.epochs)
        bar = _progress(epochs, c.progress, desc="epochs")
        for epoch in bar:
            row = self._train_epoch(epoch, train_set, ensemble)
            if val_set is not None and len(val_set):
                val = evaluate(self.model, val_set, c.eval_batch_size, self.device)
                row.update(val_loss=val.loss, val_accuracy=val.accuracy, val_error=val.error, val_auc=val.auc)
                candidate = (val.error, val.loss)
            else:
                candidate = (0.0, -float(epoch))  # no validation: the last epoch wins
            if c.oracle and test_set is not None and len(test_set):
                test = evaluate(self.model, test_set, c.eval_batch_size, self.device)
                row.update(test_accuracy=test.accuracy, test_auc=test.auc)
            prior = None if best is None else (best["val_error"], best["val_loss"])
            if _better(candidate, prior):
                best = {"epoch": epoch, "val_error": candidate[0], "val_loss": candidate[1]}
                best_state = copy.deepcopy(self.model.state_dict())
            row["selected_epoch"] = best["epoch"]
            history.append(row)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_err=f"{row.get('val_error', float('nan')):.3f}")
            last = epoch + 1 == c.epochs
            if ckpt_path is not None and ((epoch + 1) % c.checkpoint_every == 0 or last):
                self._save_checkpoint(ckpt_path, self._state(epoch + 1, history, best, best_state, ensemble))
                self._write_epoch_metrics(history)

        assert best is not None and best_state is not None  # at least one epoch ran or was restored
        self.model.load_state_dict(best_state)
        val_result = (
            evaluate(self.model, val_set, c.eval_batch_size, self.device)
            if val_set is not None and len(val_set)
            else None
        )
        test_result = (
            evaluate(self.model, test_set, c.eval_batch_size, self.device)
            if test_set is not None and len(test_set)
            else None
        )
        oracle = max((h["test_accuracy"] for h in history if "test_accuracy" in h), default=None)
        if self.run_dir is not None:
            self._save_checkpoint(
                self.run_dir / "best.pt",
                {
                    "model": best_state,
                    "epoch": best["epoch"],
                    "model_name": getattr(self.model, "model_name", None),
                    "model_kwargs": getattr(self.model, "model_kwargs", {}),
                    "train_config": config_to_dict(c),
                    "seed": self.seed,
                    **self.metadata,
                },
            )
        return FitResult(
            selected_epoch=int(best["epoch"]),
            history=history,
            val=val_result,
            test=test_result,
            oracle_test_accuracy=oracle,
            model=self.model,
            seconds=time.perf_counter() - start,
        )

    def _train_epoch(self, epoch: int, train_set, ensemble: TemporalEnsemble | None) -> dict[str, Any]:
        c = self.config
        sched = self._schedule(epoch)
        self._set_optimizer(sched)
        self.model.train()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(train_set))
        omega = sched["consistency_weight"] if ensemble is not None else 0.0
        autocast = self.device.type == "cuda" and c.amp
        with LF.input_checks(False):  # the dataset validated every bag when it was built
            return self._run_batches(epoch, train_set, order, ensemble, sched, omega, autocast)

    def _run_batches(self, epoch, train_set, order, ensemble, sched, omega, autocast) -> dict[str, Any]:
        c = self.config
        totals: dict[str, float] = {}
        correct = 0
        for batch in iterate_batches(train_set, order, c.batch_size):
            batch = batch.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=autocast):
                out = self.model(batch.x, batch.mask)
                target = ensemble.target(batch.indices, batch.mask) if (ensemble is not None and omega > 0) else None
                if target is not None:
                    target = target.to(self.device)
                loss, terms = self.model.loss(
                    out,
                    batch.labels,
                    batch.mask,
                    ensemble=target,
                    consistency_weight=omega if target is not None else 0.0,
                )
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss {float(loss)} at epoch {epoch} (bags {batch.names}); "
                    "lower the learning rate or check the features"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # the scaler is a no-op unless float16 AMP is on
            if c.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if ensemble is not None and out.weights is not None:
                ensemble.record(batch.indices, out.weights, batch.mask)
            n = len(batch.labels)
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) * n
            correct += int((out.predictions() == batch.labels).sum())
        if ensemble is not None:
            ensemble.step()
        n_bags = len(train_set)
        row: dict[str, Any] = {"epoch": epoch, **{k: v for k, v in sched.items()}}
        row["train_loss"] = totals.pop("total") / n_bags
        row.update({f"train_{k}": v / n_bags for k, v in totals.items()})
        row["train_accuracy"] = correct / n_bags
        return row


def _adam(model: MILModel, config: TrainConfig) -> torch.optim.Optimizer:
    kwargs = {"lr": config.lr, "betas": tuple(config.betas), "weight_decay": config.weight_decay}
    try:
        # the fused kernel removes most of the per-step optimizer overhead of one-bag-per-step training
        return torch.optim.Adam(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch or unsupported device/dtype
        return torch.optim.Adam(model.parameters(), **kwargs)


def _amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)
