"""Batching bags of different sizes: zero padding plus a boolean mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .bags import Bag

__all__ = ["BagBatch", "collate_bags"]


@dataclass
class BagBatch:
    """A padded batch of ``B`` bags.

    Attributes:
        x: float32 ``(B, Nmax, *instance_shape)``; padded positions are zeros.
        mask: bool ``(B, Nmax)``, True = real instance.
        labels: long ``(B,)`` bag labels.
        instance_labels: long ``(B, Nmax)``; ``-1`` = unknown or padding.
        indices: long ``(B,)`` positions of the bags in their dataset.
        names: ``B`` bag names.
    """

    x: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    instance_labels: torch.Tensor
    indices: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def bag_sizes(self) -> torch.Tensor:
        """long ``(B,)`` number of real instances per bag."""
        return self.mask.sum(dim=1)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BagBatch:
        """Returns a copy with every tensor moved to ``device``."""
        return BagBatch(
            x=self.x.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            instance_labels=self.instance_labels.to(device, non_blocking=non_blocking),
            indices=self.indices.to(device, non_blocking=non_blocking),
            names=list(self.names),
        )

    def pin_memory(self) -> BagBatch:
        """Pins every tensor (called by ``DataLoader(pin_memory=True)``)."""
        return BagBatch(
            x=self.x.pin_memory(),
            mask=self.mask.pin_memory(),
            labels=self.labels.pin_memory(),
            instance_labels=self.instance_labels.pin_memory(),
            indices=self.indices.pin_memory(),
            names=list(self.names),
        )


def collate_bags(bags: Sequence[Bag]) -> BagBatch:
    """Pads a list of bags to the largest one.

    Args:
        bags: ``B >= 1`` bags with the same instance shape.

    Returns:
        A :class:`BagBatch` with ``Nmax = max n_i``.

    Raises:
        ValueError: Empty list or bags with different instance shapes.

    Example:
        >>> loader = DataLoader(ds, batch_size=4, collate_fn=collate_bags)  # doctest: +SKIP
    """
    bags = list(bags)
    if not bags:
        raise ValueError("collate_bags needs at least one bag")
    shape = tuple(bags[0].x.shape[1:])
    for b in bags[1:]:
        if tuple(b.x.shape[1:]) != shape:
            raise ValueError(
                f"cannot batch bag '{b.name}' with instances of shape {tuple(b.x.shape[1:])} together with "
                f"bag '{bags[0].name}' of shape {shape}"
            )
    n_max = max(int(b.x.shape[0]) for b in bags)
    batch = len(bags)
    x = torch.zeros((batch, n_max, *shape), dtype=torch.float32)
    mask = torch.zeros((batch, n_max), dtype=torch.bool)
    inst = torch.full((batch, n_max), -1, dtype=torch.long)
    for i, b in enumerate(bags):
        n = int(b.x.shape[0])
        x[i, :n] = b.x
        mask[i, :n] = True
        inst[i, :n] = b.instance_labels
    return BagBatch(
        x=x,
        mask=mask,
        labels=torch.tensor([int(b.label) for b in bags], dtype=torch.long),
        instance_labels=inst,
        indices=torch.tensor([int(b.index) for b in bags], dtype=torch.long),
        names=[b.name for b in bags],
    )
