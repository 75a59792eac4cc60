"""Predictions of a trained model on bags, and the per-bag / per-instance CSV files that hold them.

:func:`write_predictions` writes ``bags.csv``, ``instances.csv`` and ``predictions.json`` as one unit: into a
temporary folder beside the output folder, renamed into place once complete, so a killed command never leaves
a new ``bags.csv`` beside an old ``instances.csv``. ``predictions.json`` (which bags, which checkpoint, the
columns) is the completion record.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossattn.engine.config import EVAL_MAX_INSTANCES
from lossattn.engine.runtime import progress as run_progress
from lossattn.engine.sources import BagSource, eval_index_batches
from lossattn.engine.tasks import eval_mode, scatter_outputs
from lossattn.inference.checkpoint import TrainedModel
from lossattn.io import atomic_write_text, folder_mode

__all__ = ["Predictions", "predict_bags", "write_bag_csv", "write_instance_csv", "write_predictions"]


@dataclass
class Predictions:
    """Per-bag predictions in dataset order; per-instance arrays are lists of ``(n_i, ...)`` arrays.

    Attributes:
        labels: known bag classes, or None for unlabeled bags.
        label_values: the user's value of each class (predictions are written back in them), or None.
        threshold: binary models: the positive-class probability from which a bag is predicted positive (chosen
            on the validation bags of the run), or None = the more probable class.
        coords: per bag ``(n_i, 2)`` patch coordinates (whole-slide feature folders), or None.
    """

    names: list[str]
    labels: np.ndarray | None
    probabilities: np.ndarray
    weights: list[np.ndarray] | None
    instance_probabilities: list[np.ndarray] | None
    instance_labels: list[np.ndarray]
    bag_sizes: np.ndarray
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    label_values: list[Any] | None = None
    threshold: float | None = None
    coords: list[np.ndarray] | None = None

    @property
    def predicted(self) -> np.ndarray:
        if self.threshold is not None and self.num_classes == 2:
            return (self.probabilities[:, 1] >= self.threshold).astype(np.int64)
        return self.probabilities.argmax(axis=1)

    @property
    def num_classes(self) -> int:
        return int(self.probabilities.shape[1])

    def value_of(self, k: int) -> Any:
        """Class ``k`` in the user's label values (``k`` itself when the data had plain 0..K-1 classes)."""
        return self.label_values[k] if self.label_values is not None and k < len(self.label_values) else k

    def __len__(self) -> int:
        return len(self.names)


