"""Predict with a trained checkpoint: rebuild the model, resolve the data, per-bag and per-instance tables.

A ``best.pt`` written by :func:`lossattn.train.execute_run` holds everything needed: ``model_name``,
``model_kwargs``, the ``model`` state, the fitted ``standardizer`` state (or None), the ``data_config``,
``num_classes`` and ``instance_shape``. :func:`load_trained` rebuilds the model from it (a run folder
holding ``best.pt`` works too), :func:`resolve_data` turns a dataset name or path into bags (for a
generator, the test bags of the run that wrote the checkpoint by default) and :func:`predict_bags` returns
the predictions, which :func:`write_bag_csv` / :func:`write_instance_csv` write out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lossattn import datasets as D
from lossattn.registry import create_model
from lossattn.train.config import DataConfig, ExperimentConfig, config_from_dict
from lossattn.train.data import BENCHMARKS, GENERATORS, is_generator, load_dataset, make_generated, split_indices
from lossattn.train.io import atomic_write_text, load_checkpoint
from lossattn.train.trainer import iterate_batches, scatter_batch_outputs

__all__ = [
    "TrainedModel",
    "Predictions",
    "ResolvedData",
    "load_trained",
    "resolve_dataset_name",
    "resolve_data",
    "check_compatible",
    "prepare_data",
    "predict_bags",
    "write_bag_csv",
    "write_instance_csv",
    "DATASET_ALIASES",
]

# user spellings -> the names lossattn.train.data accepts
DATASET_ALIASES = {
    "mnist": "mnist-bags",
    "mnist-multi": "mnist-bags-multi",
    "mnist-bags-multiclass": "mnist-bags-multi",
    "digits": "digits-bags",
    "digits-multi": "digits-bags-multi",
    "digits-bags-multiclass": "digits-bags-multi",
    "cifar10": "cifar10-bags",
    "cifar-10": "cifar10-bags",
    "cifar-10-bags": "cifar10-bags",
}


def resolve_dataset_name(name: str) -> str:
    """The canonical dataset name for a user's spelling, or the path of an existing file/folder.

    Accepts the benchmark names (``musk1`` ... ``elephant``), the generator names (``mnist-bags``,
    ``mnist-bags-multi``, ``cifar10-bags``, ``digits-bags``, ``digits-bags-multi``; case and ``_``/``-``
    do not matter; ``mnist``/``digits``/``cifar10`` are aliases) and paths to the user's own feature
    folder (with a ``manifest.csv``) or table file.

    Raises:
        ValueError: Neither a known name nor an existing path.
    """
    text = str(name).strip()
    if not text:
        raise ValueError("empty dataset name")
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())  # absolute: saved configs and checkpoints work from any folder
    key = text.lower().replace("_", "-")
    key = DATASET_ALIASES.get(key, key)
    if key in BENCHMARKS or key in GENERATORS:
        return key
    looks_like_path = any(sep in text for sep in ("/", "\\")) or Path(text).suffix in (".csv", ".gz", ".parquet", ".pq")
    if looks_like_path:
        raise ValueError(f"no file or folder {text!r} exists (expected a feature folder or a table file)")
    raise ValueError(
        f"unknown dataset {text!r}; valid names: {', '.join([*BENCHMARKS, *GENERATORS])}, "
        "or the path of your own feature folder / table file"
    )


# --------------------------------------------------------------------------- checkpoints


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what is needed to feed it data."""

    model: torch.nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    path: Path
    standardizer: D.Standardizer | None = None
    data_config: dict[str, Any] | None = None
    num_classes: int = 2
    instance_shape: tuple[int, ...] | None = None
    method: str | None = None
    seed: int | None = None
    epoch: int | None = None
    run_config: dict[str, Any] | None = None  # the run folder's config.yaml, when present
    extra: dict[str, Any] = field(default_factory=dict)  # image checkpoints: normalization, class_names, crop

    @property
    def has_weights(self) -> bool:
        # image models with mean/max pooling have no weights (explain draws their class activation map)
        return self.model_name not in _NO_WEIGHTS and getattr(self.model, "pooling", None) not in ("mean", "max")

    def describe(self) -> str:
        shape = "?" if self.instance_shape is None else "×".join(str(s) for s in self.instance_shape)
        data = (self.data_config or {}).get("name", "?")
        label = self.method or self.model_name
        if label != self.model_name:
            label += f" ({self.model_name})"
        epoch = "" if self.epoch is None else f", selected epoch {int(self.epoch) + 1}"
        return f"{label}, {self.num_classes} classes, instances {shape}, trained on {data}{epoch}"


