"""The one output type of every MIL model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["MILOutput", "HEADS"]

HEADS = ("softmax", "sigmoid")


@dataclass
class MILOutput:
    """What every model returns.

    Attributes:
        bag_logits: ``(B, K)`` class logits for a softmax head; ``(B, 1)`` positive-class logit for a
            binary sigmoid head.
        weights: ``(B, N)`` instance weights (attention), 0 at padding; None where the method has none.
        instance_logits: ``(B, N, K)`` (or ``(B, N, 1)`` for a sigmoid head) per-instance logits; None
            where the method has none.
        head: ``"softmax"`` or ``"sigmoid"``.
        aux_logits: deep-supervision bag logits (MI-Net DS); when present the loss sums the bag loss
            over these instead of using ``bag_logits``.
    """

    bag_logits: Tensor
    weights: Tensor | None = None
    instance_logits: Tensor | None = None
    head: str = "softmax"
    aux_logits: list[Tensor] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return 2 if self.head == "sigmoid" else self.bag_logits.shape[-1]

    def probabilities(self) -> Tensor:
        """Bag class probabilities ``(B, num_classes)``."""
        if self.head == "sigmoid":
            p = torch.sigmoid(self.bag_logits[:, 0])
            return torch.stack([1.0 - p, p], dim=1)
        return torch.softmax(self.bag_logits, dim=-1)

    def predictions(self) -> Tensor:
        """Predicted bag classes ``(B,)``."""
        return self.probabilities().argmax(dim=-1)

    def instance_probabilities(self) -> Tensor | None:
        """Per-instance class probabilities ``(B, N, num_classes)`` or None."""
        if self.instance_logits is None:
            return None
        if self.head == "sigmoid":
            p = torch.sigmoid(self.instance_logits[..., 0])
            return torch.stack([1.0 - p, p], dim=-1)
        return torch.softmax(self.instance_logits, dim=-1)

    def detach(self) -> MILOutput:
        return MILOutput(
            self.bag_logits.detach(),
            None if self.weights is None else self.weights.detach(),
            None if self.instance_logits is None else self.instance_logits.detach(),
            self.head,
            [a.detach() for a in self.aux_logits],
        )
