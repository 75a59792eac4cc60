"""Resolve a :class:`DataConfig` into bag datasets: benchmarks, generators or the user's own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossattn import datasets as D
from lossattn.datasets.catalog import BENCHMARKS
from lossattn.protocols.config import DataConfig

__all__ = ["GENERATORS", "is_generator", "load_dataset", "make_generated", "dataset_names"]

# generator name -> (function name in lossattn.datasets, default kwargs)
GENERATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "mnist-bags": ("make_mnist_bags", {"target_digits": (9,)}),
    "mnist-bags-multi": ("make_mnist_bags", {"target_digits": (3, 5, 9)}),
    "cifar10-bags": ("make_cifar10_bags", {"target_classes": (3, 5, 9)}),
    "digits-bags": ("make_digits_bags", {"target_digits": (9,)}),
    "digits-bags-multi": ("make_digits_bags", {"target_digits": (3, 5, 9)}),
}


def dataset_names() -> list[str]:
    """Every name a :class:`DataConfig` accepts besides a path."""
    return [*BENCHMARKS, *GENERATORS]


def is_generator(name: str) -> bool:
    return name in GENERATORS


def make_generated(cfg: DataConfig, split: str, seed: int) -> D.BagDataset:
    """Generate the ``split`` ("train"/"test") bags of a generator dataset with ``seed``."""
    func_name, defaults = GENERATORS[cfg.name]
    kwargs = {**defaults, **cfg.kwargs}
    if split == "test":
        kwargs.update(cfg.test_kwargs)
    if func_name != "make_digits_bags" and cfg.root is not None:
        kwargs["root"] = cfg.root
    for key in ("target_digits", "target_classes"):
        if key in kwargs and isinstance(kwargs[key], list):
            kwargs[key] = tuple(kwargs[key])
    return getattr(D, func_name)(split=split, seed=seed, **kwargs)


# loader arguments that only one kind of source takes, with the command-line option that sets each
_TABLE_ONLY = {"header": "--header/--no-header", "feature_columns": "--feature-columns"}
_FOLDER_ONLY = {
    "manifest": "--manifest",
    "file_column": "data.kwargs.file_column",
    "feature_key": "data.kwargs.feature_key",
}


def _refuse_options(kwargs: dict, only_other: dict[str, str], why: str) -> None:
    given = [option for key, option in only_other.items() if key in kwargs]
    if given:
        raise ValueError(f"{', '.join(given)} does not apply here: {why}")


def load_dataset(cfg: DataConfig) -> D.BagDataset:
    """Load a non-generated dataset: a benchmark name, a feature folder or a table file."""
    if cfg.name in BENCHMARKS:
        return D.load(cfg.name, root=cfg.root)
    if cfg.name in GENERATORS:
        raise ValueError(f"{cfg.name!r} is a generator; use make_generated(cfg, split, seed)")
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        _refuse_options(cfg.kwargs, _TABLE_ONLY, f"{path} is a feature folder (its features are in the bag files)")
        return D.load_feature_folder(path, **cfg.kwargs)
    if path.is_file():
        _refuse_options(cfg.kwargs, _FOLDER_ONLY, f"{path} is a table (one file), not a feature folder")
        return D.load_table(path, **cfg.kwargs)
    raise ValueError(
        f"unknown dataset {cfg.name!r}: not a benchmark ({', '.join(BENCHMARKS)}), not a generator "
        f"({', '.join(GENERATORS)}) and no file or folder of that name exists"
    )
