"""Listing and describing the known datasets (backs ``lossattn data list|info``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .catalog import CATALOG, get_spec
from .sources import data_root, find_data_file

__all__ = ["DatasetInfo", "FileInfo", "list_datasets", "dataset_info"]


@dataclass(frozen=True)
class FileInfo:
    """One accepted file of a dataset.

    Attributes:
        path: Where it is expected (absolute, under the data root).
        present: Whether it exists.
        url: Canonical download URL, if this file is what ``fetch`` downloads.
        checksum: Expected checksum of the download (``"sha256:..."`` / ``"md5:..."``), if any.
    """

    path: str
    present: bool
    url: str | None = None
    checksum: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Description of one dataset (see :func:`dataset_info`).

    Attributes:
        name: Canonical name.
        kind: ``"benchmark"``, ``"generated"``, ``"embedded"`` or ``"images"``.
        description: What the bags are.
        source: Provenance of the files.
        counts: Known sizes (bags, instances, features, images ...).
        files: Accepted files, in order of preference, with presence and download URL.
        present: Whether the dataset can be loaded from the data root now (embedded: always).
        root: The data root inspected.
        fetchable: Whether :func:`~lossattn.datasets.fetch` can download it.
        usage: How to load it from Python.
    """

    name: str
    kind: str
    description: str
    source: str
    counts: dict[str, int]
    files: list[FileInfo] = field(default_factory=list)
    present: bool = False
    root: str = ""
    fetchable: bool = False
    usage: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)


_USAGE = {
    "benchmark": "lossattn.datasets.load({name!r})",
    "mnist-bags": "lossattn.datasets.make_mnist_bags('train', num_bags=100)",
    "mnist-bags-multi": "lossattn.datasets.make_mnist_bags('train', num_bags=100, target_digits=(3, 5, 9))",
    "cifar10-bags": "lossattn.datasets.make_cifar10_bags('train', num_bags=500)",
    "digits-bags": "lossattn.datasets.make_digits_bags('train', num_bags=100)",
    "digits-bags-multi": "lossattn.datasets.make_digits_bags('train', num_bags=100, target_digits=(3, 5, 9))",
    "cifar10-images": "lossattn.datasets.load_cifar10('train')",
    "tinyimagenet-images": "lossattn.datasets.load_tinyimagenet('train')",
}


def list_datasets() -> list[str]:
    """Names of all known datasets: the five benchmarks, the bag generators (binary and ``-multi``
    multi-class), then the image classification sets (``cifar10-images``, ``tinyimagenet-images``)."""
    return list(CATALOG)


def dataset_info(name: str, root: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """Describes a dataset and whether its files are present under the data root.

    Args:
        name: Dataset name or alias.
        root: Data root (default: :func:`~lossattn.datasets.data_root`).

    Returns:
        A :class:`DatasetInfo`.

    Raises:
        UnknownDatasetError: Unknown name (a ``ValueError``, and a ``KeyError`` for older callers; the message
            lists every valid name).
    """
    spec = get_spec(name)
    base = data_root(root)
    by_target = {d.target: d for d in spec.downloads}
    files: list[FileInfo] = []
    for group in spec.requirements:
        for rel in group:
            d = by_target.get(rel)
            files.append(
                FileInfo(
                    path=str(base / rel),
                    present=(base / rel).is_file(),
                    url=d.url if d else None,
                    checksum=d.checksum if d else None,
                )
            )
    for d in spec.downloads:  # downloads that are not themselves a required file (e.g. an extracted folder)
        if not any(d.target in g for g in spec.requirements):
            files.append(
                FileInfo(path=str(base / d.target), present=(base / d.target).exists(), url=d.url, checksum=d.checksum)
            )
    present = all(find_data_file(base, g) is not None for g in spec.requirements)
    usage = _USAGE["benchmark"].format(name=spec.name) if spec.kind == "benchmark" else _USAGE[spec.name]
    return DatasetInfo(
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        source=spec.source,
        counts=dict(spec.counts),
        files=files,
        present=present,
        root=str(Path(base)),
        fetchable=bool(spec.downloads),
        usage=usage,
    )
