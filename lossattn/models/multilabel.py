"""Multi-label MIL models (one sigmoid per label) and their registry entries (tag ``task="multi_label"``).

Every model takes ``x (B, N, *instance_shape)`` and ``mask (B, N)``, returns a
:class:`~lossattn.models.output.MILOutput` with ``head="multilabel"``, and has
``loss(output, target (B, L) multi-hot, mask, ensemble=None, consistency_weight=0.0) -> (loss, terms)``.
They reuse the :class:`~lossattn.models.base.MILModel` plumbing (the extractor runs on the real instances
only). Builders take ``num_classes`` = L, the number of labels (``num_labels`` is accepted as well).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from lossattn import functional as LF
from lossattn.models.base import MILModel
from lossattn.models.extractors import build_extractor
from lossattn.models.output import MILOutput
from lossattn.models.pooling import AttentionPool, create_pool
from lossattn.models.registry import register_model
from lossattn.multilabel import functional as MF

__all__ = [
    "MultiLabelMILModel",
    "LossAttentionMultiLabelMIL",
    "AttentionMultiLabelMIL",
    "EmbeddingPoolMultiLabelMIL",
    "InstancePoolMultiLabelMIL",
]


class MultiLabelMILModel(MILModel):
    """Base class of the multi-label models: K sigmoid outputs, bag loss ``Σ_c BCE(z_ic, y_ic)``.

    Attributes:
        num_labels: K (also stored as ``num_classes``).
        head: ``"multilabel"``.
        weights_per_label: whether the weights are ``(B, N, K)`` (one distribution per label).
    """

    head: str = "multilabel"
    task: str = "multi_label"
    weights_per_label: bool = False  # True: weights (B, N, K), one distribution per label; else (B, N) or none

    def __init__(self, extractor: nn.Module, num_labels: int) -> None:
        if int(num_labels) < 1:
            raise ValueError(f"{type(self).__name__}: num_labels must be >= 1, got {num_labels}")
        super().__init__(extractor, int(num_labels))
        self.num_labels = int(num_labels)

    def loss(
        self,
        output: MILOutput,
        target: Tensor,
        mask: Tensor | None = None,
        *,
        ensemble: Tensor | None = None,
        consistency_weight: float = 0.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss and its named terms (each summed over labels, averaged over bags)."""
        y = MF.check_multilabel_targets(target, output.bag_logits.shape[0], self.num_labels)
        bag = F.binary_cross_entropy_with_logits(output.bag_logits, y.to(output.bag_logits.dtype), reduction="none")
        terms = {"bag": bag.sum(dim=-1).mean()}
        total = terms["bag"]
        if ensemble is not None and consistency_weight > 0 and output.weights is not None:
            if output.weights.dim() == 2:
                cost = LF.consistency_cost(output.weights, ensemble, mask, "sum")
            else:
                cost = MF.multilabel_consistency_cost(output.weights, ensemble, mask, "sum")
            terms["consistency"] = (consistency_weight * cost).mean()
            total = total + terms["consistency"]
        terms["total"] = total
        return total, terms


class LossAttentionMultiLabelMIL(MultiLabelMILModel):
    """Multi-label loss-based attention: one attention distribution per label from the shared classifier.

    Args:
        extractor: instance feature extractor with ``out_features``.
        num_labels: K.
        lam: λ, weight of the fused per-label instance loss.
        reduction: ``"sum"`` (analogue of the paper's Eq. 7; the theorems hold) or ``"mean"`` (released
            code's λ/n_i) over a bag's instances.
        consistency_reduction: reduction of the consistency cost over instances.
        score: ``"softplus"`` (default, the binary log-sum-exp) or ``"logit"``.
    """

    weights_per_label = True

    has_weights = True

    def __init__(
        self,
        extractor: nn.Module,
        num_labels: int = 2,
        lam: float = 0.1,
        reduction: str = "mean",
        consistency_reduction: str = "sum",
        score: str = "softplus",
    ) -> None:
        super().__init__(extractor, num_labels)
        name = type(self).__name__
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise ValueError(f"{name}: lam (λ) must be a finite number >= 0, got {lam!r}")
        if reduction not in LF.REDUCTIONS or consistency_reduction not in LF.REDUCTIONS:
            raise ValueError(
                f"{name}: reductions must be one of {LF.REDUCTIONS}, got {reduction!r}, {consistency_reduction!r}"
            )
        if score not in MF.SCORES:
            raise ValueError(f"{name}: score must be one of {MF.SCORES}, got {score!r}")
        self.lam = float(lam)
        self.reduction = reduction
        self.consistency_reduction = consistency_reduction
        self.score = score
        self.classifier = nn.Linear(self.feature_dim, self.num_labels)

    def pool(self, h: Tensor, mask: Tensor) -> MILOutput:
        out = MF.multilabel_loss_attention(h, self.classifier.weight, self.classifier.bias, mask, score=self.score)
        return MILOutput(out.bag_logits, out.weights, out.instance_logits, head="multilabel")

    def loss(self, output, target, mask=None, *, ensemble=None, consistency_weight=0.0):
        terms = MF.multilabel_loss_attention_terms(
            MF.MultiLabelAttentionOutput(output.bag_logits, output.instance_logits, output.weights),
            target,
            mask,
            lam=self.lam,
            reduction=self.reduction,
        )
        named = {"bag": terms.bag, "instance": terms.instance}
        total = terms.total
        if ensemble is not None and consistency_weight > 0:
            cost = MF.multilabel_consistency_cost(output.weights, ensemble, mask, self.consistency_reduction)
            named["consistency"] = (consistency_weight * cost).mean()
            total = total + named["consistency"]
        named["total"] = total
        return total, named


