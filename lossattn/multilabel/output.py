"""The output type of every multi-label MIL model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MultiLabelOutput"]


@dataclass
class MultiLabelOutput:
    """What every multi-label model returns.

    Attributes:
        bag_logits: ``(B, K)`` per-label logits (K independent sigmoids).
        weights: instance weights, 0 at padding: ``(B, N, K)`` with one distribution per label
            (loss-based attention), ``(B, N)`` with one shared distribution (Ilse et al. attention), or None
            (max/mean pooling).
        instance_logits: ``(B, N, K)`` per-instance label logits, or None.
        head: always ``"multilabel"`` (registry-looping code can skip on it).
    """

    bag_logits: Tensor
    weights: Tensor | None = None
    instance_logits: Tensor | None = None
    head: str = "multilabel"

    @property
    def num_labels(self) -> int:
        return int(self.bag_logits.shape[-1])

    def probabilities(self) -> Tensor:
        """Per-label bag probabilities ``(B, K)`` (they need not sum to 1)."""
        return torch.sigmoid(self.bag_logits)

    def predictions(self, threshold: float = 0.5) -> Tensor:
        """Predicted label sets ``(B, K)`` bool: ``p_ic > threshold``."""
        return self.probabilities() > threshold

    def instance_probabilities(self) -> Tensor | None:
        """Per-instance label probabilities ``(B, N, K)`` or None."""
        return None if self.instance_logits is None else torch.sigmoid(self.instance_logits)

    def label_weights(self) -> Tensor | None:
        """Weights as ``(B, N, K)``: shared weights are repeated for every label; None without weights."""
        if self.weights is None:
            return None
        if self.weights.dim() == 2:
            return self.weights.unsqueeze(-1).expand(*self.weights.shape, self.num_labels)
        return self.weights

    def detach(self) -> MultiLabelOutput:
        return MultiLabelOutput(
            self.bag_logits.detach(),
            None if self.weights is None else self.weights.detach(),
            None if self.instance_logits is None else self.instance_logits.detach(),
            self.head,
        )
