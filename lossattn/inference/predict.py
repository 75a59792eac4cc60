"""Predictions of a trained model on bags, and the per-bag / per-instance CSV files that hold them."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossattn.engine.runtime import progress as run_progress
from lossattn.engine.sources import BagSource
from lossattn.engine.tasks import eval_mode, scatter_outputs
from lossattn.inference.checkpoint import TrainedModel
from lossattn.io import atomic_write_text

__all__ = ["Predictions", "predict_bags", "write_bag_csv", "write_instance_csv"]


@dataclass
class Predictions:
    """Per-bag predictions in dataset order; per-instance arrays are lists of ``(n_i, ...)`` arrays."""

    names: list[str]
    labels: np.ndarray | None
    probabilities: np.ndarray
    weights: list[np.ndarray] | None
    instance_probabilities: list[np.ndarray] | None
    instance_labels: list[np.ndarray]
    bag_sizes: np.ndarray
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def num_classes(self) -> int:
        return int(self.probabilities.shape[1])

    def __len__(self) -> int:
        return len(self.names)


@torch.no_grad()
def predict_bags(
    trained: TrainedModel, dataset, batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = False
) -> Predictions:
    """Run the model on every bag (eval mode); the dataset must already be prepared (:func:`prepare_data`)."""
    if len(dataset) == 0:
        raise ValueError("the data holds no bags")
    model = trained.model.to(device)
    source = BagSource(dataset)
    n = len(dataset)
    probs = np.zeros((n, trained.num_classes))
    weights: list[Any] = [None] * n
    inst_probs: list[Any] = [None] * n
    inst_labels: list[np.ndarray] = [np.zeros(0, np.int64)] * n
    has_w = has_ip = False
    total = (n + batch_size - 1) // batch_size
    with eval_mode(model):
        for batch in run_progress(source.eval_batches(batch_size), progress, "predict", total=total, unit="batch"):
            batch = batch.to(torch.device(device))
            out = model(batch.x, batch.mask)
            got_w, got_ip = scatter_outputs(out, batch, probs, inst_labels, weights, inst_probs)
            has_w, has_ip = has_w or got_w, has_ip or got_ip
    class_names = getattr(dataset, "class_names", None)
    if class_names is not None and len(class_names) != probs.shape[1]:
        class_names = None
    return Predictions(
        names=list(dataset.names),
        labels=np.asarray(dataset.labels),
        probabilities=probs,
        weights=weights if has_w else None,
        instance_probabilities=inst_probs if has_ip else None,
        instance_labels=inst_labels,
        bag_sizes=np.asarray(dataset.bag_sizes),
        class_names=list(class_names) if class_names else None,
    )


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _num(x: float) -> str:
    return f"{float(x):.6g}"


def write_bag_csv(pred: Predictions, path: str | Path) -> Path:
    """One row per bag: ``bag, n_instances, label, predicted, [predicted_name], prob_0 .. prob_{K-1}``."""
    K = pred.num_classes
    header = ["bag", "n_instances", "label", "predicted"]
    if pred.class_names:
        header.append("predicted_name")
    header += [f"prob_{k}" for k in range(K)]
    rows = []
    for i, name in enumerate(pred.names):
        row: list[Any] = [name, int(pred.bag_sizes[i]), "" if pred.labels is None else int(pred.labels[i])]
        row.append(int(pred.predicted[i]))
        if pred.class_names:
            row.append(pred.class_names[int(pred.predicted[i])])
        row += [_num(v) for v in pred.probabilities[i]]
        rows.append(row)
    path = Path(path)
    atomic_write_text(path, _csv_text(header, rows))
    return path


def write_instance_csv(pred: Predictions, path: str | Path) -> Path:
    """One row per instance: ``bag, instance, weight, instance_label, predicted, prob_0 ..`` (where known)."""
    K = pred.num_classes
    header = ["bag", "instance", "weight", "instance_label"]
    if pred.instance_probabilities is not None:
        header += ["predicted"] + [f"prob_{k}" for k in range(K)]
    rows = []
    for i, name in enumerate(pred.names):
        n = int(pred.bag_sizes[i])
        for t in range(n):
            row: list[Any] = [name, t, "" if pred.weights is None else _num(pred.weights[i][t])]
            il = pred.instance_labels[i]
            row.append(int(il[t]) if t < len(il) and il[t] >= 0 else "")
            if pred.instance_probabilities is not None:
                ip = pred.instance_probabilities[i][t]
                row += [int(np.argmax(ip))] + [_num(v) for v in ip]
            rows.append(row)
    path = Path(path)
    atomic_write_text(path, _csv_text(header, rows))
    return path
