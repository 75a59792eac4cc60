"""What evaluation and training return: :class:`EvalResult`, :class:`MultiLabelEvalResult`, :class:`FitResult`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from lossattn import metrics as M
from lossattn.multilabel.metrics import instance_average_precision, instance_retrieval_per_label

__all__ = ["EvalResult", "FitResult", "MultiLabelEvalResult"]


@dataclass
class EvalResult:
    """Predictions and metrics of a single-label model on a set of bags (arrays in dataset order).

    Attributes:
        loss: mean training loss per bag (without the consistency term).
        labels: ``(B,)`` bag classes.
        probabilities: ``(B, K)`` class probabilities.
        weights / instance_probabilities / instance_labels: per bag ``(n_i,)`` / ``(n_i, K)`` / ``(n_i,)``
            arrays of its real instances (None where the model or data has none).
        top5: share of bags whose class is among the 5 most probable (image classification).
        localization_ap: weakly supervised localization AP (Tiny ImageNet boxes), when computed.
        threshold: binary models: the positive-class probability from which a bag is predicted positive (chosen
            on validation bags, see ``TrainConfig.threshold``); None = the more probable class.
    """

    loss: float
    labels: np.ndarray
    probabilities: np.ndarray
    weights: list[np.ndarray] | None = None
    instance_probabilities: list[np.ndarray] | None = None
    instance_labels: list[np.ndarray] | None = None
    top5: float | None = None
    localization_ap: float | None = None
    threshold: float | None = None

    @property
    def predictions(self) -> np.ndarray:
        if self.threshold is not None and self.probabilities.shape[1] == 2:
            return (self.probabilities[:, 1] >= self.threshold).astype(np.int64)
        return self.probabilities.argmax(axis=1)

    @cached_property
    def accuracy(self) -> float:
        return M.accuracy(self.labels, self.predictions)

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    @cached_property
    def balanced_accuracy(self) -> float:
        """Mean per-class recall: 1/K for a model that predicts one class whatever the bag."""
        return M.balanced_accuracy(self.labels, self.predictions)

    @cached_property
    def auc(self) -> float:
        """ROC AUC (binary, or one-vs-rest macro); NaN when one class only is present."""
        return M.roc_auc(self.labels, self.probabilities)

    def retrieval(self, thresholds: Sequence[float] = M.DEFAULT_THRESHOLDS) -> dict | None:
        """Instance retrieval by weight (None when the model has no weights or instance labels are unknown)."""
        if self.weights is None or self.instance_labels is None:
            return None
        if not any((y > 0).any() for y in self.instance_labels):
            return None
        return M.instance_retrieval(self.weights, self.instance_labels, thresholds)

    def summary(self) -> dict[str, float]:
        out = {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "error": self.error,
            "auc": self.auc,
        }
        if self.top5 is not None:
            out["top5"] = self.top5
        if self.localization_ap is not None:
            out["localization_ap"] = self.localization_ap
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


@dataclass
class MultiLabelEvalResult:
    """Predictions and metrics of a multi-label model on a set of bags (dataset order).

    Attributes:
        loss: mean training loss per bag (without the consistency term).
        targets: ``(B, L)`` multi-hot labels.
        probabilities: ``(B, L)`` per-label bag probabilities.
        weights: per bag ``(n_i, L)`` per-label or ``(n_i,)`` shared weights; None without weights.
        instance_labels: per bag ``(n_i,)``.
        scores: micro/macro F1, mAP, Hamming error... (:func:`lossattn.multilabel.metrics.multilabel_scores`).
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

    def _has_instance_truth(self) -> bool:
        return (
            self.weights is not None
            and self.instance_labels is not None
            and any((y > 0).any() for y in self.instance_labels)
        )

    def retrieval(self, thresholds: Sequence[float] = M.DEFAULT_THRESHOLDS, bags: str = "all") -> dict | None:
        """Per-label instance retrieval by weight (None without weights or instance labels)."""
        if not self._has_instance_truth():
            return None
        return instance_retrieval_per_label(
            self.weights, self.instance_labels, self.num_labels, thresholds, bag_targets=self.targets, bags=bags
        )

    def instance_ap(self, bags: str = "all") -> dict[int, float] | None:
        """Per-label average precision of ranking instances by weight (None without weights/labels)."""
        if not self._has_instance_truth():
            return None
        return instance_average_precision(
            self.weights, self.instance_labels, self.num_labels, bag_targets=self.targets, bags=bags
        )

    def summary(self) -> dict[str, float]:
        return {"loss": self.loss, **self.scores}


@dataclass
class FitResult:
    """What a training run returns; ``model`` holds the selected epoch's weights.

    Attributes:
        selected_epoch: the epoch chosen on the validation bags (the last one without validation bags).
        history: one row per epoch (schedule, training loss terms, validation metrics, selected epoch so far).
        val / test: evaluation of the selected model (None without such bags).
        oracle_test_accuracy: best *test* accuracy over epochs when ``TrainConfig.oracle`` is set (the
            reference code's optimistic figure; never used for selection).
        extra: backend details (e.g. ``{"engine": "vectorized"}``).
    """

    selected_epoch: int
    history: list[dict[str, Any]]
    val: EvalResult | MultiLabelEvalResult | None
    test: EvalResult | MultiLabelEvalResult | None
    oracle_test_accuracy: float | None
    model: torch.nn.Module
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
