"""Single-label bag models = instance feature extractor + pooling + head, and their registry entries.

Loss-based attention (Shi et al. 2020), attention and gated attention (Ilse et al. 2018) with a softmax or
a binary sigmoid head, and instance-/embedding-level max/mean pooling (mi-Net / MI-Net style).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lossattn import functional as LF
from lossattn.models.base import MILModel, check_head
from lossattn.models.extractors import build_extractor
from lossattn.models.output import MILOutput
from lossattn.models.pooling import AttentionPool, LossAttentionPool, create_pool
from lossattn.models.registry import register_model

__all__ = ["AttentionMIL", "EmbeddingPoolMIL", "InstancePoolMIL", "LossAttentionMIL"]


class LossAttentionMIL(MILModel):
    """Loss-based attention (Shi et al. 2020): weights from the bag classifier's own instance losses.

    Args:
        extractor: instance feature extractor with ``out_features``.
        num_classes: K (softmax head).
        lam: λ, weight of the fused instance loss.
        reduction: ``"sum"`` (paper Eq. 7) or ``"mean"`` (released code) over a bag's instances.
        consistency_reduction: reduction of the consistency cost over instances.
    """

    has_weights = True

    def __init__(
        self,
        extractor: nn.Module,
        num_classes: int = 2,
        lam: float = 0.1,
        reduction: str = "mean",
        consistency_reduction: str = "sum",
    ) -> None:
        super().__init__(extractor, num_classes)
        check_head("softmax", num_classes, type(self).__name__)
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise ValueError(f"LossAttentionMIL: lam (λ) must be a finite number >= 0, got {lam!r}")
        if reduction not in LF.REDUCTIONS or consistency_reduction not in LF.REDUCTIONS:
            raise ValueError(
                f"LossAttentionMIL: reductions must be one of {LF.REDUCTIONS}, got {reduction!r}, "
                f"{consistency_reduction!r}"
            )
        self.lam = float(lam)
        self.reduction = reduction
        self.consistency_reduction = consistency_reduction
        self.attention = LossAttentionPool(self.feature_dim, num_classes)

    @property
    def classifier(self) -> nn.Linear:
        return self.attention.classifier

    supports_instance_chunk = True

    def pool(self, h: Tensor, mask: Tensor | None) -> MILOutput:
        out = self.attention(h, mask)
        return MILOutput(out.bag_logits, out.weights, out.instance_logits, "softmax")

    def instance_outputs(self, h: Tensor) -> Tensor:
        """Instance logits ``z_t = W h_t + b`` ``(M, K)``."""
        return self.classifier(h)

    def pool_outputs(self, u: Tensor, mask: Tensor | None) -> MILOutput:
        """From instance logits ``u (B, N, K)``: ``s = logsumexp_c z``, ``α = softmax(s)``, bag logits ``Σ_t α_t z_t``."""
        weights = LF.masked_softmax(torch.logsumexp(u, dim=-1), mask)  # (B, N)
        return MILOutput(LF.weighted_sum(weights, u), weights, u, "softmax")

    def loss(self, output, target, mask=None, *, ensemble=None, consistency_weight=0.0):
        terms = LF.loss_attention_terms(
            LF.LossAttentionOutput(output.bag_logits, output.instance_logits, output.weights),
            target,
            mask,
            lam=self.lam,
            reduction=self.reduction,
        )
        named = {"bag": terms.bag, "instance": terms.instance}
        total = terms.total
        if ensemble is not None and consistency_weight > 0:
            cost = consistency_weight * LF.consistency_cost(output.weights, ensemble, mask, self.consistency_reduction)
            named["consistency"] = cost.mean()
            total = total + named["consistency"]
        named["total"] = total
        return total, named


class AttentionMIL(MILModel):
    """Attention / gated attention (Ilse et al. 2018) with a softmax or a sigmoid head.

    Args:
        extractor: instance feature extractor.
        num_classes: K (2 for the sigmoid head).
        hidden: width of the attention network (Ilse et al.: 128).
        gated: gated attention.
        head: ``"softmax"`` (cross-entropy) or ``"sigmoid"`` (binary, Bernoulli likelihood).
    """

    has_weights = True

    def __init__(
        self, extractor: nn.Module, num_classes: int = 2, hidden: int = 128, gated: bool = False, head: str = "softmax"
    ) -> None:
        super().__init__(extractor, num_classes)
        width = check_head(head, num_classes, type(self).__name__)
        self.head = head
        self.attention = AttentionPool(self.feature_dim, hidden, gated)
        self.classifier = nn.Linear(self.feature_dim, width)

    supports_instance_chunk = True

    def pool(self, h: Tensor, mask: Tensor | None) -> MILOutput:
        embedding, weights = self.attention(h, mask)
        return MILOutput(self.classifier(embedding), weights, None, self.head)

    def instance_outputs(self, h: Tensor) -> Tensor:
        """The attention score ``a_t`` and the classifier's projection ``y_t = W_c h_t + b_c``: ``(M, 1 + K)``."""
        return torch.cat([self.attention.scores(h).unsqueeze(-1), self.classifier(h)], dim=-1)

    def pool_outputs(self, u: Tensor, mask: Tensor | None) -> MILOutput:
        """From ``u (B, N, 1 + K)``: ``α = softmax(a)``, bag logits ``Σ_t α_t y_t`` (= ``W_c Σ_t α_t h_t + b_c``)."""
        weights = LF.masked_softmax(u[..., 0], mask)  # (B, N)
        return MILOutput(LF.weighted_sum(weights, u[..., 1:]), weights, None, self.head)


