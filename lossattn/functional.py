"""Functional core of loss-based attention and the MIL poolings.

Every function takes a batch of bags as ``(B, N, ...)`` tensors plus an optional
``mask (B, N)`` of dtype bool (True = real instance, False = padding). Padded
positions never influence an output, a loss term or a gradient.

The names in ``__all__`` are public and stable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LossAttentionOutput",
    "LossTerms",
    "attention_pool",
    "check_bags",
    "check_targets",
    "consistency_cost",
    "loss_attention",
    "loss_attention_loss",
    "loss_attention_terms",
    "masked_logsumexp",
    "masked_max",
    "masked_mean",
    "masked_softmax",
    "masked_sum",
    "default_mask",
    "input_checks",
    "needs_static_shapes",
    "padding_mask",
    "weighted_sum",
    "REDUCTIONS",
]

REDUCTIONS = ("mean", "sum")


class LossAttentionOutput(NamedTuple):
    """Output of :func:`loss_attention`.

    Attributes:
        bag_logits: ``(B, K)`` logits of the bag embedding under the shared classifier.
        instance_logits: ``(B, N, K)`` logits of every instance under the same classifier
            (padded positions hold the logits of the zero vector; they are never used).
        weights: ``(B, N)`` instance weights α, summing to 1 over each bag's real
            instances and exactly 0 at padded positions.
    """

    bag_logits: Tensor
    instance_logits: Tensor
    weights: Tensor


class LossTerms(NamedTuple):
    """The three terms of Eq. 7, each averaged over the bags of the batch (scalars).

    ``total = bag + instance + consistency`` where ``instance`` already includes λ and
    ``consistency`` already includes the consistency weight ω.
    """

    total: Tensor
    bag: Tensor
    instance: Tensor
    consistency: Tensor


# --------------------------------------------------------------------------- checks


_CHECKS_ENABLED = True


@contextlib.contextmanager
def input_checks(enabled: bool) -> Iterator[None]:
    """Turn the value checks of :func:`check_bags` (empty bags, NaN/inf) off or on inside a block.

    The trainer turns them off for data that a :class:`~lossattn.datasets.BagDataset` has already
    validated, where they would cost a device sync per step. Shape and type checks always run.
    """
    global _CHECKS_ENABLED
    previous, _CHECKS_ENABLED = _CHECKS_ENABLED, bool(enabled)
    try:
        yield
    finally:
        _CHECKS_ENABLED = previous


def needs_static_shapes(*tensors: Tensor | None) -> bool:
    """Whether any of ``tensors`` is a ``torch.func`` transform's wrapper (inside ``vmap`` / ``grad``).

    There a tensor's values cannot steer Python (``bool(t)``, ``t.item()`` and boolean indexing with a
    data-dependent size raise), so the value checks are skipped and the models take their static-shape path
    (:meth:`lossattn.models.base.MILModel.embed`).
    """
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return is_wrapped is not None and any(t is not None and is_wrapped(t) for t in tensors)


def padding_mask(mask: Tensor | None) -> Tensor | None:
    """The mask when it marks padding; None when every instance is real (``mask`` None or all True).

    The poolings take None as "no padding" and then run plain softmax / sum / matrix products, with no
    masking pass over the ``(B, N, D)`` features. Inside a ``torch.func`` transform the mask's values cannot
    be read, so it is returned as it is (the masked path is exact either way).
    """
    if mask is None or needs_static_shapes(mask):
        return mask
    return None if bool(mask.all()) else mask


def default_mask(x: Tensor) -> Tensor:
    """All-True mask ``(B, N)`` for a batch without padding."""
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def check_bags(x: Tensor, mask: Tensor | None = None, *, name: str = "features") -> Tensor:
    """Validate a batch of bags and return its mask.

    Args:
        x: ``(B, N, ...)`` floating tensor.
        mask: optional ``(B, N)`` bool tensor, True = real instance.
        name: how ``x`` is called in error messages.

    Returns:
        The mask ``(B, N)`` (all True when ``mask`` is None).

    Raises:
        TypeError: ``x`` is not a floating tensor or ``mask`` is not bool.
        ValueError: wrong rank or shape, a bag with zero real instances, or NaN/inf
            values at real positions.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.dim() < 3:
        raise ValueError(f"{name} must have shape (B, N, ...) with at least 3 dims, got shape {tuple(x.shape)}")
    if mask is None:
        mask = default_mask(x)
    else:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a bool torch.Tensor of shape (B, N), got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must have dtype torch.bool (True = real instance), got {mask.dtype}")
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match the first two dims of {name} "
                f"{tuple(x.shape)}; expected {tuple(x.shape[:2])}"
            )
    if not _CHECKS_ENABLED or needs_static_shapes(x, mask):
        return mask
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"bag(s) at batch index {empty} have zero real instances; every bag needs at least one")
    real = x if bool(mask.all()) else x[mask]
    # one summing pass: a NaN or inf anywhere makes the sum NaN or inf (torch.isfinite costs several passes on
    # CPU); a sum that is not finite (also when finite values overflow) is checked element by element
    if real.numel() and not bool(torch.isfinite(real.sum())) and not bool(torch.isfinite(real).all()):
        bad = (~torch.isfinite(x.reshape(*x.shape[:2], -1))).any(dim=-1) & mask
        where = torch.nonzero(bad)[:5].tolist()
        raise ValueError(f"{name} contain NaN or inf at (bag, instance) positions {where}")
    return mask


