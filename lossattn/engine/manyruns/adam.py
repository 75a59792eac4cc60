"""Adam for stacked parameters: ``torch._fused_adam_`` (what ``torch.optim.Adam(fused=True)`` runs) on slices.

With one step count per class of runs it is the same update as ``torch.optim.Adam`` with L2 weight decay;
:func:`adam_reference` is that math in plain ops, for builds without the fused kernel.
"""

from __future__ import annotations

import math

import torch

__all__ = ["adam_reference", "fused_adam_available"]


def fused_adam_available() -> bool:
    try:
        p, g = torch.zeros(2), torch.zeros(2)
        torch._fused_adam_(
            [p], [g], [p.clone()], [p.clone()], [], [torch.ones(())],
            lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
        )  # fmt: skip
        return True
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - depends on the torch build
        return False


def adam_reference(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, weight_decay, eps):
    """``torch.optim.Adam`` (single-tensor, L2 weight decay) math; used where the fused kernel is missing."""
    for p, g, m, v, st in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        step = float(st)
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1**step
        bc2_sqrt = math.sqrt(1 - beta2**step)
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bc1)
