"""The bags a trained model is evaluated, predicted or explained on: a name or path resolved into a dataset.

For a generated dataset the default is the test bags of the run that wrote the checkpoint; for a table or
folder with a split column, one split of it; the bags are checked against the model and standardised with the
run's training statistics (:func:`prepare_data`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossattn.datasets.catalog import BENCHMARKS, resolve_dataset_name
from lossattn.datasets.splits import split_indices
from lossattn.inference.checkpoint import TrainedModel
from lossattn.protocols.config import DataConfig, ExperimentConfig, config_from_dict
from lossattn.protocols.data import is_generator, load_dataset, make_generated
from lossattn.protocols.runs import prepare_split

__all__ = [
    "ResolvedData",
    "check_compatible",
    "prepare_data",
    "resolve_data",
    "resolve_dataset_name",
    "SPLITS",
]


@dataclass
class ResolvedData:
    """Bags to predict on, with how they were obtained."""

    dataset: Any
    description: str
    standardized: bool = False  # already standardised with the run's training statistics


def _run_split(trained: TrainedModel, root: str | None, asked_for_data: bool) -> ResolvedData | None:
    """The exact held-out (test) bags of the run that wrote the checkpoint (from the run folder's config.yaml).

    None when there is no run config, or when the run trained on every bag and the data was named (then every
    bag is used, and said to be the run's training bags).

    Raises:
        ValueError: the run trained on every bag (protocol kind ``all``) and no data was named.
    """
    rc = trained.run_config
    if not rc or "run" not in rc:
        return None
    run = rc["run"]
    data = {k: v for k, v in rc.items() if k in ("name", "data", "protocol", "train", "methods", "metrics", "notes")}
    cfg = config_from_dict(ExperimentConfig, data)
    if root is not None:
        cfg.data.root = root
    if cfg.protocol.kind == "all":
        if asked_for_data:
            return None
        raise ValueError(
            f"the run of {trained.path} trained on every bag of {cfg.data.name} (protocol 'all'): it held no bags "
            "out; give the data to predict on (a file, a folder or a dataset name)"
        )
    _, _, test = prepare_split(cfg, int(run["repeat"]), run.get("fold"))
    where = f"repeat {run['repeat']}" + ("" if run.get("fold") is None else f", fold {run['fold']}")
    return ResolvedData(test, f"the {len(test)} held-out (test) bags of the run ({cfg.data.name}, {where})", True)


SPLITS = ("train", "test", "all")


def resolve_data(
    spec: str | None,
    trained: TrainedModel | None = None,
    *,
    root: str | None = None,
    split: str | None = None,
    seed: int | None = None,
    num_bags: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> ResolvedData:
    """Turn a dataset name or path into bags; the description says which bags they are.

    Args:
        spec: Dataset name or path; None = the checkpoint's own data.
        trained: The checkpoint (supplies the run's data settings, seed, column options and label values).
        root: Data root (``--data-dir``).
        split: None (default): the run's held-out (test) bags when the data is the checkpoint's own data (a
            generator: its test bags), else every bag. ``"train"`` / ``"test"``: for generators those bags; for a
            table or folder the bags of that value of its split column (an error if it has none). ``"all"``:
            every bag.
        seed: Generator seed (default: the one of the run's test bags, so the run's test bags come back).
        num_bags: Number of bags to generate (default: the run's setting).
        kwargs: Loader or generator arguments (e.g. the column options of a table); for a table or folder the
            checkpoint's own loader arguments are the defaults, and its label values fix the class mapping.

    Raises:
        ValueError: an unknown split, a split column that does not exist, or held-out bags that do not exist.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (or left out), got {split!r}")
    dc = dict((trained.data_config if trained else None) or {})
    name = resolve_dataset_name(spec) if spec is not None else dc.get("name")
    if name is None:
        raise ValueError("no data given and the checkpoint does not say what it was trained on")
    own = _same_data(dc.get("name"), name)
    if own and split in (None, "test") and seed is None and num_bags is None and not kwargs and trained is not None:
        found = _run_split(trained, root, asked_for_data=spec is not None)
        if found is not None:
            return found
    cfg = config_from_dict(DataConfig, dc) if own or _same_kind(dc.get("name"), name) else DataConfig(name=name)
    cfg.name = name
    if root is not None:
        cfg.root = root
    cfg.kwargs = {**cfg.kwargs, **(kwargs or {})}
    if is_generator(name):
        return _generated(cfg, trained, own, split or "test", seed, num_bags)
    if trained is not None and trained.label_values is not None and "label_values" not in cfg.kwargs:
        cfg.kwargs["label_values"] = list(trained.label_values)
    ds, read_as = _load_for(trained, cfg, kwargs or {})
    if split in ("train", "test"):
        ds = ds.subset(split_indices(ds, split))
        return ResolvedData(ds, f"the {len(ds)} bags of {name} whose split is {split!r}")
    note = f" (unlabeled{'; ' + read_as if read_as else ''})" if not ds.has_labels else ""
    if own and _trained_on_every_bag(trained):
        note += " — the run's own training bags (it trained on every bag): figures on them are optimistic"
    return ResolvedData(ds, f"all {len(ds)} bags of {name}{note}")


def _load_for(trained: TrainedModel | None, cfg: DataConfig, asked: dict[str, Any]) -> tuple[Any, str]:
    """The bags of ``cfg``; a headerless table of new bags that has no label column is recognised by its width.

    Without a header a table is read as (label, bag id, features...). New bags to predict often come as
    (bag id, features...): one column fewer than the training table. When that reading fails and the user named
    no column, the table is read again as bag id + features, unlabeled, and kept if its feature count is the
    checkpoint's.
    """
    try:
        return load_dataset(cfg), ""
    except ValueError as first:
        retry = (
            trained is not None
            and not any(k in asked for k in ("label_column", "bag_column", "header", "feature_columns"))
            and Path(str(cfg.name)).suffix.lower() in (".csv", ".tsv", ".gz")
        )
        if not retry:
            raise
        alt = copy.deepcopy(cfg)
        alt.kwargs = {**alt.kwargs, "label_column": None, "bag_column": 0}
        try:
            ds = load_dataset(alt)
        except ValueError:
            raise first from None
        width = trained.model_kwargs.get("in_features") or (trained.instance_shape or [None])[-1]
        headerless = isinstance((ds.meta.get("columns") or {}).get("bag"), int)  # positions, not names
        if not headerless or width is None or ds.num_features != int(width):
            raise first from None
        return ds, "read as bag id + features with no label column, one column fewer than the training table"


def _trained_on_every_bag(trained: TrainedModel | None) -> bool:
    rc = (trained.run_config or {}) if trained is not None else {}
    return (rc.get("protocol") or {}).get("kind") == "all"


def _same_data(a: str | None, b: str) -> bool:
    if not a:
        return False
    try:
        return resolve_dataset_name(a) == b
    except ValueError:  # trained on a file that is not here any more
        return False


def _kind(name: str) -> str:
    """``table`` / ``folder`` for the user's own data, else ``named`` (a benchmark or a generator)."""
    if is_generator(name) or name in BENCHMARKS:
        return "named"
    path = Path(name)
    if path.exists():
        return "folder" if path.is_dir() else "table"
    return "table" if path.suffix else "folder"  # the training file may not be here any more


def _same_kind(a: str | None, b: str) -> bool:
    """Both the user's files of one kind (two tables, or two feature folders): their loader options carry over."""
    return bool(a) and _kind(a) == _kind(b) != "named"


def _generated(cfg: DataConfig, trained, own: bool, split: str, seed: int | None, num_bags: int | None):
    if split == "all":
        raise ValueError("split 'all' is not defined for generated bags; use train or test")
    if num_bags is not None:
        cfg.kwargs = {**cfg.kwargs, "num_bags": int(num_bags)}
        cfg.test_kwargs = {k: v for k, v in cfg.test_kwargs.items() if k != "num_bags"}
    if "num_bags" not in cfg.kwargs and "num_bags" not in (cfg.test_kwargs if split == "test" else {}):
        cfg.kwargs = {**cfg.kwargs, "num_bags": 100}
    if seed is None:
        base = int(trained.seed) if (own and trained is not None and trained.seed is not None) else 0
        seed = base + 500_000 if split == "test" else base
    ds = make_generated(cfg, split, int(seed))
    return ResolvedData(ds, f"{len(ds)} generated {split} bags of {cfg.name} (seed {seed})")


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
