"""Data sources: how a dataset becomes the engine's batches ``(x, mask, y, index)``.

The loop never looks at datasets directly. A source turns one into batches for training (a seeded order per
epoch) and for evaluation (dataset order, bags of similar size together), and states what the loop needs to
know about the data (instance counts for the temporal ensemble, whether bags were validated when loaded).

* :class:`BagSource` — any bag dataset (:class:`~lossattn.datasets.BaseBagDataset`): bags padded to the
  batch's largest one with a mask (a one-bag batch is the bag's own tensor, no copy). Epoch ``m`` of a run
  with seed ``s`` visits the bags in the order ``np.random.default_rng([s, m]).permutation(n)`` (optionally
  bucketed by size), so the order needs no state (exact resume for free), and a batch can be cut into
  per-rank shards (:meth:`BagSource.index_batches` + :meth:`BagSource.load`). Training batches can be read by
  ``DataLoader`` worker processes while the model trains (``num_workers``): every random choice of a batch
  (order, subsample) is a function of ``(seed, epoch, bag)`` and the workers draw no random number, so the
  batches, their order and the run's result are the same with any number of workers. A feature folder
  validates a file the first time a process reads it: with workers, each worker checks the files it reads
  once (up to ``num_workers`` checks per file over a run). Workers pass the batches through shared memory
  (``/dev/shm`` needs room for ``num_workers × prefetch_factor`` batches).
  Evaluation batches are bounded by their padded instance count (``max_instances``), so evaluation memory
  follows the largest bag, not the batch size times the largest bag.
* :class:`ImageSource` — an :class:`~lossattn.datasets.images.ImageArrayDataset`: minibatches of whole images
  through a ``torch.utils.data.DataLoader`` (augmentation in its workers), whose shuffling generator is part
  of the resume state; the mask is None (every feature-map position is an instance).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn.datasets.bags import BagDataset
from lossattn.datasets.folder import FeatureFolderDataset
from lossattn.datasets.images import ImageArrayDataset
from lossattn.datasets.multilabel import is_multilabel, multilabel_targets
from lossattn.datasets.samplers import BucketBatchSampler
from lossattn.engine.buffers import RecycledBuffers
from lossattn.engine.config import EVAL_MAX_INSTANCES

__all__ = ["Batch", "BagSource", "ImageSource", "eval_index_batches", "make_source", "subsample_positions"]


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

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (called by a ``DataLoader`` with ``pin_memory=True``)."""

        def pin(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.pin_memory()

        return Batch(
            pin(self.x), pin(self.mask), pin(self.labels), pin(self.index),  # type: ignore[arg-type]
            pin(self.targets), pin(self.instance_labels), self.names,
        )  # fmt: skip


class BagSource:
    """Batches of a bag dataset: padded to the largest bag of the batch, with the mask.

    Args:
        dataset: a :class:`~lossattn.datasets.BaseBagDataset`.
        num_workers: training batches are read and collated by that many ``DataLoader`` worker processes
            (persistent for the source's life, ``prefetch_factor`` batches each in flight) while the model
            trains on the previous ones; 0 reads them in the training process. The batches and their order
            are the same either way (see the module doc).
        bucket_by_size: training batches of bags of similar size (see :meth:`index_batches`).
        subsample: train on at most this many instances of each bag per step (see :meth:`collate`).
        prefetch_factor: batches each worker prepares ahead.
    """

    unit = "bags"  # what one item is called in messages

    def __init__(
        self,
        dataset: Any,
        num_workers: int = 0,
        *,
        bucket_by_size: bool = False,
        subsample: int | None = None,
        prefetch_factor: int = 2,
    ) -> None:
        self.dataset = dataset
        self.sizes = np.asarray(dataset.bag_sizes, dtype=np.int64)
        self.labels = np.asarray(dataset.labels, dtype=np.int64)
        self.targets = torch.from_numpy(multilabel_targets(dataset)).float() if is_multilabel(dataset) else None
        # an in-memory BagDataset checked every value when it was built, a feature folder checks each bag as it
        # reads it: the models need not check again (a device sync per step)
        self.validated = isinstance(dataset, (BagDataset, FeatureFolderDataset))
        if int(num_workers) < 0 or int(prefetch_factor) < 1:
            raise ValueError(f"num_workers must be >= 0 and prefetch_factor >= 1, got {num_workers}, {prefetch_factor}")
        if subsample is not None and int(subsample) < 1:
            raise ValueError(f"subsample must be None or a number of instances >= 1, got {subsample!r}")
        self.num_workers = int(num_workers)
        self.prefetch_factor = int(prefetch_factor)
        self.bucket_by_size = bool(bucket_by_size)
        self.subsample = None if subsample is None else int(subsample)
        self._loader: torch.utils.data.DataLoader | None = None
        self._plan: _Plan | None = None
        # bags are read into recycled memory (no page faults for a slide's tens of megabytes every step)
        self.buffers = RecycledBuffers(keep=2)

    def __len__(self) -> int:
        return len(self.dataset)

    def instance_counts(self, model: torch.nn.Module) -> np.ndarray:
        """Instances per bag, in dataset order (the temporal ensemble's layout)."""
        return self.sizes

    def state_dict(self) -> dict[str, Any]:
        return {}  # the epoch order and the subsamples are pure functions of (seed, epoch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    # ------------------------------------------------------------------ training
    def index_batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[np.ndarray]:
        """The bag positions of each training batch of ``epoch``, in order.

        The bags are visited in the order ``np.random.default_rng([seed, epoch]).permutation(n)``, cut into
        batches of ``batch_size``. With ``bucket_by_size`` (and ``batch_size > 1``) the same permutation is
        sorted stably by bag size, cut into batches, and the batches are shuffled with the same generator
        (:class:`~lossattn.datasets.BucketBatchSampler`): bags of similar size share a batch, so little of it
        is padding, and the batch order is still random.
        """
        if self.bucket_by_size and batch_size > 1:
            sampler = BucketBatchSampler(self.sizes, batch_size, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            for batch in sampler:
                yield np.asarray(batch, dtype=np.int64)
            return
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def batches(self, epoch: int, seed: int, batch_size: int, pin: bool = False) -> Iterator[Batch]:
        """The training batches of ``epoch`` (:meth:`index_batches`, loaded by :meth:`load`)."""
        return self.load(list(self.index_batches(epoch, seed, batch_size)), epoch, seed, pin)

    def load(self, plan: Sequence[np.ndarray], epoch: int, seed: int, pin: bool = False) -> Iterator[Batch]:
        """The training batches of the bag positions in ``plan``, in order (in the workers when there are any).

        Each is :meth:`collate` with this epoch's subsample. Workers draw no random number: the subsample of a
        bag is a function of ``(seed, epoch, bag)``, so the batches equal the in-process ones exactly, and the
        loader's own seed comes from a private generator (the training process's torch RNG, which draws the
        dropout masks, is never touched).
        """
        key = (int(seed), int(epoch))
        if self.num_workers == 0:
            for indices in plan:
                yield self.collate(indices, subsample_key=key)
            return
        loader = self._worker_loader(pin)
        self._plan.items = [(np.asarray(i, dtype=np.int64), key) for i in plan]  # type: ignore[union-attr]
        yield from loader

    def _worker_loader(self, pin: bool) -> torch.utils.data.DataLoader:
        if self._loader is None:
            self._plan = _Plan()
            # the workers' copy holds no reference to the loader: no cycle, so the workers stop as soon as the
            # source is dropped (at the end of a fit), not at some later garbage collection
            view = copy.copy(self)
            view._loader = view._plan = None
            self._loader = torch.utils.data.DataLoader(
                _Collated(view),
                batch_size=None,
                sampler=self._plan,
                collate_fn=_as_is,
                num_workers=self.num_workers,
                prefetch_factor=self.prefetch_factor,
                persistent_workers=True,
                pin_memory=pin,
                generator=torch.Generator().manual_seed(0),
            )
        return self._loader

    def collate(self, indices: np.ndarray, subsample_key: tuple[int, int] | None = None) -> Batch:
        """The bags at ``indices`` as one batch, padded to the largest with zeros.

        With ``subsample`` set and ``subsample_key = (seed, epoch)`` given (training), a bag of more than
        ``subsample`` instances keeps ``subsample`` of them, drawn without replacement by
        ``np.random.default_rng([seed, epoch, bag, 0x5AB5])`` and kept in their file order (so patches
        stay in reading order and a bag's draw does not depend on its batch or on the workers).
        """
        if hasattr(self.dataset, "get"):
            bags = [self.dataset.get(int(i), allocate=self.buffers.take) for i in indices]
        else:
            bags = [self.dataset[int(i)] for i in indices]
        xs = [b.x for b in bags]
        insts = [b.instance_labels for b in bags]
        if self.subsample is not None and subsample_key is not None:
            for j, i in enumerate(indices):
                keep = subsample_positions(len(xs[j]), self.subsample, subsample_key, int(i))
                if keep is not None:
                    xs[j], insts[j] = xs[j][keep], insts[j][keep]
        shape = tuple(xs[0].shape[1:])
        B, N = len(bags), max(int(x.shape[0]) for x in xs)
        if B == 1:  # nothing to pad: the bag's own tensor, no copy
            x = xs[0].unsqueeze(0)
            mask = torch.ones((1, N), dtype=torch.bool)
            inst = insts[0].unsqueeze(0)
        else:
            x = torch.zeros((B, N, *shape), dtype=torch.float32)
            mask = torch.zeros((B, N), dtype=torch.bool)
            inst = torch.full((B, N), -1, dtype=torch.long)
            for j, (xj, ij) in enumerate(zip(xs, insts, strict=True)):
                n = int(xj.shape[0])
                x[j, :n] = xj
                mask[j, :n] = True
                inst[j, :n] = ij
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
    def eval_batches(self, batch_size: int, max_instances: int | None = EVAL_MAX_INSTANCES) -> Iterator[Batch]:
        """Every bag once, in order of size (little padding); ``batch.index`` says where each bag belongs.

        A batch holds at most ``batch_size`` bags and at most ``max_instances`` padded instances (bags × its
        largest bag; None: no bound), except a single bag larger than that, which is a batch on its own: the
        memory of a batch follows the largest bag, not ``batch_size`` × the largest bag.
        """
        for indices in eval_index_batches(self.sizes, batch_size, max_instances):
            yield self.collate(indices)


class _Plan(torch.utils.data.Sampler):
    """The worker loader's sampler: this epoch's ``(bag positions, (seed, epoch))`` items, set before each epoch."""

    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, tuple[int, int]]] = []

    def __iter__(self) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class _Collated(torch.utils.data.Dataset):
    """What a worker holds: item ``(bag positions, key)`` → the collated training batch."""

    def __init__(self, source: BagSource) -> None:
        self.source = source

    def __getitem__(self, item: tuple[np.ndarray, tuple[int, int]]) -> Batch:
        indices, key = item
        return self.source.collate(indices, subsample_key=key)


