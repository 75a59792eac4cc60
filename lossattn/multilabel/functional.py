"""Functional core of multi-label loss-based attention (one attention distribution per label).

A bag carries a *set* of labels, written as a multi-hot vector ``y ∈ {0, 1}^K`` over K target classes
(no background class). The shared linear classifier ``(W ∈ R^{K×D}, b ∈ R^K)`` gives instance logits
``z_itc = h_it·w_c + b_c``, read as K independent sigmoids. Label ``c`` is a binary problem whose two
logits are ``(0, z_itc)`` (a sigmoid is a softmax over ``{0, z}``), so the paper's score
``s = logsumexp over the classes of the problem`` becomes ``s_itc = logsumexp(0, z_itc) = softplus(z_itc)``::

    s_itc = softplus(z_itc)                     ("softplus", default)   or  z_itc   ("logit")
    α_itc = exp(s_itc) / Σ_{t' real} exp(s_it'c)    (masked softmax over the bag, per label)
    h_ic  = Σ_t α_itc h_it                       (one bag embedding per label)
    z_ic  = h_ic·w_c + b_c = Σ_t α_itc z_itc     (bag logit of label c; same W, b)

Loss of a bag with labels ``y_i`` (``BCE(z, y) = softplus(z) − y·z``)::

    L1 = Σ_c BCE(z_ic, y_ic)
    L2 = λ Σ_c R_t(α_itc · BCE(z_itc, y_ic))
    L3 = ω Σ_c R_t((α_itc − α̃_itc)²)

``R_t`` is a sum over the bag's real instances (``"sum"``, the analogue of the paper's Eq. 7, under which
the theorems of ``docs/multilabel.md`` hold) or a mean (``"mean"``, the released code's λ/n_i). With
K = 1 and the softplus score this is exactly the single-label method with two classes whose background
row of the classifier is pinned to zero (see the docs and ``tests/test_multilabel_theorems.py``).

Padded instances get α = 0 exactly and contribute nothing to any output, loss term or gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lossattn import functional as LF

__all__ = [
    "SCORES",
    "MultiLabelAttentionOutput",
    "MultiLabelLossTerms",
    "attention_scores",
    "check_multilabel_targets",
    "multilabel_consistency_cost",
    "multilabel_loss_attention",
    "multilabel_loss_attention_loss",
    "multilabel_loss_attention_terms",
]

SCORES = ("softplus", "logit")


class MultiLabelAttentionOutput(NamedTuple):
    """Output of :func:`multilabel_loss_attention`.

    Attributes:
        bag_logits: ``(B, K)`` per-label bag logits ``z_ic``.
        instance_logits: ``(B, N, K)`` per-label instance logits ``z_itc`` (padded positions hold the logits
            of the zero vector; they are never used).
        weights: ``(B, N, K)`` per-label instance weights ``α_itc``; for every bag and label they sum to 1
            over the real instances and are exactly 0 at padded positions.
    """

    bag_logits: Tensor
    instance_logits: Tensor
    weights: Tensor


class MultiLabelLossTerms(NamedTuple):
    """The three terms, each summed over labels and averaged over the bags of the batch (scalars)."""

    total: Tensor
    bag: Tensor
    instance: Tensor
    consistency: Tensor


def attention_scores(instance_logits: Tensor, score: str = "softplus") -> Tensor:
    """Per-label attention scores ``s_itc`` from the instance logits ``(B, N, K)``.

    ``"softplus"``: ``s = log(1 + e^z)``, the log-sum-exp of the binary problem's logits ``{0, z}`` (the
    faithful analogue of the paper's ``logsumexp_c z_itc``). ``"logit"``: ``s = z`` (α proportional to the
    odds of the label).
    """
    if score == "softplus":
        return F.softplus(instance_logits)
    if score == "logit":
        return instance_logits
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def check_multilabel_targets(target: Tensor, batch_size: int, num_labels: int) -> Tensor:
    """Validate multi-hot bag targets ``(B, K)`` with values in ``{0, 1}``; returns them as a float tensor."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of shape (B, K), got {type(target).__name__}")
    if target.shape != (batch_size, num_labels):
        raise ValueError(
            f"multi-label target must be a multi-hot tensor of shape ({batch_size}, {num_labels}), "
            f"got {tuple(target.shape)}"
        )
    if target.numel() and not bool(((target == 0) | (target == 1)).all()):
        raise ValueError("multi-label target values must be 0 or 1 (a multi-hot vector per bag)")
    return target.float() if not target.is_floating_point() else target


