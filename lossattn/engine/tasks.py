"""Tasks: what differs between single-label bags, multi-label bags and image classification — not the loop.

A task supplies the loss targets of a batch, the temporal ensemble that fits the model's weights, the
per-epoch training statistics, the evaluation of a model on a source, the rows it adds to the history and
the selection key of an evaluation. :func:`task_for` picks the task from the model's registry tags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn import functional as LF
from lossattn import metrics as M
from lossattn.engine.config import EVAL_MAX_INSTANCES
from lossattn.engine.results import EvalResult, MultiLabelEvalResult
from lossattn.engine.sources import Batch
from lossattn.ensemble import TemporalEnsemble
from lossattn.multilabel.ensemble import LabelwiseTemporalEnsemble
from lossattn.multilabel.metrics import multilabel_scores

__all__ = [
    "ImageClassificationTask",
    "MultiLabelTask",
    "SingleLabelTask",
    "Task",
    "autocast",
    "better",
    "eval_mode",
    "scatter_outputs",
    "task_for",
    "with_threshold",
]


def better(candidate: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Whether a selection key beats the best so far: lower first element, ties (to 1e-12) by the second.

    With the default keys this is the paper's stopping criterion: lowest validation error, then lowest
    validation loss.
    """
    if best is None:
        return True
    first, second = candidate
    best_first, best_second = best
    if not math.isclose(first, best_first, abs_tol=1e-12):
        return first < best_first
    return second < best_second - 1e-12


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on CUDA with ``dtype`` (None: off)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


class Task:
    """Base class: the single-label bag task's behaviour, which the others adjust."""

    name = "single_label"

    def targets(self, batch: Batch) -> Tensor:
        """What ``model.loss`` is given as target: ``(B,)`` classes."""
        return batch.labels

    def check_data(self, model: torch.nn.Module, source, what: str) -> None:
        """Raise a clear ValueError when ``model`` cannot be trained or scored on ``source`` (its ``what`` bags)."""
        if source.targets is not None:
            raise ValueError(
                f"the {what} bags carry label sets (multi-label) but model {_name(model)} is single-label; "
                "use a multi-label model (lossattn.list_models(task='multi_label'))"
            )
        top = int(source.labels.max()) if len(source.labels) else -1
        if top >= int(model.num_classes):
            raise ValueError(
                f"the {what} bags have classes up to {top} but model {_name(model)} predicts "
                f"{int(model.num_classes)} classes (0..{int(model.num_classes) - 1})"
            )

    def make_ensemble(self, model: torch.nn.Module, sizes: np.ndarray, momentum: float):
        """The temporal ensemble of the model's weights over the training bags."""
        return TemporalEnsemble(sizes.tolist(), momentum)

    def train_counts(self, output, target: Tensor) -> dict[str, float]:
        return {"correct": float((output.predictions() == target).sum())}

    def train_row(self, counts: dict[str, float], n_bags: int, model: torch.nn.Module) -> dict[str, float]:
        return {"train_accuracy": counts.get("correct", 0.0) / n_bags}

    def iterate(
        self,
        model,
        source,
        batch_size: int,
        device: torch.device,
        amp_dtype=None,
        *,
        max_instances: int | None = EVAL_MAX_INSTANCES,
        instance_chunk: int | None = None,
    ) -> Iterator:
        """``(batch, output, per-batch loss)`` over every bag of ``source`` (eval mode, no gradient).

        Batches hold at most ``batch_size`` bags and ``max_instances`` padded instances
        (:meth:`~lossattn.engine.sources.BagSource.eval_batches`); with ``instance_chunk`` each bag runs through
        the model that many instances at a time (:mod:`lossattn.models.chunked`).
        """
        kwargs = {} if instance_chunk is None else {"instance_chunk": instance_chunk}
        for batch in source.eval_batches(batch_size, max_instances):
            batch = batch.to(device)
            if batch.mask is None and device.type == "cuda":
                batch.x = batch.x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp_dtype):
                out = model(batch.x, batch.mask, **kwargs)
                loss, _ = model.loss(out, self.targets(batch), batch.mask)
            yield batch, out, float(loss)

    @torch.no_grad()
    def evaluate(
        self,
        model,
        source,
        batch_size: int,
        device: torch.device,
        amp_dtype=None,
        *,
        max_instances: int | None = EVAL_MAX_INSTANCES,
        instance_chunk: int | None = None,
    ) -> EvalResult:
        """Probabilities, loss, instance weights and instance probabilities of every bag (dataset order)."""
        n = len(source)
        K = int(model.num_classes)
        probs = np.zeros((n, K))
        weights: list[Any] = [None] * n
        inst_probs: list[Any] = [None] * n
        inst_labels: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        has_w = has_ip = False
        total = 0.0
        with eval_mode(model), LF.input_checks(not source.validated):
            for batch, out, loss in self.iterate(
                model, source, batch_size, device, amp_dtype, max_instances=max_instances, instance_chunk=instance_chunk
            ):
                # the loss is a mean over bags: weighting by the batch size gives the per-bag mean
                total += loss * len(batch)
                got_w, got_ip = scatter_outputs(out, batch, probs, inst_labels, weights, inst_probs)
                has_w, has_ip = has_w or got_w, has_ip or got_ip
        return EvalResult(
            loss=total / n,
            labels=source.labels.copy(),
            probabilities=probs,
            weights=weights if has_w else None,
            instance_probabilities=inst_probs if has_ip else None,
            instance_labels=inst_labels,
        )

    def decision_threshold(self, model: torch.nn.Module, val, rule: str) -> float | None:
        """The binary decision threshold of ``TrainConfig.threshold``: chosen on the validation result, or None."""
        if rule != "validation" or val is None or int(model.num_classes) != 2:
            return None
        if len(np.unique(val.labels)) < 2:
            return None  # one class in the validation bags: nothing to balance, keep the more probable class
        return M.best_threshold(val.labels, val.probabilities[:, 1])

    def val_row(self, result: EvalResult) -> dict[str, float]:
        return {
            "val_loss": result.loss,
            "val_accuracy": result.accuracy,
            "val_error": result.error,
            "val_balanced_accuracy": result.balanced_accuracy,
            "val_auc": result.auc,
        }

    def oracle_row(self, result: EvalResult) -> dict[str, float]:
        return {"test_accuracy": result.accuracy, "test_auc": result.auc}

    def selection_key(self, result: EvalResult, rule: str) -> tuple[float, float]:
        """The key :func:`better` compares (lower is better) under a selection rule of ``TrainConfig``."""
        if rule == "error":
            return result.error, result.loss
        if rule == "balanced_error":
            return 1.0 - result.balanced_accuracy, result.loss
        if rule == "auc":
            auc = result.auc
            return (-auc if math.isfinite(auc) else 0.0), result.loss
        return result.loss, result.loss