class InstancePoolMIL(MILModel):
    """Instance-level pooling (mi-Net style): classify every instance, pool the instance logits.

    ``z_i = pool_t z_it`` with ``pool`` = max or mean over real instances. With a sigmoid head, max
    pooling of logits equals max pooling of the instance probabilities (σ is monotone).
    """

    def __init__(self, extractor: nn.Module, num_classes: int = 2, pool: str = "max", head: str = "softmax"):
        super().__init__(extractor, num_classes)
        width = check_head(head, num_classes, type(self).__name__)
        self.head = head
        self.pooling = create_pool(pool)
        self.classifier = nn.Linear(self.feature_dim, width)

    def pool(self, h: Tensor, mask: Tensor | None) -> MILOutput:
        instance_logits = self.classifier(h)  # (B, N, K)
        return MILOutput(self.pooling(instance_logits, mask), None, instance_logits, self.head)


class EmbeddingPoolMIL(MILModel):
    """Embedding-level pooling (MI-Net style): pool instance features, then classify the bag."""

    def __init__(self, extractor: nn.Module, num_classes: int = 2, pool: str = "max", head: str = "softmax"):
        super().__init__(extractor, num_classes)
        width = check_head(head, num_classes, type(self).__name__)
        self.head = head
        self.pooling = create_pool(pool)
        self.classifier = nn.Linear(self.feature_dim, width)

    def pool(self, h: Tensor, mask: Tensor | None) -> MILOutput:
        return MILOutput(self.classifier(self.pooling(h, mask)), None, None, self.head)


# --------------------------------------------------------------------------- registry entries


@register_model("loss_attention", "Loss-based attention (Shi et al. 2020), shared classifier, fused instance loss")
def loss_attention(
    in_features=None,
    num_classes=2,
    extractor="mlp",
    extractor_kwargs=None,
    lam=0.1,
    reduction="mean",
    consistency_reduction="sum",
):
    return LossAttentionMIL(
        build_extractor(extractor, in_features, extractor_kwargs), num_classes, lam, reduction, consistency_reduction
    )


def _register_attention(name: str, gated: bool, head: str, description: str) -> None:
    @register_model(name, description)
    def build(in_features=None, num_classes=2, extractor="mlp", extractor_kwargs=None, hidden=128, head=head):
        return AttentionMIL(build_extractor(extractor, in_features, extractor_kwargs), num_classes, hidden, gated, head)


_register_attention("attention", False, "softmax", "Attention (Ilse et al. 2018) + softmax/cross-entropy head")
_register_attention("gated_attention", True, "softmax", "Gated attention (Ilse et al. 2018) + softmax head")
_register_attention("attention_sigmoid", False, "sigmoid", "Attention (Ilse et al. 2018) + binary sigmoid head")
_register_attention("gated_attention_sigmoid", True, "sigmoid", "Gated attention + binary sigmoid head")


def _register_pooling(name: str, cls: type, pool: str, head: str, description: str) -> None:
    @register_model(name, description)
    def build(in_features=None, num_classes=2, extractor="mlp", extractor_kwargs=None, head=head):
        return cls(build_extractor(extractor, in_features, extractor_kwargs), num_classes, pool, head)


_register_pooling("instance_max", InstancePoolMIL, "max", "softmax", "Instance+max: classify instances, max-pool")
_register_pooling("instance_mean", InstancePoolMIL, "mean", "softmax", "Instance+mean: classify instances, mean-pool")
_register_pooling("embedding_max", EmbeddingPoolMIL, "max", "softmax", "Embedding+max: max-pool features, classify")
_register_pooling("embedding_mean", EmbeddingPoolMIL, "mean", "softmax", "Embedding+mean: mean-pool features, classify")
_register_pooling("minet_instance", InstancePoolMIL, "max", "sigmoid", "mi-Net (Wang et al. 2018), instance level")
_register_pooling("minet_embedding", EmbeddingPoolMIL, "max", "sigmoid", "MI-Net (Wang et al. 2018), embedding")