def _as_is(batch: Batch) -> Batch:
    return batch


def subsample_positions(n: int, k: int, key: tuple[int, int], bag: int) -> Tensor | None:
    """The sorted positions of the ``k`` instances of bag ``bag`` (of ``n``) kept at ``key = (seed, epoch)``.

    None when ``n <= k`` (the whole bag). Drawn without replacement by
    ``np.random.default_rng([seed, epoch, bag, 0x5AB5])``.
    """
    if n <= k:
        return None
    seed, epoch = key
    rng = np.random.default_rng([seed, epoch, bag, 0x5AB5])
    return torch.from_numpy(np.sort(rng.choice(n, size=k, replace=False)))


def eval_index_batches(sizes: np.ndarray, batch_size: int, max_instances: int | None) -> Iterator[np.ndarray]:
    """Bag positions in order of size, cut into batches of at most ``batch_size`` bags and ``max_instances``
    padded instances (a lone larger bag is its own batch; see :meth:`BagSource.eval_batches`)."""
    if batch_size < 1 or (max_instances is not None and max_instances < 1):
        raise ValueError(
            f"batch_size and max_instances must be >= 1 (max_instances None: unbounded), got {batch_size}, "
            f"{max_instances}"
        )
    sizes = np.asarray(sizes, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        # ascending sizes: the padded count of order[start:stop + 1] is its length times its last bag's size
        while (
            stop < len(order)
            and stop - start < batch_size
            and (max_instances is None or (stop + 1 - start) * int(sizes[order[stop]]) <= max_instances)
        ):
            stop += 1
        yield order[start:stop]
        start = stop


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

    def eval_batches(self, batch_size: int, max_instances: int | None = None) -> Iterator[Batch]:
        """Every image once, in dataset order (``max_instances`` is not used: every image has the same size). Arrays with a deterministic transform are sliced and transformed
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


def make_source(
    dataset: Any, num_workers: int = 0, *, bucket_by_size: bool = False, subsample: int | None = None
) -> BagSource | ImageSource:
    """The source of a dataset: images → :class:`ImageSource`, bags → :class:`BagSource`.

    ``bucket_by_size`` and ``subsample`` are the training options of :class:`BagSource` (images have neither).

    Raises:
        TypeError: neither (names what was given and what is accepted).
        ValueError: a bag option given for images.
    """
    if isinstance(dataset, (BagSource, ImageSource)):
        return dataset
    if isinstance(dataset, ImageArrayDataset):
        if bucket_by_size or subsample is not None:
            raise ValueError(
                "bucket_by_size and subsample (TrainConfig.bucket_by_size / train_subsample) apply to bags; every "
                f"image has the same size, got bucket_by_size={bucket_by_size}, subsample={subsample}"
            )
        return ImageSource(dataset, num_workers)
    if hasattr(dataset, "bag_sizes") and hasattr(dataset, "labels"):
        return BagSource(dataset, num_workers, bucket_by_size=bucket_by_size, subsample=subsample)
    raise TypeError(
        f"cannot train or evaluate on a {type(dataset).__name__}: expected a bag dataset "
        "(lossattn.datasets.BagDataset, a feature folder, a table) or an ImageArrayDataset"
    )
