"""Temporal ensembling of per-label instance weights (the consistency cost of multi-label loss attention)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lossattn.ensemble import TemporalEnsemble

__all__ = ["LabelwiseTemporalEnsemble"]


class LabelwiseTemporalEnsemble:
    """One :class:`~lossattn.ensemble.TemporalEnsemble` per label: ``A_c ← β·A_c + (1 − β)·α_·c`` per epoch.

    Same interface as :class:`~lossattn.ensemble.TemporalEnsemble`, with weights and targets of shape
    ``(B, N, K)``; shared ``(B, N)`` weights (Ilse et al. attention) can use the plain ensemble instead.

    Args:
        bag_sizes: instances of every training bag, in dataset order.
        num_labels: K.
        momentum: β.
    """

    def __init__(self, bag_sizes: Sequence[int], num_labels: int, momentum: float = 0.6) -> None:
        if int(num_labels) < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.labels = [TemporalEnsemble(bag_sizes, momentum) for _ in range(int(num_labels))]

    def __len__(self) -> int:
        return len(self.labels[0])

    @property
    def ready(self) -> bool:
        return self.labels[0].ready

    def target(self, bag_indices: Tensor, mask: Tensor) -> Tensor | None:
        """Bias-corrected targets ``α̃ (B, N, K)``; None before the first epoch was folded in."""
        if not self.ready:
            return None
        return torch.stack([e.target(bag_indices, mask) for e in self.labels], dim=-1)

    def record(self, bag_indices: Tensor, weights: Tensor, mask: Tensor) -> None:
        """Store this epoch's weights ``(B, N, K)`` of a batch."""
        if weights.dim() != 3 or weights.shape[-1] != len(self.labels):
            raise ValueError(f"expected weights (B, N, {len(self.labels)}), got {tuple(weights.shape)}")
        for c, e in enumerate(self.labels):
            e.record(bag_indices, weights[..., c], mask)

    def step(self) -> None:
        for e in self.labels:
            e.step()

    def state_dict(self) -> dict:
        return {"labels": [e.state_dict() for e in self.labels]}

    @classmethod
    def from_state_dict(cls, state: dict) -> LabelwiseTemporalEnsemble:
        """An ensemble restored from :meth:`state_dict` (bag sizes and momentum come from the state)."""
        first = state["labels"][0]
        ensemble = cls(first["sizes"].tolist(), len(state["labels"]), float(first["momentum"]))
        ensemble.load_state_dict(state)
        return ensemble

    def load_state_dict(self, state: dict) -> None:
        if len(state["labels"]) != len(self.labels):
            raise ValueError(f"state holds {len(state['labels'])} labels, this ensemble {len(self.labels)}")
        for e, s in zip(self.labels, state["labels"], strict=True):
            e.load_state_dict(s)
