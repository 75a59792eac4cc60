"""The bags a trained model is evaluated, predicted or explained on: a name or path resolved into a dataset.

For a generated dataset the default is the test bags of the run that wrote the checkpoint; for a table or
folder with a split column, one split of it; the bags are checked against the model and standardised with the
run's training statistics (:func:`prepare_data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lossattn.datasets.catalog import resolve_dataset_name
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
]


@dataclass
class ResolvedData:
    """Bags to predict on, with how they were obtained."""

    dataset: Any
    description: str
    standardized: bool = False  # already standardised with the run's training statistics


def _run_split(trained: TrainedModel, root: str | None) -> ResolvedData | None:
    """The exact test bags of the run that wrote the checkpoint (from the run folder's config.yaml)."""
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
