"""Strategies: where the steps of a run happen — one process (:class:`LocalStrategy`) or many (:class:`DDPStrategy`).

A strategy wraps the model for the forward pass, cuts each global batch into this process's share, reduces
what the processes must agree on (epoch statistics, temporal-ensemble records) and says which process
evaluates and writes (the main one).

DDP semantics (:class:`DDPStrategy`, ``W`` processes of one process group):

* ``TrainConfig.batch_size`` is the *global* batch ``B``. Every rank draws the same epoch order; rank ``r``
  trains on ``batch[r::W]`` of each global batch and scales its mean loss by ``len(shard) · W / B``, so the
  gradient DDP averages over the ranks is the gradient of the mean loss over the global batch: with dropout
  0, a run with ``W`` ranks equals the single-process run with batch ``B`` (up to float rounding), also for a
  short last batch or ``B`` not divisible by ``W``. A rank with no bag in a batch (fewer bags than ranks)
  still joins the gradient all-reduce with a zero-weighted step.
* Temporal-ensemble records are summed over the ranks at the end of every epoch (every bag was recorded on
  exactly one rank), so every rank holds the single-process ensemble.
* With ``W > 1`` each rank reseeds its torch RNG every epoch from ``(seed, epoch, rank)``: ranks draw
  different dropout masks and a resumed run is exact; results with dropout then depend on ``W``.
* Rank 0 evaluates, selects and writes; the other ranks only train.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DDPStrategy", "LocalStrategy", "init_distributed", "shard"]


class LocalStrategy:
    """Every step in this process."""

    rank = 0
    world_size = 1
    is_main = True

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the forward pass goes through."""
        return model

    def begin_epoch(self, seed: int, epoch: int) -> None:
        return None

    def batches(self, source, epoch: int, seed: int, batch_size: int, pin: bool) -> Iterator[tuple]:
        """``(batch, loss weight)`` pairs of this process's share of the epoch."""
        for batch in _source_batches(source, epoch, seed, batch_size, pin):
            yield batch, 1.0

    def reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sums over the processes (here: the values themselves)."""
        return list(values)

    def sync_ensemble(self, ensemble) -> None:
        return None


def _source_batches(source, epoch: int, seed: int, batch_size: int, pin: bool):
    return source.batches(epoch, seed, batch_size, pin=pin)


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The bags of one global batch that rank ``rank`` of ``world_size`` trains on (``batch[rank::world_size]``)."""
    return [int(i) for i in batch[rank::world_size]]


class DDPStrategy(LocalStrategy):
    """Steps spread over the ranks of the default process group (see the module doc).

    Outside an initialised process group it behaves as :class:`LocalStrategy` (``world_size`` 1).
    """

    def __init__(self) -> None:
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world_size = 0, 1
        self.is_main = self.rank == 0
        self.device = torch.device("cpu")

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        self.device = device
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device] if device.type == "cuda" else None
        # broadcasts rank 0's parameters and buffers, so every rank starts from the same weights
        return DistributedDataParallel(model, device_ids=device_ids)

    def begin_epoch(self, seed: int, epoch: int) -> None:
        if self.world_size > 1:
            torch.manual_seed(int(np.random.SeedSequence([seed, epoch, self.rank, 0x0DD9]).generate_state(1)[0]))

    def batches(self, source, epoch: int, seed: int, batch_size: int, pin: bool) -> Iterator[tuple]:
        if self.world_size == 1:
            yield from super().batches(source, epoch, seed, batch_size, pin)
            return
        if not hasattr(source, "index_batches"):
            raise ValueError("DDP training supports bag datasets only (image classification runs in one process)")
        plan, weights = [], []
        for global_batch in source.index_batches(epoch, seed, batch_size):
            mine = shard(global_batch, self.rank, self.world_size)
            if mine:
                plan.append(np.asarray(mine))
                weights.append(len(mine) * self.world_size / len(global_batch))
            else:  # fewer bags than ranks: join the all-reduce with a zero-weighted bag
                plan.append(np.asarray(global_batch[:1]))
                weights.append(0.0)
        yield from zip(source.load(plan, epoch, seed, pin), weights, strict=True)

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        # nccl reduces CUDA tensors only; gloo CPU tensors
        moved = tensor.to(self.device) if dist.get_backend() == "nccl" else tensor
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.cpu()

    def reduce_sum(self, values: Sequence[float]) -> list[float]:
        if self.world_size == 1:
            return list(values)
        return self._all_reduce(torch.tensor(list(values), dtype=torch.float64)).tolist()

    def sync_ensemble(self, ensemble) -> None:
        """Every bag was recorded on exactly one rank this epoch: summing the records gives all of them."""
        if self.world_size == 1 or ensemble is None:
            return
        for part in getattr(ensemble, "labels", [ensemble]):  # a labelwise ensemble holds one per label
            part.merge_pending(self._all_reduce)


def init_distributed(backend: str | None = None, device: str = "cpu") -> tuple[int, int, int]:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``...).

    Returns ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` without a launcher (single process).
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size == 1:
        return 0, 1, local_rank
    if backend is None:
        backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size(), local_rank
