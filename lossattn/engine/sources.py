"""Data sources: how a dataset becomes the engine's batches ``(x, mask, y, index)``.

The loop never looks at datasets directly. A source turns one into batches for training (a seeded order per
epoch) and for evaluation (dataset order, bags of similar size together), and states what the loop needs to
know about the data (instance counts for the temporal ensemble, whether bags were validated when loaded).

* :class:`BagSource` — any bag dataset (:class:`~lossattn.datasets.BaseBagDataset`): bags padded to the
  batch's largest one with a mask. Epoch ``m`` of a run with seed ``s`` visits the bags in the order
  ``np.random.default_rng([s, m]).permutation(n)``, so the order needs no state (exact resume for free), and
  a batch can be cut into per-rank shards (:meth:`BagSource.index_batches` + :meth:`BagSource.collate`).
* :class:`ImageSource` — an :class:`~lossattn.datasets.images.ImageArrayDataset`: minibatches of whole images
  through a ``torch.utils.data.DataLoader`` (augmentation in its workers), whose shuffling generator is part
  of the resume state; the mask is None (every feature-map position is an instance).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn.datasets.bags import BagDataset
from lossattn.datasets.folder import FeatureFolderDataset
from lossattn.datasets.images import ImageArrayDataset
from lossattn.datasets.multilabel import is_multilabel, multilabel_targets

__all__ = ["Batch", "BagSource", "ImageSource", "make_source"]


@dataclass
class Batch:
    """One batch as the loop sees it.

    Attributes:
        x: ``(B, N, *instance_shape)`` bags (zero padding) or ``(B, C, H, W)`` images.
        mask: ``(B, N)`` bool, True = real instance; None when every instance is real (images).
        labels: ``(B,)`` long bag classes.
        index: ``(B,)`` long positions of the bags in their dataset (address of the temporal ensemble).
        targets: ``(B, L)`` float multi-hot label sets (multi-label data), else None.
        instance_labels: ``(B, N)`` long, ``-1`` = unknown or padding; None when the data has none.
        names: bag names (None for images).
    """

    x: Tensor
    mask: Tensor | None
    labels: Tensor
    index: Tensor
    targets: Tensor | None = None
    instance_labels: Tensor | None = None
    names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            move(self.x), move(self.mask), move(self.labels), move(self.index),  # type: ignore[arg-type]
            move(self.targets), move(self.instance_labels), self.names,
        )  # fmt: skip


class BagSource:
    """Batches of a bag dataset: padded to the largest bag of the batch, with the mask.

    Args:
        dataset: a :class:`~lossattn.datasets.BaseBagDataset`.
    """

    unit = "bags"  # what one item is called in messages

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.sizes = np.asarray(dataset.bag_sizes, dtype=np.int64)
        self.labels = np.asarray(dataset.labels, dtype=np.int64)
        self.targets = torch.from_numpy(multilabel_targets(dataset)).float() if is_multilabel(dataset) else None
        # an in-memory BagDataset checked every value when it was built, a feature folder checks each bag as it
        # reads it: the models need not check again (a device sync per step)
        self.validated = isinstance(dataset, (BagDataset, FeatureFolderDataset))

    def __len__(self) -> int:
        return len(self.dataset)

    def instance_counts(self, model: torch.nn.Module) -> np.ndarray:
        """Instances per bag, in dataset order (the temporal ensemble's layout)."""
        return self.sizes

    def state_dict(self) -> dict[str, Any]:
        return {}  # the epoch order is a pure function of (seed, epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    # ------------------------------------------------------------------ training
    def index_batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[np.ndarray]:
        """The bag positions of each training batch of ``epoch``, in order."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[Batch]:
        for idx in self.index_batches(epoch, seed, batch_size):
            yield self.collate(idx)

    def collate(self, indices: np.ndarray) -> Batch:
        """The bags at ``indices`` as one batch, padded to the largest with zeros."""
        bags = [self.dataset[int(i)] for i in indices]
        shape = tuple(bags[0].x.shape[1:])
        B, N = len(bags), max(int(b.x.shape[0]) for b in bags)
        if B == 1:  # nothing to pad: the bag's own tensor, no copy
            x = bags[0].x.unsqueeze(0)
            mask = torch.ones((1, N), dtype=torch.bool)
            inst = bags[0].instance_labels.unsqueeze(0)
        else:
            x = torch.zeros((B, N, *shape), dtype=torch.float32)
            mask = torch.zeros((B, N), dtype=torch.bool)
            inst = torch.full((B, N), -1, dtype=torch.long)
            for j, b in enumerate(bags):
                n = int(b.x.shape[0])
                x[j, :n] = b.x
                mask[j, :n] = True
                inst[j, :n] = b.instance_labels
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return Batch(
            x=x,
            mask=mask,
            labels=torch.as_tensor(self.labels[np.asarray(indices, dtype=np.int64)]),
            index=index,
            targets=None if self.targets is None else self.targets[index],
            instance_labels=inst,
            names=[b.name for b in bags],
        )

    # ------------------------------------------------------------------ evaluation
    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every bag once, in order of size (little padding); ``batch.index`` says where each bag belongs."""
        order = np.argsort(self.sizes, kind="stable")
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start : start + batch_size])


