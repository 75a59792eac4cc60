"""The one output type of every registered model: bag, multi-label and image models alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["HEADS", "MILOutput"]

#: ``softmax``: K classes, cross-entropy; ``sigmoid``: binary, one logit; ``multilabel``: L independent sigmoids
HEADS = ("softmax", "sigmoid", "multilabel")


@dataclass
class MILOutput:
    """What every model returns.

    Attributes:
        bag_logits: ``(B, K)`` class logits (softmax head); ``(B, 1)`` positive-class logit (binary sigmoid
            head); ``(B, L)`` per-label logits (multi-label head).
        weights: instance weights, 0 at padding, or None where the method has none: ``(B, N)``, or
            ``(B, N, L)`` for multi-label loss attention (one distribution per label).
        instance_logits: ``(B, N, K)`` (``(B, N, 1)`` for a sigmoid head, ``(B, N, L)`` multi-label)
            per-instance logits, or None.
        head: one of :data:`HEADS`.
        aux_logits: deep-supervision bag logits (MI-Net DS); when present the loss sums the bag loss
            over these instead of using ``bag_logits``.
        grid: ``(h, w)`` of the feature map for image models, whose instances are its positions in
            row-major order (position ``p = i·w + j``); None for bag models.
    """

    bag_logits: Tensor
    weights: Tensor | None = None
    instance_logits: Tensor | None = None
    head: str = "softmax"
    aux_logits: list[Tensor] = field(default_factory=list)
    grid: tuple[int, int] | None = None

    @property
    def num_classes(self) -> int:
        """K (2 for the binary sigmoid head; L for multi-label)."""
        return 2 if self.head == "sigmoid" else int(self.bag_logits.shape[-1])

    def probabilities(self) -> Tensor:
        """Bag probabilities ``(B, K)``: class probabilities, or per-label probabilities (multi-label)."""
        if self.head == "sigmoid":
            p = torch.sigmoid(self.bag_logits[:, 0])
            return torch.stack([1.0 - p, p], dim=1)
        if self.head == "multilabel":
            return torch.sigmoid(self.bag_logits)
        return torch.softmax(self.bag_logits, dim=-1)

    def predictions(self, threshold: float = 0.5) -> Tensor:
        """Predicted bag classes ``(B,)``; multi-label: predicted label sets ``(B, L)`` bool (``p > threshold``)."""
        if self.head == "multilabel":
            return self.probabilities() > threshold
        return self.probabilities().argmax(dim=-1)

    def instance_probabilities(self) -> Tensor | None:
        """Per-instance probabilities ``(B, N, K)`` (``(B, N, L)`` multi-label) or None."""
        if self.instance_logits is None:
            return None
        if self.head == "sigmoid":
            p = torch.sigmoid(self.instance_logits[..., 0])
            return torch.stack([1.0 - p, p], dim=-1)
        if self.head == "multilabel":
            return torch.sigmoid(self.instance_logits)
        return torch.softmax(self.instance_logits, dim=-1)

    def label_weights(self) -> Tensor | None:
        """Weights as ``(B, N, L)``: shared ``(B, N)`` weights repeated for every label; None without weights."""
        if self.weights is None:
            return None
        if self.weights.dim() == 2:
            return self.weights.unsqueeze(-1).expand(*self.weights.shape, self.bag_logits.shape[-1])
        return self.weights

    # ------------------------------------------------------------------ image models
    def _as_map(self, values: Tensor) -> Tensor:
        if self.grid is None:
            raise ValueError("this output has no feature-map grid (it was not produced by an image model)")
        h, w = self.grid
        return values.reshape(values.shape[0], h, w)

    def weight_map(self) -> Tensor:
        """Attention weights of an image model as maps ``(B, h, w)``; each map sums to 1.

        Raises:
            ValueError: no grid (a bag model), or a pooling without weights (mean, max): use
                :meth:`localization_map`.
        """
        if self.weights is None:
            raise ValueError("mean and max pooling have no attention weights; use localization_map()")
        return self._as_map(self.weights)

    def localization_map(self, target: Tensor | None = None) -> Tensor:
        """The map used for localization ``(B, h, w)``, each summing to 1.

        The attention weights where the pooling has them; otherwise (mean, max) the class activation map of
        ``target`` (default: the predicted class), turned into a distribution with a softmax over positions.
        """
        if self.weights is not None:
            return self.weight_map()
        if self.instance_logits is None:
            raise ValueError("this output has neither weights nor per-position logits")
        cls = self.predictions() if target is None else target.to(self.bag_logits.device).long()
        n = self.instance_logits.shape[1]
        cam = self.instance_logits.gather(-1, cls.view(-1, 1, 1).expand(-1, n, 1)).squeeze(-1)  # (B, N)
        return self._as_map(torch.softmax(cam, dim=1))

    def detach(self) -> MILOutput:
        return MILOutput(
            self.bag_logits.detach(),
            None if self.weights is None else self.weights.detach(),
            None if self.instance_logits is None else self.instance_logits.detach(),
            self.head,
            [a.detach() for a in self.aux_logits],
            self.grid,
        )