class AttentionMultiLabelMIL(MultiLabelMILModel):
    """Attention / gated attention (Ilse et al. 2018) with a multi-label sigmoid head.

    One attention distribution shared by all labels (the original network), bag embedding
    ``Σ_t a_t h_t``, then ``Linear(D, K)`` and K sigmoids.
    """

    has_weights = True

    def __init__(self, extractor: nn.Module, num_labels: int = 2, hidden: int = 128, gated: bool = False) -> None:
        super().__init__(extractor, num_labels)
        self.attention = AttentionPool(self.feature_dim, hidden, gated)
        self.classifier = nn.Linear(self.feature_dim, self.num_labels)

    def pool(self, h: Tensor, mask: Tensor) -> MILOutput:
        embedding, weights = self.attention(h, mask)
        return MILOutput(self.classifier(embedding), weights, None, head="multilabel")


class EmbeddingPoolMultiLabelMIL(MultiLabelMILModel):
    """Embedding-level max/mean pooling (MI-Net style) with a multi-label sigmoid head."""

    def __init__(self, extractor: nn.Module, num_labels: int = 2, pool: str = "max") -> None:
        super().__init__(extractor, num_labels)
        self.pooling = create_pool(pool)
        self.classifier = nn.Linear(self.feature_dim, self.num_labels)

    def pool(self, h: Tensor, mask: Tensor) -> MILOutput:
        return MILOutput(self.classifier(self.pooling(h, mask)), None, None, head="multilabel")


class InstancePoolMultiLabelMIL(MultiLabelMILModel):
    """Instance-level max/mean pooling (mi-Net style): per-label instance logits pooled over the bag."""

    def __init__(self, extractor: nn.Module, num_labels: int = 2, pool: str = "max") -> None:
        super().__init__(extractor, num_labels)
        self.pooling = create_pool(pool)
        self.classifier = nn.Linear(self.feature_dim, self.num_labels)

    def pool(self, h: Tensor, mask: Tensor) -> MILOutput:
        instance_logits = self.classifier(h)  # (B, N, K)
        return MILOutput(self.pooling(instance_logits, mask), None, instance_logits, head="multilabel")


# --------------------------------------------------------------------------- registry entries


def _labels(num_classes: int | None, num_labels: int | None) -> int:
    """L from ``num_classes`` (the name every builder shares) or ``num_labels``; they must agree if both given."""
    if num_classes is not None and num_labels is not None and int(num_classes) != int(num_labels):
        raise ValueError(f"num_classes={num_classes} and num_labels={num_labels} disagree; give one (the labels L)")
    chosen = num_labels if num_labels is not None else num_classes
    return 2 if chosen is None else int(chosen)


def _register(name: str, description: str):
    return register_model(name, description, task="multi_label")


@_register(
    "loss_attention_multilabel", "Multi-label loss-based attention: per-label α from the shared sigmoid classifier"
)
def loss_attention_multilabel(
    in_features=None,
    num_classes=None,
    extractor="mlp",
    extractor_kwargs=None,
    lam=0.1,
    reduction="mean",
    consistency_reduction="sum",
    score="softplus",
    num_labels=None,
):
    return LossAttentionMultiLabelMIL(
        build_extractor(extractor, in_features, extractor_kwargs),
        _labels(num_classes, num_labels),
        lam,
        reduction,
        consistency_reduction,
        score,
    )


def _register_attention(name: str, gated: bool, description: str) -> None:
    @_register(name, description)
    def build(in_features=None, num_classes=None, extractor="mlp", extractor_kwargs=None, hidden=128, num_labels=None):
        extractor = build_extractor(extractor, in_features, extractor_kwargs)
        return AttentionMultiLabelMIL(extractor, _labels(num_classes, num_labels), hidden, gated)


_register_attention(
    "attention_multilabel", False, "Attention (Ilse et al. 2018), one shared α, multi-label sigmoid head"
)
_register_attention("gated_attention_multilabel", True, "Gated attention (Ilse et al. 2018), multi-label sigmoid head")


def _register_pooling(name: str, cls: type, pool: str, description: str) -> None:
    @_register(name, description)
    def build(in_features=None, num_classes=None, extractor="mlp", extractor_kwargs=None, num_labels=None):
        extractor = build_extractor(extractor, in_features, extractor_kwargs)
        return cls(extractor, _labels(num_classes, num_labels), pool)


_register_pooling("embedding_max_multilabel", EmbeddingPoolMultiLabelMIL, "max", "Embedding+max, multi-label head")
_register_pooling("embedding_mean_multilabel", EmbeddingPoolMultiLabelMIL, "mean", "Embedding+mean, multi-label head")
_register_pooling("instance_max_multilabel", InstancePoolMultiLabelMIL, "max", "Instance+max: per-label max of logits")
_register_pooling("instance_mean_multilabel", InstancePoolMultiLabelMIL, "mean", "Instance+mean: per-label mean")