class ImageSource:
    """Minibatches of images through a DataLoader (augmentation by the dataset's transform).

    Args:
        dataset: an :class:`~lossattn.datasets.images.ImageArrayDataset`.
        num_workers: DataLoader worker processes.
    """

    validated = True  # images are decoded uint8 arrays: nothing to check per batch
    unit = "images"

    def __init__(self, dataset: ImageArrayDataset, num_workers: int = 0) -> None:
        self.dataset = dataset
        self.labels = np.asarray(dataset.labels, dtype=np.int64)
        self.targets = None
        self.num_workers = int(num_workers)
        self._loader: torch.utils.data.DataLoader | None = None
        self._pending_state: Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def instance_counts(self, model: torch.nn.Module) -> np.ndarray:
        """Every image has the same number of instances: its feature-map positions under ``model``."""
        per_image = model.num_instances(tuple(self.dataset.raw(0).shape))
        return np.full(len(self), per_image, dtype=np.int64)

    def _train_loader(self, seed: int, batch_size: int, pin: bool) -> torch.utils.data.DataLoader:
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
                num_workers=self.num_workers,
                pin_memory=pin,
                persistent_workers=self.num_workers > 0,
            )
            if self._pending_state is not None:
                self._loader.generator.set_state(self._pending_state)
                self._pending_state = None
        return self._loader

    def state_dict(self) -> dict[str, Any]:
        """The shuffling generator's state (the next epoch's order and worker seeds depend on it)."""
        if self._loader is None:
            return {}
        return {"generator": self._loader.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("generator") is not None:
            self._pending_state = state["generator"].cpu()

    def batches(self, epoch: int, seed: int, batch_size: int, pin: bool = False) -> Iterator[Batch]:
        for x, y, idx in self._train_loader(seed, batch_size, pin):
            yield Batch(x=x, mask=None, labels=y, index=idx)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Every image once, in dataset order. Arrays with a deterministic transform are sliced and transformed
        a whole batch at a time (no DataLoader workers to start at every evaluation)."""
        ds, tf = self.dataset, self.dataset.transform
        if isinstance(ds.images, np.ndarray) and (tf is None or getattr(tf, "deterministic", False)):
            for s in range(0, len(ds), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(ds.images[s : s + batch_size]))
                index = torch.arange(s, min(s + batch_size, len(ds)))
                yield Batch(
                    x=x if tf is None else tf(x), mask=None, labels=torch.from_numpy(ds.labels[index]), index=index
                )
            return
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=self.num_workers)
        for x, y, idx in loader:
            yield Batch(x=x, mask=None, labels=y, index=idx)


def make_source(dataset: Any, num_workers: int = 0) -> BagSource | ImageSource:
    """The source of a dataset: images → :class:`ImageSource`, bags → :class:`BagSource`.

    Raises:
        TypeError: neither (names what was given and what is accepted).
    """
    if isinstance(dataset, (BagSource, ImageSource)):
        return dataset
    if isinstance(dataset, ImageArrayDataset):
        return ImageSource(dataset, num_workers)
    if hasattr(dataset, "bag_sizes") and hasattr(dataset, "labels"):
        return BagSource(dataset)
    raise TypeError(
        f"cannot train or evaluate on a {type(dataset).__name__}: expected a bag dataset "
        "(lossattn.datasets.BagDataset, a feature folder, a table) or an ImageArrayDataset"
    )