SingleLabelTask = Task


class ImageClassificationTask(Task):
    """Image classification with an image model (ResNet18-MIL): top-1 / top-5 and, with boxes, localization AP.

    Args:
        localization: also compute weakly supervised localization AP (the source's dataset needs ``boxes``):
            the weight map (or, for mean/max pooling, the class activation map) upsampled to the image, its peak
            position counted correct when at least half of that patch lies inside the box.
    """

    name = "image_classification"

    def __init__(self, localization: bool = False) -> None:
        self.localization = bool(localization)

    @torch.no_grad()
    def evaluate(
        self, model, source, batch_size: int, device: torch.device, amp_dtype=None, **options: Any
    ) -> EvalResult:
        """Top-1 / top-5 (and localization AP) over every image; ``options`` (bag batch bounds) do not apply."""
        from lossattn.localization import localization_ap

        ds = source.dataset
        if self.localization and getattr(ds, "boxes", None) is None:
            raise ValueError("localization AP needs a dataset with boxes")
        n = len(source)
        probs = np.zeros((n, int(model.num_classes)))
        total = 0.0
        maps = []
        with eval_mode(model):
            for batch, out, loss in self.iterate(model, source, batch_size, device, amp_dtype):
                total += loss * len(batch)
                probs[batch.index.cpu().numpy()] = out.probabilities().float().cpu().numpy()
                if self.localization:
                    maps.append(out.localization_map().float().cpu())
        labels = source.labels.copy()
        k = min(5, probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top5 = float((top == labels[:, None]).any(axis=1).mean())
        ap = localization_ap(torch.cat(maps), ds.boxes, ds.image_size) if self.localization else None
        return EvalResult(loss=total / n, labels=labels, probabilities=probs, top5=top5, localization_ap=ap)

    def decision_threshold(self, model: torch.nn.Module, val, rule: str) -> float | None:
        return None  # image classes are not a positive/negative pair

    def val_row(self, result: EvalResult) -> dict[str, float]:
        return {"val_loss": result.loss, "val_accuracy": result.accuracy, "val_error": result.error}

    def oracle_row(self, result: EvalResult) -> dict[str, float]:
        row = {"test_accuracy": result.accuracy, "test_top5": result.top5}
        if result.localization_ap is not None:
            row["test_localization_ap"] = result.localization_ap
        return row


_NO_LABEL_SETS = (
    "a multi-label model needs multi-label bags (label sets): build them with "
    "lossattn.datasets.make_multilabel_dataset or a make_multilabel_* generator"
)


class MultiLabelTask(Task):
    """Bags with a set of labels: multi-hot ``(B, L)`` targets, per-label weights, Hamming error selection."""

    name = "multi_label"

    def targets(self, batch: Batch) -> Tensor:
        if batch.targets is None:
            raise ValueError(_NO_LABEL_SETS)
        return batch.targets

    def check_data(self, model: torch.nn.Module, source, what: str) -> None:
        if source.targets is None:
            raise ValueError(f"{_NO_LABEL_SETS} (the {what} bags have single labels)")
        L = int(source.targets.shape[1])
        if int(model.num_classes) != L:
            raise ValueError(
                f"model {_name(model)} predicts {int(model.num_classes)} labels but the {what} bags have {L}"
            )

    def make_ensemble(self, model: torch.nn.Module, sizes: np.ndarray, momentum: float):
        if getattr(model, "weights_per_label", False):
            return LabelwiseTemporalEnsemble(sizes.tolist(), int(model.num_classes), momentum)
        return TemporalEnsemble(sizes.tolist(), momentum)

    def train_counts(self, output, target: Tensor) -> dict[str, float]:
        return {"wrong": float((output.predictions() != target.bool()).sum())}

    def train_row(self, counts: dict[str, float], n_bags: int, model: torch.nn.Module) -> dict[str, float]:
        return {"train_hamming": counts.get("wrong", 0.0) / (n_bags * int(model.num_classes))}

    @torch.no_grad()
    def evaluate(
        self,
        model,
        source,
        batch_size: int,
        device: torch.device,
        amp_dtype=None,
        *,
        max_instances: int | None = EVAL_MAX_INSTANCES,
        instance_chunk: int | None = None,
    ) -> MultiLabelEvalResult:
        self.check_data(model, source, "evaluation")
        n, L = source.targets.shape
        probs = np.zeros((n, L))
        weights: list[Any] = [None] * n
        inst_probs: list[Any] = [None] * n  # filled but not part of the multi-label result
        inst_labels: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        has_w = False
        total = 0.0
        with eval_mode(model), LF.input_checks(not source.validated):
            for batch, out, loss in self.iterate(
                model, source, batch_size, device, amp_dtype, max_instances=max_instances, instance_chunk=instance_chunk
            ):
                total += loss * len(batch)
                got_w, _ = scatter_outputs(out, batch, probs, inst_labels, weights, inst_probs)
                has_w = has_w or got_w
        targets = source.targets.numpy().astype(np.int64)
        return MultiLabelEvalResult(
            loss=total / n,
            targets=targets,
            probabilities=probs,
            weights=weights if has_w else None,
            instance_labels=inst_labels,
            scores=multilabel_scores(targets, probs, 0.5),
        )

    def decision_threshold(self, model: torch.nn.Module, val, rule: str) -> float | None:
        return None  # each label is decided at probability 0.5

    def val_row(self, result: MultiLabelEvalResult) -> dict[str, float]:
        return {
            "val_loss": result.loss,
            "val_hamming": result.hamming,
            "val_micro_f1": result.scores["micro_f1"],
            "val_map": result.scores["map"],
        }

    def oracle_row(self, result: MultiLabelEvalResult) -> dict[str, float]:
        return {"test_hamming": result.hamming, "test_micro_f1": result.scores["micro_f1"]}

    def selection_key(self, result: MultiLabelEvalResult, rule: str) -> tuple[float, float]:
        if rule == "error":
            return result.hamming, result.loss
        if rule == "balanced_error":
            return 1.0 - result.scores["macro_f1"], result.loss
        if rule == "auc":
            return -result.scores["map"], result.loss
        return result.loss, result.loss


def _name(model: torch.nn.Module) -> str:
    return repr(getattr(model, "model_name", type(model).__name__))


def with_threshold(task: Task, model: torch.nn.Module, rule: str, val, test):
    """``(val, test, threshold)``: the final evaluations with the decision threshold of ``rule`` applied.

    The threshold is chosen on ``val`` only (never on test bags) and applied to both results.
    """
    threshold = task.decision_threshold(model, val, rule)
    if threshold is None:
        return val, test, None
    return (
        dataclasses.replace(val, threshold=threshold),
        None if test is None else dataclasses.replace(test, threshold=threshold),
        threshold,
    )


def task_for(model: torch.nn.Module, localization: bool = False) -> Task:
    """The task of a model, from its registry tags (``task``, ``input_kind``)."""
    if getattr(model, "task", "single_label") == "multi_label":
        return MultiLabelTask()
    if getattr(model, "input_kind", "instances") == "image":
        return ImageClassificationTask(localization)
    return Task()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model.eval()`` inside the block, the previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def scatter_outputs(out, batch: Batch, probs, inst_labels, weights, inst_probs) -> tuple[bool, bool]:
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
    for j, idx in enumerate(batch.index.tolist()):
        m = masks[j]
        probs[idx] = p[j]
        inst_labels[idx] = batch_inst_labels[j][m]
        if w is not None:
            weights[idx] = w[j][m]
        if ip is not None:
            inst_probs[idx] = ip[j][m]
    return w is not None, ip is not None
