"""Training and evaluation of multi-label MIL models, with validation-based model selection.

:class:`MultiLabelTrainer` is the project's :class:`~lossattn.train.trainer.Trainer` (same
:class:`~lossattn.train.config.TrainConfig`, Adam, learning-rate/β schedules, consistency ramp-up and
temporal ensemble) adapted to multi-hot targets: batches carry bit-coded label sets (see
:mod:`lossattn.datasets.multilabel`) that are decoded to ``(B, K)`` targets, per-label weights get a
:class:`~lossattn.multilabel.ensemble.LabelwiseTemporalEnsemble`, and the epoch is selected on validation
bags only — lowest validation Hamming error (share of wrong bag × label decisions at 0.5), ties broken by
the lowest validation loss (the paper's "lowest error, then lowest loss", per label). Test bags never
influence the selection. Checkpoints/resume are not offered here (runs are small).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn import functional as LF
from lossattn.datasets.multilabel import multilabel_targets, num_labels_of
from lossattn.ensemble import TemporalEnsemble
from lossattn.multilabel.ensemble import LabelwiseTemporalEnsemble
from lossattn.multilabel.metrics import (
    DEFAULT_THRESHOLDS,
    instance_average_precision,
    instance_retrieval_per_label,
    multilabel_scores,
)
from lossattn.train.config import TrainConfig
from lossattn.train.trainer import Trainer, _better, iterate_batches

__all__ = [
    "MultiLabelEvalResult",
    "MultiLabelFitResult",
    "MultiLabelTrainer",
    "evaluate_multilabel",
    "batch_targets",
    "multilabel_scores",
    "instance_retrieval_per_label",
    "instance_average_precision",
]


def batch_targets(codes: Tensor, num_labels: int) -> Tensor:
    """Bit-coded label sets ``(B,)`` → float multi-hot targets ``(B, K)`` on the same device."""
    shifts = torch.arange(num_labels, device=codes.device)
    return ((codes.unsqueeze(-1) >> shifts) & 1).float()


@dataclass
class MultiLabelEvalResult:
    """Predictions and metrics of a multi-label model on a set of bags (dataset order).

    Attributes:
        loss: mean training loss per bag (without the consistency term).
        targets: ``(B, K)`` multi-hot labels.
        probabilities: ``(B, K)`` per-label bag probabilities.
        weights: per bag ``(n_i, K)`` per-label or ``(n_i,)`` shared weights; None without weights.
        instance_labels: per bag ``(n_i,)``.
    """

    loss: float
    targets: np.ndarray
    probabilities: np.ndarray
    weights: list[np.ndarray] | None = None
    instance_labels: list[np.ndarray] | None = None
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return int(self.targets.shape[1])

    @property
    def hamming(self) -> float:
        return self.scores["hamming"]

    def predictions(self, threshold: float = 0.5) -> np.ndarray:
        return (self.probabilities > threshold).astype(np.int64)

    def retrieval(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, bags: str = "all") -> dict | None:
        """Per-label instance retrieval by weight (None without weights or instance labels)."""
        if self.weights is None or self.instance_labels is None:
            return None
        if not any((y > 0).any() for y in self.instance_labels):
            return None
        return instance_retrieval_per_label(
            self.weights, self.instance_labels, self.num_labels, thresholds, bag_targets=self.targets, bags=bags
        )

    def instance_ap(self, bags: str = "all") -> dict[int, float] | None:
        """Per-label average precision of ranking instances by weight (None without weights/labels)."""
        if self.weights is None or self.instance_labels is None:
            return None
        if not any((y > 0).any() for y in self.instance_labels):
            return None
        return instance_average_precision(
            self.weights, self.instance_labels, self.num_labels, bag_targets=self.targets, bags=bags
        )

    def summary(self) -> dict[str, float]:
        return {"loss": self.loss, **self.scores}


@dataclass
class MultiLabelFitResult:
    """What :meth:`MultiLabelTrainer.fit` returns (the model holds the selected epoch's weights)."""

    selected_epoch: int
    history: list[dict[str, Any]]
    val: MultiLabelEvalResult | None
    test: MultiLabelEvalResult | None
    model: Any
    seconds: float = 0.0


@torch.no_grad()
def evaluate_multilabel(
    model, dataset, batch_size: int = 64, device: str | torch.device = "cpu", threshold: float = 0.5
) -> MultiLabelEvalResult:
    """Evaluate a multi-label model on every bag of a multi-label dataset (eval mode, no gradient)."""
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    K = num_labels_of(dataset)
    if getattr(model, "num_labels", K) != K:
        raise ValueError(f"the model predicts {model.num_labels} labels but the dataset has {K}")
    was_training = model.training
    model.eval()
    order = np.argsort(dataset.bag_sizes, kind="stable")
    n = len(dataset)
    probs = np.zeros((n, K))
    total_loss = 0.0
    weights: list[Any] = [None] * n
    inst_labels: list[np.ndarray] = [np.zeros(0, np.int64)] * n
    has_weights = False
    try:
        for batch in iterate_batches(dataset, order, batch_size):
            batch = batch.to(device)
            out = model(batch.x, batch.mask)
            loss, _ = model.loss(out, batch_targets(batch.labels, K), batch.mask)
            total_loss += float(loss) * len(batch.labels)
            p = out.probabilities().float().cpu().numpy()
            w = None if out.weights is None else out.weights.float().cpu().numpy()
            mask = batch.mask.cpu().numpy()
            il = batch.instance_labels.cpu().numpy()
            for j, idx in enumerate(batch.indices.tolist()):
                probs[idx] = p[j]
                inst_labels[idx] = il[j][mask[j]]
                if w is not None:
                    has_weights = True
                    weights[idx] = w[j][mask[j]]
    finally:
        model.train(was_training)
    targets = multilabel_targets(dataset)
    return MultiLabelEvalResult(
        loss=total_loss / n,
        targets=targets,
        probabilities=probs,
        weights=weights if has_weights else None,
        instance_labels=inst_labels,
        scores=multilabel_scores(targets, probs, threshold),
    )


class MultiLabelTrainer(Trainer):
    """Train one multi-label model on one split (see the module doc).

    Args:
        model: a multi-label model (:func:`lossattn.multilabel.create_multilabel_model`).
        config: :class:`~lossattn.train.config.TrainConfig` (``run_dir``-related fields and ``oracle`` are
            ignored).
        seed: seeds batch order and the torch RNG (dropout).
    """

    def __init__(self, model, config: TrainConfig, seed: int = 0) -> None:
        super().__init__(model, config, run_dir=None, seed=seed)

    def fit(self, train_set, val_set=None, test_set=None, resume: bool = False) -> MultiLabelFitResult:  # type: ignore[override]
        """Train ``config.epochs`` epochs; select the epoch on ``val_set``; evaluate ``test_set`` once at the end."""
        if resume:
            raise ValueError("MultiLabelTrainer does not resume from checkpoints")
        if len(train_set) == 0:
            raise ValueError("the training set has no bags")
        K = num_labels_of(train_set)
        if getattr(self.model, "num_labels", None) != K:
            raise ValueError(f"the model predicts {getattr(self.model, 'num_labels', None)} labels, the data has {K}")
        c = self.config
        start = time.perf_counter()
        if c.threads:
            torch.set_num_threads(c.threads)
        torch.manual_seed(self.seed)
        ensemble = None
        if c.consistency_weight > 0:
            ensemble = (
                LabelwiseTemporalEnsemble(train_set.bag_sizes, K, c.ensemble_momentum)
                if getattr(self.model, "weights_per_label", False)
                else TemporalEnsemble(train_set.bag_sizes, c.ensemble_momentum)
            )
        history: list[dict[str, Any]] = []
        best: tuple[float, float] | None = None
        best_epoch, best_state = -1, None
        for epoch in range(c.epochs):
            row = self._train_multilabel_epoch(epoch, train_set, ensemble, K)
            if val_set is not None and len(val_set):
                val = evaluate_multilabel(self.model, val_set, c.eval_batch_size, self.device)
                row.update(
                    val_loss=val.loss,
                    val_hamming=val.hamming,
                    val_micro_f1=val.scores["micro_f1"],
                    val_map=val.scores["map"],
                )
                candidate = (val.hamming, val.loss)
            else:
                candidate = (0.0, -float(epoch))  # no validation: the last epoch wins
            if _better(candidate, best):
                best, best_epoch = candidate, epoch
                best_state = copy.deepcopy(self.model.state_dict())
            row["selected_epoch"] = best_epoch
            history.append(row)
        assert best_state is not None
        self.model.load_state_dict(best_state)
        bs = c.eval_batch_size
        val_res = (
            evaluate_multilabel(self.model, val_set, bs, self.device) if val_set is not None and len(val_set) else None
        )
        test_res = (
            evaluate_multilabel(self.model, test_set, bs, self.device)
            if test_set is not None and len(test_set)
            else None
        )
        return MultiLabelFitResult(best_epoch, history, val_res, test_res, self.model, time.perf_counter() - start)

    def _train_multilabel_epoch(self, epoch: int, train_set, ensemble, K: int) -> dict[str, Any]:
        c = self.config
        sched = self._schedule(epoch)
        self._set_optimizer(sched)
        self.model.train()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(train_set))
        omega = sched["consistency_weight"] if ensemble is not None else 0.0
        totals: dict[str, float] = {}
        wrong = 0
        with LF.input_checks(False):  # the dataset validated every bag when it was built
            for batch in iterate_batches(train_set, order, c.batch_size):
                batch = batch.to(self.device)
                y = batch_targets(batch.labels, K)
                out = self.model(batch.x, batch.mask)
                target = ensemble.target(batch.indices, batch.mask) if (ensemble is not None and omega > 0) else None
                if target is not None:
                    target = target.to(self.device)
                loss, terms = self.model.loss(
                    out, y, batch.mask, ensemble=target, consistency_weight=omega if target is not None else 0.0
                )
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite training loss {float(loss)} at epoch {epoch} (bags {batch.names}); "
                        "lower the learning rate or check the features"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if c.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
                self.optimizer.step()
                if ensemble is not None and out.weights is not None:
                    ensemble.record(batch.indices, out.weights, batch.mask)
                n = len(batch.labels)
                for k, v in terms.items():
                    totals[k] = totals.get(k, 0.0) + float(v.detach()) * n
                wrong += int((out.predictions() != y.bool()).sum())
        if ensemble is not None:
            ensemble.step()
        n_bags = len(train_set)
        row: dict[str, Any] = {"epoch": epoch, **sched}
        row["train_loss"] = totals.pop("total") / n_bags
        row.update({f"train_{k}": v / n_bags for k, v in totals.items()})
        row["train_hamming"] = wrong / (n_bags * K)
        return row