def check_targets(target: Tensor, num_classes: int, batch_size: int) -> Tensor:
    """Validate integer bag targets ``(B,)`` in ``0 … num_classes-1``."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of shape (B,), got {type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != (batch_size,):
        raise ValueError(f"target must have shape ({batch_size},), got {tuple(target.shape)}")
    if (
        target.numel()
        and not needs_static_shapes(target)
        and (int(target.min()) < 0 or int(target.max()) >= num_classes)
    ):
        bad = target[(target < 0) | (target >= num_classes)].unique().tolist()
        raise ValueError(f"target values {bad} are out of range; expected classes 0..{num_classes - 1}")
    return target.long()


# --------------------------------------------------------------------------- masked ops


def _expand_mask(mask: Tensor, x: Tensor) -> Tensor:
    # (B, N) -> (B, N, 1, ...) so it broadcasts over the trailing dims of x
    return mask.reshape(*mask.shape, *([1] * (x.dim() - 2)))


def masked_softmax(scores: Tensor, mask: Tensor | None = None, dim: int = 1) -> Tensor:
    """Softmax over the instances of each bag, exactly 0 at padded positions.

    ``softmax(s)_t = exp(s_t - m) / Σ_{t' real} exp(s_t' - m)`` with ``m`` the bag's max real score
    (computed in log space, so scores of any magnitude are safe).

    Args:
        scores: ``(B, N)`` or ``(B, N, C)`` scores.
        mask: ``(B, N)`` bool, True = real instance.
        dim: the instance dimension (1).

    Returns:
        Tensor of the shape of ``scores``.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    m = _expand_mask(mask, scores)
    filled = scores.masked_fill(~m, float("-inf"))
    # where() instead of multiplication so padded positions carry no gradient path at all
    return torch.where(m, torch.softmax(filled, dim=dim), torch.zeros((), dtype=scores.dtype, device=scores.device))


def masked_logsumexp(scores: Tensor, mask: Tensor | None = None, dim: int = 1) -> Tensor:
    """``log Σ_{t real} exp(s_t)`` over the instance dimension."""
    if mask is None:
        return torch.logsumexp(scores, dim=dim)
    return torch.logsumexp(scores.masked_fill(~_expand_mask(mask, scores), float("-inf")), dim=dim)


def masked_sum(x: Tensor, mask: Tensor | None = None, dim: int = 1) -> Tensor:
    """Sum over the real instances. ``x (B, N, ...)`` → ``(B, ...)``."""
    if mask is None:
        return x.sum(dim=dim)
    m = _expand_mask(mask, x)
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor | None = None, dim: int = 1) -> Tensor:
    """Mean over the real instances. ``x (B, N, ...)`` → ``(B, ...)``."""
    if mask is None:
        return x.mean(dim=dim)
    counts = mask.sum(dim=1).to(x.dtype).reshape(-1, *([1] * (x.dim() - 2)))
    return masked_sum(x, mask, dim=dim) / counts


def masked_max(x: Tensor, mask: Tensor | None = None, dim: int = 1) -> Tensor:
    """Maximum over the real instances. ``x (B, N, ...)`` → ``(B, ...)``."""
    if mask is None:
        return x.amax(dim=dim)
    return x.masked_fill(~_expand_mask(mask, x), float("-inf")).amax(dim=dim)