_NO_WEIGHTS = {"instance_max", "instance_mean", "embedding_max", "embedding_mean", "minet_instance",
               "minet_embedding", "minet_ds", "minet_rc"}  # fmt: skip


def _find_checkpoint(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("best.pt", "checkpoint.pt"):
            if (p / name).is_file():
                return p / name
        found = sorted(p.glob("**/best.pt"))
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(str(f) for f in found[:4]) + (" ..." if len(found) > 4 else "")
            raise ValueError(f"{p} holds {len(found)} runs; name one best.pt: {listed}")
        raise ValueError(f"no best.pt in {p} (give the run folder of a finished training run or its best.pt)")
    if not p.exists():
        raise ValueError(f"checkpoint {p} does not exist")
    return p


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a ``best.pt`` (or a run folder holding one, or a resume ``checkpoint.pt``) and rebuild its model.

    Raises:
        ValueError: Missing/corrupt file, not a lossattn checkpoint, or weights that do not fit the model
            named in it.
    """
    ckpt_path = _find_checkpoint(path)
    state = load_checkpoint(ckpt_path, map_location="cpu")
    if not isinstance(state, dict) or "model" not in state or not state.get("model_name"):
        raise ValueError(f"{ckpt_path} is not a lossattn training checkpoint (no model name / model state)")
    name = state["model_name"]
    kwargs = dict(state.get("model_kwargs") or {})
    try:
        model = create_model(name, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{ckpt_path}: cannot rebuild model {name!r} from its stored arguments: {exc}") from exc
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{ckpt_path}: the stored weights do not fit model {name!r} ({first})") from exc
    model.to(device).eval()
    scaler = None
    if state.get("standardizer") is not None:
        scaler = D.Standardizer().load_state_dict(state["standardizer"])
    shape = state.get("instance_shape") or state.get("image_shape")
    run_config = None
    cfg_file = ckpt_path.parent / "config.yaml"
    if cfg_file.is_file():
        try:
            run_config = yaml.safe_load(cfg_file.read_text())
        except yaml.YAMLError:
            run_config = None
    num_classes = state.get("num_classes") or getattr(model, "num_classes", 2)
    return TrainedModel(
        model=model,
        model_name=name,
        model_kwargs=kwargs,
        path=ckpt_path,
        standardizer=scaler,
        data_config=state.get("data_config"),
        num_classes=int(num_classes),
        instance_shape=None if shape is None else tuple(int(s) for s in shape),
        method=state.get("method"),
        seed=state.get("seed"),
        epoch=state.get("epoch"),
        run_config=run_config if isinstance(run_config, dict) else None,
        extra={k: state[k] for k in _IMAGE_KEYS if state.get(k) is not None},
    )


#: what an image run's ``best.pt`` adds (see :func:`lossattn.train.images.train_image_classifier`)
_IMAGE_KEYS = ("input_kind", "normalization", "class_names", "crop")


# --------------------------------------------------------------------------- data


@dataclass
class ResolvedData:
    """Bags to predict on, with how they were obtained."""

    dataset: Any
    description: str
    standardized: bool = False  # already standardised with the run's training statistics


def _run_split(trained: TrainedModel, root: str | None) -> ResolvedData | None:
    """The exact test bags of the run that wrote the checkpoint (from the run folder's config.yaml)."""
    from lossattn.train.protocols import prepare_split

    rc = trained.run_config
    if not rc or "run" not in rc:
        return None
    run = rc["run"]
    data = {k: v for k, v in rc.items() if k not in ("run", "train_resolved")}
    cfg = config_from_dict(ExperimentConfig, data)
    if root is not None:
        cfg.data.root = root
    _, _, test = prepare_split(cfg, int(run["repeat"]), run.get("fold"))
    where = f"repeat {run['repeat']}" + ("" if run.get("fold") is None else f", fold {run['fold']}")
    return ResolvedData(test, f"the test bags of the run ({cfg.data.name}, {where})", standardized=True)


def resolve_data(
    spec: str | None,
    trained: TrainedModel | None = None,
    *,
    root: str | None = None,
    split: str = "test",
    seed: int | None = None,
    num_bags: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> ResolvedData:
    """Turn a dataset name or path into bags.

    Args:
        spec: Dataset name or path; None = the checkpoint's own data (the run's test bags when the run
            folder's ``config.yaml`` is there, else the generator's test bags / the data's test split / all
            bags).
        trained: The checkpoint (supplies generator settings and the run seed).
        root: Data root (``--data-dir``).
        split: For generators: ``"train"`` or ``"test"`` bags; for a table/folder with a split column:
            that split (``"all"``: every bag).
        seed: Generator seed (default: the one of the run's test bags, so the run's test bags come back).
        num_bags: Number of bags to generate (default: the run's setting).
        kwargs: Extra loader/generator keyword arguments.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    dc = dict((trained.data_config if trained else None) or {})
    if spec is None:
        if trained is None or not dc.get("name"):
            raise ValueError("no data given and the checkpoint does not say what it was trained on")
        if split == "test" and seed is None and num_bags is None and not kwargs:
            found = _run_split(trained, root)
            if found is not None:
                return found
        name = dc["name"]
    else:
        name = resolve_dataset_name(spec)
    same = False  # the checkpoint's own dataset: reuse its loader/generator settings
    if dc.get("name"):
        try:
            same = resolve_dataset_name(dc["name"]) == name
        except ValueError:  # trained on a file that is not here any more
            same = False
    if same:
        cfg = config_from_dict(DataConfig, dc)
    else:
        cfg = DataConfig(name=name)
    cfg.name = name
    if root is not None:
        cfg.root = root
    if kwargs:
        cfg.kwargs = {**cfg.kwargs, **kwargs}
    if is_generator(name):
        if split == "all":
            raise ValueError("split 'all' is not defined for generated bags; use train or test")
        if num_bags is not None:
            cfg.kwargs = {**cfg.kwargs, "num_bags": int(num_bags)}
            cfg.test_kwargs = {k: v for k, v in cfg.test_kwargs.items() if k != "num_bags"}
        if "num_bags" not in cfg.kwargs and "num_bags" not in (cfg.test_kwargs if split == "test" else {}):
            cfg.kwargs = {**cfg.kwargs, "num_bags": 100}
        if seed is None:
            base = int(trained.seed) if (same and trained is not None and trained.seed is not None) else 0
            seed = base + 500_000 if split == "test" else base
        ds = make_generated(cfg, split, int(seed))
        return ResolvedData(ds, f"{len(ds)} generated {split} bags of {name} (seed {seed})")
    ds = load_dataset(cfg)
    if split != "all" and getattr(ds, "splits", None) is not None:
        ds = ds.subset(split_indices(ds, split))
        return ResolvedData(ds, f"the {len(ds)} {split!r} bags of {name}")
    return ResolvedData(ds, f"all {len(ds)} bags of {name}")


def check_compatible(trained: TrainedModel, dataset) -> None:
    """Raise a clear ValueError when the checkpoint's model cannot read these bags."""
    shape = tuple(dataset.instance_shape)
    label = trained.method or trained.model_name
    trained_on = (trained.data_config or {}).get("name")
    where = f" (trained on {trained_on})" if trained_on else ""
    if trained.instance_shape is not None and tuple(trained.instance_shape) != shape:
        raise ValueError(
            f"checkpoint model {label!r}{where} expects instances of shape {_shape(trained.instance_shape)}, "
            f"but {getattr(dataset, 'name', 'the data')!r} has instances of shape {_shape(shape)}"
        )
    in_features = trained.model_kwargs.get("in_features")
    if trained.instance_shape is None and in_features is not None and int(in_features) != dataset.num_features:
        raise ValueError(
            f"checkpoint model {label!r}{where} expects {in_features} features per instance, "
            f"but {getattr(dataset, 'name', 'the data')!r} has {dataset.num_features}"
        )


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def prepare_data(trained: TrainedModel, data: ResolvedData):
    """Check the bags fit the model and standardise them with the checkpoint's training statistics."""
    check_compatible(trained, data.dataset)
    ds = data.dataset
    if trained.standardizer is not None and not data.standardized:
        ds = trained.standardizer.transform(ds)
    return ds


# --------------------------------------------------------------------------- predictions


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
    model = trained.model.to(device).eval()
    order = np.argsort(dataset.bag_sizes, kind="stable")
    n = len(dataset)
    probs = np.zeros((n, trained.num_classes))
    weights: list[Any] = [None] * n
    inst_probs: list[Any] = [None] * n
    inst_labels: list[np.ndarray] = [np.zeros(0, np.int64)] * n
    has_w = has_ip = False
    batches = iterate_batches(dataset, order, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=(n + batch_size - 1) // batch_size, desc="predict", unit="batch", leave=False)
    for batch in batches:
        batch = batch.to(device)
        out = model(batch.x, batch.mask)
        got_w, got_ip = scatter_batch_outputs(out, batch, probs, inst_labels, weights, inst_probs)
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
