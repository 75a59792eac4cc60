"""Temporal ensembling of instance weights (Laine & Aila 2017), for the consistency cost (Shi et al. 2020, Eq. 7)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["TemporalEnsemble"]


class TemporalEnsemble:
    """Per-instance exponential moving average of attention weights across epochs.

    After every epoch ``A ← β·A + (1 − β)·α`` for each instance of each bag seen in that
    epoch, and the target is the bias-corrected ``α̃ = A / (1 − β^n)`` with ``n`` the
    number of updates that bag has had (so after one epoch ``α̃`` equals that epoch's ``α``).

    Instances are addressed by (bag index in the training set, position in the bag). Storage is
    one flat buffer with per-bag offsets, so bags of any sizes cost ``Σ n_i`` floats.

    Args:
        bag_sizes: number of instances of every training bag, in dataset order.
        momentum: β (the released code used 0.6).
    """

    def __init__(self, bag_sizes: Sequence[int], momentum: float = 0.6) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"TemporalEnsemble momentum must be in [0, 1), got {momentum}")
        sizes = torch.as_tensor(list(bag_sizes), dtype=torch.long)
        if sizes.dim() != 1 or (sizes < 1).any():
            raise ValueError("TemporalEnsemble bag_sizes must be a sequence of positive instance counts")
        self.momentum = float(momentum)
        self.sizes = sizes
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
        self.values = torch.zeros(int(sizes.sum()), dtype=torch.float64)  # A
        self.updates = torch.zeros(len(sizes), dtype=torch.long)  # n per bag
        self._pending = torch.zeros_like(self.values)  # this epoch's α
        self._seen = torch.zeros(len(sizes), dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.sizes)

    def _positions(self, bag_indices: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # flat buffer positions of the real instances of a batch; validates sizes
        bag_indices = torch.as_tensor(bag_indices, dtype=torch.long).cpu()
        mask = mask.cpu()
        if bag_indices.dim() != 1 or mask.dim() != 2 or mask.shape[0] != bag_indices.shape[0]:
            raise ValueError(
                f"expected bag_indices (B,) and mask (B, N), got {tuple(bag_indices.shape)} and {tuple(mask.shape)}"
            )
        if len(bag_indices) and (int(bag_indices.min()) < 0 or int(bag_indices.max()) >= len(self)):
            raise ValueError(f"bag indices must be in 0..{len(self) - 1}, got {bag_indices.tolist()}")
        counts = mask.sum(1)
        expected = self.sizes[bag_indices]
        if not torch.equal(counts, expected):
            bad = torch.nonzero(counts != expected).flatten()[0]
            raise ValueError(
                f"bag {int(bag_indices[bad])} has {int(counts[bad])} real instances in this batch but "
                f"{int(expected[bad])} were registered with the TemporalEnsemble"
            )
        # rank among the bag's real instances, so any padding layout maps to the same slots
        rank = mask.long().cumsum(1) - 1  # (B, N) position among real instances
        pos = self.offsets[bag_indices].unsqueeze(1) + rank.clamp(min=0)
        return pos, mask

    def target(self, bag_indices: Tensor, mask: Tensor) -> Tensor | None:
        """Bias-corrected targets ``α̃ (B, N)`` for a batch; None before any bag was updated.

        Padded positions, and bags that have not been updated yet, get 0. The result lives on
        ``mask``'s device, so it can be passed straight to the loss.
        """
        if not self.ready:
            return None
        device = mask.device
        pos, mask = self._positions(bag_indices, mask)
        n = self.updates[torch.as_tensor(bag_indices, dtype=torch.long).cpu()].to(torch.float64)  # (B,)
        correction = 1.0 - self.momentum**n
        corrected = self.values[pos] / correction.clamp(min=1e-12).unsqueeze(1)  # (B, N)
        corrected = torch.where(mask & (n > 0).unsqueeze(1), corrected, torch.zeros((), dtype=torch.float64))
        return corrected.to(device=device, dtype=torch.float32)

    def record(self, bag_indices: Tensor, weights: Tensor, mask: Tensor) -> None:
        """Store this epoch's weights ``(B, N)`` of a batch (applied at :meth:`step`)."""
        pos, mask = self._positions(bag_indices, mask)
        w = weights.detach().to("cpu", torch.float64)
        self._pending[pos[mask]] = w[mask]
        self._seen[torch.as_tensor(bag_indices, dtype=torch.long).cpu()] = True

    def step(self) -> None:
        """End of epoch: fold the recorded weights into the moving average."""
        seen = self._seen.repeat_interleave(self.sizes)
        beta = self.momentum
        self.values = torch.where(seen, beta * self.values + (1.0 - beta) * self._pending, self.values)
        self.updates += self._seen.long()
        self._seen.zero_()
        self._pending.zero_()

    def merge_pending(self, reduce_sum) -> None:
        """Combine this epoch's records with those of other processes (data-parallel training).

        ``reduce_sum`` sums a tensor over the processes (an all-reduce). Every bag is recorded by exactly one
        process per epoch, so the sum of the pending records is the record of all bags.
        """
        self._pending = reduce_sum(self._pending)
        self._seen = reduce_sum(self._seen.to(torch.float64)) > 0

    @property
    def ready(self) -> bool:
        """True once at least one epoch has been folded in."""
        return bool((self.updates > 0).any())

    def state_dict(self) -> dict:
        return {
            "momentum": self.momentum,
            "sizes": self.sizes.clone(),
            "values": self.values.clone(),
            "updates": self.updates.clone(),
            "pending": self._pending.clone(),
            "seen": self._seen.clone(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> TemporalEnsemble:
        """An ensemble restored from :meth:`state_dict` (its bag sizes come from the state)."""
        ensemble = cls(state["sizes"].tolist(), float(state["momentum"]))
        ensemble.load_state_dict(state)
        return ensemble

    def load_state_dict(self, state: dict) -> None:
        if not torch.equal(state["sizes"], self.sizes):
            raise ValueError("TemporalEnsemble state was saved for different bag sizes")
        self.momentum = float(state["momentum"])
        self.values = state["values"].clone()
        self.updates = state["updates"].clone()
        self._pending = state["pending"].clone()
        self._seen = state["seen"].clone()