def attention_pool(features: Tensor, scores: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Softmax-attention pooling with given scores (Ilse et al. 2018 style).

    ``α = masked_softmax(scores)``, ``h = Σ_t α_t h_t``.

    Args:
        features: ``(B, N, D)`` instance features.
        scores: ``(B, N)`` unnormalised attention scores.
        mask: ``(B, N)`` bool.

    Returns:
        ``(embedding (B, D), weights (B, N))``.
    """
    weights = masked_softmax(scores, mask)  # (B, N)
    if mask is not None:  # padding may hold anything (NaN too): it must not reach the sum through 0 · NaN
        features = torch.where(_expand_mask(mask, features), features, features.new_zeros(()))
    return weighted_sum(weights, features), weights


def weighted_sum(weights: Tensor, features: Tensor) -> Tensor:
    """``Σ_t w_t h_t`` per bag as one batched matrix product: ``(B, N)`` × ``(B, N, D)`` → ``(B, D)``.

    ``torch.bmm(w (B, 1, N), h (B, N, D))`` reads the features once and materialises nothing of size
    ``(B, N, D)``, in the forward pass and in the backward pass (``∂/∂w = h · g``, ``∂/∂h = w ⊗ g``), where
    ``(w[..., None] * h).sum(1)`` writes a ``(B, N, D)`` product first. Padded positions must hold weight 0
    and finite features (the poolings zero them when there is padding).
    """
    if weights.dtype != features.dtype:  # autocast leaves softmax weights in float32
        weights = weights.to(features.dtype)
    return torch.bmm(weights.unsqueeze(1), features).squeeze(1)  # (B, 1, N) @ (B, N, D) -> (B, D)


# --------------------------------------------------------------------------- loss-based attention


def loss_attention(
    features: Tensor, weight: Tensor, bias: Tensor | None = None, mask: Tensor | None = None
) -> LossAttentionOutput:
    """Loss-based attention pooling with the bag classifier's own parameters (Shi et al. 2020, Sec. 3).

    Equations::

        z_itc = h_it · w_c + b_c                      (instance logits)
        s_it  = logsumexp_c z_itc
        α_it  = exp(s_it) / Σ_{t' real} exp(s_it')   (masked softmax)
        h_i   = Σ_t α_it h_it                         (bag embedding)
        z_i   = h_i · W + b = Σ_t α_it z_it            (bag logits)

    The bag logits are computed as ``Σ_t α_it z_it`` (equal to ``W h_i + b`` because the weights sum to 1):
    a product of the ``(B, N, K)`` instance logits, so neither the forward nor the backward pass makes
    another pass over the ``(B, N, D)`` features than the instance logits' own product and its gradient.
    With ``mask`` None (no padding) no masking runs at all.

    Args:
        features: ``(B, N, D)`` instance features ``h``.
        weight: ``(K, D)`` classifier weight (``nn.Linear`` layout).
        bias: ``(K,)`` classifier bias or None.
        mask: ``(B, N)`` bool, True = real instance.

    Returns:
        :class:`LossAttentionOutput` with ``bag_logits (B, K)``, ``instance_logits (B, N, K)``
        and ``weights (B, N)``.
    """
    check_bags(features, mask)
    if features.dim() != 3:
        raise ValueError(f"features must have shape (B, N, D), got {tuple(features.shape)}")
    B, N, D = features.shape
    if weight.dim() != 2 or weight.shape[1] != D:
        raise ValueError(
            f"weight must have shape (K, D) = (K, {D}) to match the feature width {D}, got {tuple(weight.shape)}"
        )
    K = weight.shape[0]
    if bias is not None and bias.shape != (K,):
        raise ValueError(f"bias must have shape ({K},), got {tuple(bias.shape)}")
    if mask is not None:
        # zero the padding first: whatever it holds (check_bags allows NaN/inf there) must not reach the
        # classifier's gradient through 0 · NaN
        features = torch.where(_expand_mask(mask, features), features, features.new_zeros(()))
    instance_logits = F.linear(features, weight, bias)  # (B, N, K)
    scores = torch.logsumexp(instance_logits, dim=-1)  # (B, N)
    weights = masked_softmax(scores, mask)  # (B, N), 0 at padding
    bag_logits = weighted_sum(weights, instance_logits)  # (B, K) = W (Σ_t α_t h_t) + b
    return LossAttentionOutput(bag_logits, instance_logits, weights)


def _reduce_instances(values: Tensor, mask: Tensor, reduction: str) -> Tensor:
    # (B, N) -> (B,): a sum over a bag's real instances (the paper's Eq. 7) or a mean (the released code)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return masked_sum(values, mask) if reduction == "sum" else masked_mean(values, mask)


def consistency_cost(weights: Tensor, ensemble: Tensor, mask: Tensor | None = None, reduction: str = "sum") -> Tensor:
    """Per-bag squared distance of the weights to their temporal ensemble.

    ``R_t (α_it − α̃_it)²`` with ``R_t`` a sum or a mean over the real instances.

    Args:
        weights: ``(B, N)`` current weights α.
        ensemble: ``(B, N)`` ensemble targets α̃ (treated as constants).
        mask: ``(B, N)`` bool.
        reduction: ``"sum"`` or ``"mean"`` over instances.

    Returns:
        ``(B,)`` per-bag cost.
    """
    if ensemble.shape != weights.shape:
        raise ValueError(
            f"ensemble must have the shape of the weights {tuple(weights.shape)}, got {tuple(ensemble.shape)}"
        )
    if mask is None:
        mask = default_mask(weights.unsqueeze(-1))
    return _reduce_instances((weights - ensemble.detach()) ** 2, mask, reduction)


def loss_attention_terms(
    output: LossAttentionOutput,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    lam: float = 1.0,
    reduction: str = "mean",
    ensemble: Tensor | None = None,
    consistency_weight: float = 0.0,
) -> LossTerms:
    """The loss of Eq. 7, split into its terms (each averaged over the bags of the batch).

    Per bag ``i`` of class ``k``::

        L1 = CE(z_i, k)
        L2 = λ · R_t(α_it · CE(z_it, k))
        L3 = ω · R_t((α_it − α̃_it)²)

    where ``R_t`` is a sum over the bag's real instances (``reduction="sum"``, the paper's Eq. 7)
    or a mean (``reduction="mean"``, the authors' released code, i.e. λ/n_i).

    Args:
        output: the result of :func:`loss_attention` (or any object with ``bag_logits``,
            ``instance_logits`` and ``weights``).
        target: ``(B,)`` integer bag classes.
        mask: ``(B, N)`` bool, True = real instance.
        lam: λ, weight of the fused instance loss (≥ 0).
        reduction: ``"mean"`` or ``"sum"`` over instances.
        ensemble: ``(B, N)`` temporal-ensemble targets α̃, or None (no consistency term).
        consistency_weight: ω ≥ 0.

    Returns:
        :class:`LossTerms` of scalars.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if lam < 0 or consistency_weight < 0:
        raise ValueError(
            f"lam and consistency_weight must be >= 0, got lam={lam}, consistency_weight={consistency_weight}"
        )
    bag_logits, instance_logits, weights = output.bag_logits, output.instance_logits, output.weights
    B, N, K = instance_logits.shape
    if mask is None:
        mask = default_mask(instance_logits)
    elif mask.shape != (B, N) or mask.dtype != torch.bool:
        # a (1, N) mask would otherwise broadcast silently over the batch
        raise ValueError(f"mask must be a bool tensor of shape {(B, N)}, got {mask.dtype} {tuple(mask.shape)}")
    target = check_targets(target, K, B)
    bag_ce = F.cross_entropy(bag_logits, target, reduction="none")  # (B,)
    # CE_t = logsumexp_c z_tc − z_tk, computed for every position; padding is removed by the mask
    instance_ce = torch.logsumexp(instance_logits, dim=-1) - instance_logits.gather(
        -1, target.view(B, 1, 1).expand(B, N, 1)
    ).squeeze(-1)  # (B, N)
    instance = lam * _reduce_instances(weights * instance_ce, mask, reduction)  # (B,)
    if ensemble is not None and consistency_weight > 0:
        consistency = consistency_weight * consistency_cost(weights, ensemble, mask, reduction)
    else:
        consistency = torch.zeros_like(bag_ce)
    bag, instance, consistency = bag_ce.mean(), instance.mean(), consistency.mean()
    return LossTerms(bag + instance + consistency, bag, instance, consistency)


def loss_attention_loss(
    output: LossAttentionOutput,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    lam: float = 1.0,
    reduction: str = "mean",
    ensemble: Tensor | None = None,
    consistency_weight: float = 0.0,
) -> Tensor:
    """Scalar loss of Eq. 7 (see :func:`loss_attention_terms` for the terms and arguments)."""
    return loss_attention_terms(
        output,
        target,
        mask,
        lam=lam,
        reduction=reduction,
        ensemble=ensemble,
        consistency_weight=consistency_weight,
    ).total