def multilabel_loss_attention(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    score: str = "softplus",
) -> MultiLabelAttentionOutput:
    """Per-label loss-based attention pooling with the bag classifier's own parameters.

    Args:
        features: ``(B, N, D)`` instance features ``h``.
        weight: ``(K, D)`` classifier weight (``nn.Linear`` layout), one row per label.
        bias: ``(K,)`` classifier bias or None.
        mask: ``(B, N)`` bool, True = real instance.
        score: ``"softplus"`` (default) or ``"logit"``, see :func:`attention_scores`.

    Returns:
        :class:`MultiLabelAttentionOutput` with ``bag_logits (B, K)``, ``instance_logits (B, N, K)`` and
        ``weights (B, N, K)``.
    """
    mask = LF.check_bags(features, mask)
    if features.dim() != 3:
        raise ValueError(f"features must have shape (B, N, D), got {tuple(features.shape)}")
    D = features.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != D:
        raise ValueError(
            f"weight must have shape (K, D) = (K, {D}) to match the feature width {D}, got {tuple(weight.shape)}"
        )
    K = weight.shape[0]
    if bias is not None and bias.shape != (K,):
        raise ValueError(f"bias must have shape ({K},), got {tuple(bias.shape)}")
    m = mask.unsqueeze(-1)
    # zero the padding first: whatever it holds must not reach a gradient through 0 · NaN
    features = torch.where(m, features, features.new_zeros(()))
    instance_logits = F.linear(features, weight, bias)  # (B, N, K)
    weights = LF.masked_softmax(attention_scores(instance_logits, score), mask)  # (B, N, K), softmax over N
    # z_ic = (Σ_t α_itc h_it)·w_c + b_c = Σ_t α_itc z_itc because Σ_t α_itc = 1: K·N products instead of K·D
    bag_logits = LF.masked_sum(weights * instance_logits, mask)  # (B, K)
    return MultiLabelAttentionOutput(bag_logits, instance_logits, weights)


def _reduce_instances(values: Tensor, mask: Tensor, reduction: str) -> Tensor:
    # (B, N, K) -> (B, K): a sum (paper's Eq. 7) or a mean (released code) over the real instances
    if reduction not in LF.REDUCTIONS:
        raise ValueError(f"reduction must be one of {LF.REDUCTIONS}, got {reduction!r}")
    return LF.masked_sum(values, mask) if reduction == "sum" else LF.masked_mean(values, mask)


def multilabel_consistency_cost(
    weights: Tensor, ensemble: Tensor, mask: Tensor | None = None, reduction: str = "sum"
) -> Tensor:
    """Per-bag consistency cost ``Σ_c R_t (α_itc − α̃_itc)²`` ``(B,)``; the ensemble ``(B, N, K)`` is a constant."""
    if ensemble.shape != weights.shape:
        raise ValueError(
            f"ensemble must have the shape of the weights {tuple(weights.shape)}, got {tuple(ensemble.shape)}"
        )
    if mask is None:
        mask = LF.default_mask(weights)
    return _reduce_instances((weights - ensemble.detach()) ** 2, mask, reduction).sum(dim=-1)


def multilabel_loss_attention_terms(
    output: MultiLabelAttentionOutput,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    lam: float = 1.0,
    reduction: str = "mean",
    ensemble: Tensor | None = None,
    consistency_weight: float = 0.0,
) -> MultiLabelLossTerms:
    """The multi-label loss split into its terms (each summed over labels, averaged over bags).

    Args:
        output: the result of :func:`multilabel_loss_attention` (or any object with ``bag_logits (B, K)``,
            ``instance_logits (B, N, K)`` and ``weights (B, N, K)``).
        target: ``(B, K)`` multi-hot bag labels.
        mask: ``(B, N)`` bool, True = real instance.
        lam: λ ≥ 0, weight of the fused instance loss.
        reduction: ``"mean"`` or ``"sum"`` over instances (``R_t``).
        ensemble: ``(B, N, K)`` temporal-ensemble targets α̃, or None (no consistency term).
        consistency_weight: ω ≥ 0.

    Returns:
        :class:`MultiLabelLossTerms` of scalars.
    """
    if reduction not in LF.REDUCTIONS:
        raise ValueError(f"reduction must be one of {LF.REDUCTIONS}, got {reduction!r}")
    if lam < 0 or consistency_weight < 0:
        raise ValueError(
            f"lam and consistency_weight must be >= 0, got lam={lam}, consistency_weight={consistency_weight}"
        )
    bag_logits, instance_logits, weights = output.bag_logits, output.instance_logits, output.weights
    B, N, K = instance_logits.shape
    if weights.shape != (B, N, K) or bag_logits.shape != (B, K):
        raise ValueError(
            f"expected bag_logits {(B, K)} and weights {(B, N, K)}, got {tuple(bag_logits.shape)} and "
            f"{tuple(weights.shape)}"
        )
    if mask is None:
        mask = LF.default_mask(instance_logits)
    elif mask.shape != (B, N) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {(B, N)}, got {mask.dtype} {tuple(mask.shape)}")
    y = check_multilabel_targets(target, B, K).to(bag_logits.dtype)
    bag = F.binary_cross_entropy_with_logits(bag_logits, y, reduction="none").sum(dim=-1)  # (B,)
    inst_bce = F.binary_cross_entropy_with_logits(
        instance_logits, y.unsqueeze(1).expand(B, N, K), reduction="none"
    )  # (B, N, K); padding removed by the mask below
    instance = lam * _reduce_instances(weights * inst_bce, mask, reduction).sum(dim=-1)  # (B,)
    if ensemble is not None and consistency_weight > 0:
        consistency = consistency_weight * multilabel_consistency_cost(weights, ensemble, mask, reduction)
    else:
        consistency = torch.zeros_like(bag)
    bag, instance, consistency = bag.mean(), instance.mean(), consistency.mean()
    return MultiLabelLossTerms(bag + instance + consistency, bag, instance, consistency)


def multilabel_loss_attention_loss(output: MultiLabelAttentionOutput, target: Tensor, mask=None, **kwargs) -> Tensor:
    """Scalar multi-label loss (see :func:`multilabel_loss_attention_terms` for the arguments)."""
    return multilabel_loss_attention_terms(output, target, mask, **kwargs).total