@torch.no_grad()
def predict_bags(
    trained: TrainedModel,
    dataset,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    max_instances: int | None = EVAL_MAX_INSTANCES,
) -> Predictions:
    """Run the model on every bag (eval mode); the dataset must already be prepared (:func:`prepare_data`).

    A batch holds at most ``batch_size`` bags and ``max_instances`` padded instances (bags × its largest bag; a
    larger lone bag is its own batch; None: no bound), so memory follows the largest bag, not the batch size.
    """
    if len(dataset) == 0:
        raise ValueError("the data holds no bags")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = trained.model.to(device)
    source = BagSource(dataset)
    n = len(dataset)
    probs = np.zeros((n, trained.num_classes))
    weights: list[Any] = [None] * n
    inst_probs: list[Any] = [None] * n
    inst_labels: list[np.ndarray] = [np.zeros(0, np.int64)] * n
    has_w = has_ip = False
    plan = list(eval_index_batches(source.sizes, batch_size, max_instances))
    batches = (source.collate(indices) for indices in plan)
    with eval_mode(model):
        for batch in run_progress(batches, progress, "predict", total=len(plan), unit="batch"):
            batch = batch.to(torch.device(device))
            out = model(batch.x, batch.mask)
            got_w, got_ip = scatter_outputs(out, batch, probs, inst_labels, weights, inst_probs)
            has_w, has_ip = has_w or got_w, has_ip or got_ip
    class_names = trained.class_names or getattr(dataset, "class_names", None)
    if class_names is not None and len(class_names) != probs.shape[1]:
        class_names = None
    labels = np.asarray(dataset.labels) if getattr(dataset, "has_labels", True) else None
    coords = [dataset.coords(i) for i in range(n)] if getattr(dataset, "has_coords", False) else None
    return Predictions(
        names=list(dataset.names),
        labels=labels,
        probabilities=probs,
        weights=weights if has_w else None,
        instance_probabilities=inst_probs if has_ip else None,
        instance_labels=inst_labels,
        bag_sizes=np.asarray(dataset.bag_sizes),
        class_names=list(class_names) if class_names else None,
        label_values=trained.label_values,
        threshold=trained.decision_threshold if trained.num_classes == 2 else None,
        coords=coords,
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
    """One row per bag: ``bag, n_instances, label, predicted, [predicted_name], prob_0 .. prob_{K-1}``.

    ``label`` and ``predicted`` are in the user's label values (the training data's); ``label`` is empty for
    unlabeled bags.
    """
    K = pred.num_classes
    header = ["bag", "n_instances", "label", "predicted"]
    if pred.class_names:
        header.append("predicted_name")
    header += [f"prob_{pred.value_of(k)}" for k in range(K)]
    rows = []
    for i, name in enumerate(pred.names):
        label = "" if pred.labels is None or pred.labels[i] < 0 else pred.value_of(int(pred.labels[i]))
        k = int(pred.predicted[i])
        row: list[Any] = [name, int(pred.bag_sizes[i]), label, pred.value_of(k)]
        if pred.class_names:
            row.append(pred.class_names[k])
        row += [_num(v) for v in pred.probabilities[i]]
        rows.append(row)
    path = Path(path)
    atomic_write_text(path, _csv_text(header, rows))
    return path


def write_instance_csv(pred: Predictions, path: str | Path) -> Path:
    """One row per instance: ``bag, instance, [x, y], weight, instance_label, [predicted, prob_..]`` (where known).

    ``x, y`` are the patch coordinates of whole-slide feature folders (level-0 pixels of the patch's corner), so
    the weights can be drawn on the slide.
    """
    K = pred.num_classes
    header = ["bag", "instance"] + (["x", "y"] if pred.coords is not None else []) + ["weight", "instance_label"]
    if pred.instance_probabilities is not None:
        header += ["predicted"] + [f"prob_{pred.value_of(k)}" for k in range(K)]
    rows = []
    for i, name in enumerate(pred.names):
        il = pred.instance_labels[i]
        xy = None if pred.coords is None else pred.coords[i]
        for t in range(int(pred.bag_sizes[i])):
            row: list[Any] = [name, t]
            if pred.coords is not None:
                row += ["", ""] if xy is None else [int(xy[t, 0]), int(xy[t, 1])]
            row.append("" if pred.weights is None else _num(pred.weights[i][t]))
            row.append(int(il[t]) if t < len(il) and il[t] >= 0 else "")
            if pred.instance_probabilities is not None:
                ip = pred.instance_probabilities[i][t]
                row += [pred.value_of(int(np.argmax(ip)))] + [_num(v) for v in ip]
            rows.append(row)
    path = Path(path)
    atomic_write_text(path, _csv_text(header, rows))
    return path


def write_predictions(pred: Predictions, out: str | Path, record: dict[str, Any]) -> dict[str, Path]:
    """``bags.csv``, ``instances.csv`` and ``predictions.json`` (``record`` + counts) in ``out``, as one unit.

    The files are written into a temporary folder beside ``out`` and renamed into place once all are complete;
    an existing ``out`` (earlier predictions) is replaced only then. ``out`` must be absent, empty, or hold
    earlier predictions (a ``predictions.json``): other files are never deleted.

    Raises:
        ValueError: ``out`` is a file, or a folder holding other things than earlier predictions.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "predictions.json").exists())):
        raise ValueError(
            f"--out {str(out)!r} is a file or a folder holding other files; predictions go into a new or empty folder "
            "(or one holding earlier predictions, which are replaced)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        write_bag_csv(pred, tmp / "bags.csv")
        write_instance_csv(pred, tmp / "instances.csv")
        counts = {"bags": len(pred), "instances": int(np.asarray(pred.bag_sizes).sum())}
        atomic_write_text(tmp / "predictions.json", json.dumps({**record, **counts}, indent=2, default=str) + "\n")
        os.chmod(tmp, folder_mode())  # mkdtemp made it 0700: the user's umask decides
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: out / name for name in ("bags.csv", "instances.csv", "predictions.json")}
