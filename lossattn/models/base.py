"""The base of every model: ``forward(x, mask) = pool(extractor(x[mask]) scattered to (B, N, D), mask)``.

Every model takes ``x (B, N, *instance_shape)`` and ``mask (B, N)`` (True = real instance) and returns a
:class:`~lossattn.models.output.MILOutput`; ``model.loss(output, target, mask, ensemble=, consistency_weight=)``
returns ``(loss, terms)``. The extractor runs on the real instances only (padding never reaches it, so
dropout and batch statistics ignore padding too). Image models override :meth:`MILModel.embed`: their
extractor takes the image and its feature-map positions are the instances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossattn import functional as LF
from lossattn.models.chunked import chunked_instance_outputs
from lossattn.models.output import MILOutput

__all__ = ["MILModel", "bag_loss", "check_head"]

# the heads of single-label models (multi-label models have their own base class)
SINGLE_LABEL_HEADS = ("softmax", "sigmoid")


def check_head(head: str, num_classes: int, owner: str) -> int:
    """Validate a head choice; returns the width of the output layer."""
    if head not in SINGLE_LABEL_HEADS:
        raise ValueError(f"{owner}: unknown head {head!r}; valid heads: {', '.join(SINGLE_LABEL_HEADS)}")
    if num_classes < 2:
        raise ValueError(f"{owner}: num_classes must be >= 2, got {num_classes}")
    if head == "sigmoid":
        if num_classes != 2:
            raise ValueError(f"{owner}: the sigmoid head is binary (num_classes=2), got num_classes={num_classes}")
        return 1
    return num_classes


def bag_loss(bag_logits: Tensor, target: Tensor, head: str) -> Tensor:
    """Per-bag loss ``(B,)``: cross-entropy (softmax head) or Bernoulli likelihood (sigmoid head)."""
    B = bag_logits.shape[0]
    if head == "sigmoid":
        target = LF.check_targets(target, 2, B)
        return F.binary_cross_entropy_with_logits(bag_logits[:, 0], target.to(bag_logits.dtype), reduction="none")
    target = LF.check_targets(target, bag_logits.shape[-1], B)
    return F.cross_entropy(bag_logits, target, reduction="none")


class MILModel(nn.Module):
    """Base class: ``forward(x, mask) = pool(extractor(x[mask]) scattered to (B, N, D), mask)``.

    Subclasses implement :meth:`pool`; :meth:`loss` is the bag loss of the head plus, for models
    with weights, the consistency cost of the weights against their temporal ensemble.
    """

    head: str = "softmax"
    task: str = "single_label"  # the registry tags of the model's entries (see lossattn.models.registry)
    input_kind: str = "instances"
    has_weights: bool = False  # whether outputs carry instance weights (attention); callers ask, never guess
    supports_instance_chunk: bool = False  # whether forward(..., instance_chunk=k) is implemented

    def __init__(self, extractor: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_classes = int(num_classes)
        self.feature_dim = int(extractor.out_features)

    def embed(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Instance features ``h (B, N, D)`` (0 at padding) and the validated mask ``(B, N)``."""
        mask = LF.check_bags(x, mask, name="instances")
        B, N = mask.shape
        if LF.needs_static_shapes(x, mask):
            # inside torch.func.vmap the real instances cannot be gathered (their number is data): the
            # extractor runs on every position (row by row: real rows are unchanged), padding is zeroed
            h = self.extractor(x.reshape(B * N, *x.shape[2:])).reshape(B, N, -1)
            return torch.where(mask.unsqueeze(-1), h, h.new_zeros(())), mask  # (B, N, D)
        if N == 1 or bool(mask.all()):  # no padding: skip the gather/scatter
            return self.extractor(x.reshape(B * N, *x.shape[2:])).reshape(B, N, -1), mask
        real = self.extractor(x[mask])  # (M, D), M = number of real instances
        h = real.new_zeros((B, N, real.shape[-1]))
        return h.index_put((mask,), real), mask  # (B, N, D)

    def pool(self, h: Tensor, mask: Tensor | None) -> MILOutput:
        """The output from instance features ``h (B, N, D)``; ``mask`` is None when the batch has no padding."""
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor | None = None, *, instance_chunk: int | None = None) -> MILOutput:
        """The output of a batch of bags ``x (B, N, ...)`` with ``mask (B, N)`` (None: no padding).

        Args:
            x: the bags.
            mask: True = real instance.
            instance_chunk: run each bag's instances through the model this many at a time with
                recomputation (:mod:`lossattn.models.chunked`): same output and gradients, memory of one chunk.
                Only for the models with ``supports_instance_chunk``.
        """
        if instance_chunk is not None:
            return self.forward_chunked(x, mask, instance_chunk)
        h, mask = self.embed(x, mask)
        # a batch without padding (one bag per step, equal sizes) pools with no masking pass at all
        return self.pool(h, LF.padding_mask(mask))

    def forward_chunked(self, x: Tensor, mask: Tensor | None, chunk: int) -> MILOutput:
        """The chunked forward pass (see :meth:`forward` and :mod:`lossattn.models.chunked`).

        ``pool_outputs(chunked_instance_outputs(instance_outputs ∘ extractor, x, mask, chunk), mask)``.
        """
        if not self.supports_instance_chunk:
            raise ValueError(
                f"{type(self).__name__} cannot run a bag in instance chunks (TrainConfig.instance_chunk); models "
                "that can: loss_attention, attention, gated_attention and their sigmoid-head variants"
            )
        mask = LF.padding_mask(LF.check_bags(x, mask, name="instances"))
        u = chunked_instance_outputs(lambda part: self.instance_outputs(self.extractor(part)), x, mask, chunk)
        return self.pool_outputs(u, mask)

    def instance_outputs(self, h: Tensor) -> Tensor:
        """The per-instance numbers ``u (M, K')`` the output depends on (chunked models; see
        :mod:`lossattn.models.chunked`)."""
        raise NotImplementedError

    def pool_outputs(self, u: Tensor, mask: Tensor | None) -> MILOutput:
        """The output from per-instance numbers ``u (B, N, K')`` (chunked models)."""
        raise NotImplementedError

    def loss(
        self,
        output: MILOutput,
        target: Tensor,
        mask: Tensor | None = None,
        *,
        ensemble: Tensor | None = None,
        consistency_weight: float = 0.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss and its named terms (each averaged over the bags)."""
        # deep supervision: the supervised outputs replace the combined prediction in the loss
        supervised = output.aux_logits or [output.bag_logits]
        per_bag = sum(bag_loss(logits, target, self.head) for logits in supervised)
        terms = {"bag": per_bag.mean()}
        total = terms["bag"]
        if ensemble is not None and consistency_weight > 0 and output.weights is not None:
            cost = consistency_weight * LF.consistency_cost(output.weights, ensemble, mask, "sum")
            terms["consistency"] = cost.mean()
            total = total + terms["consistency"]
        terms["total"] = total
        return total, terms
