"""Training schedules of the paper (Shi et al. 2020, supplement; Laine & Aila 2017 style), as pure functions of the epoch."""

from __future__ import annotations

import math

__all__ = ["ramp_up", "ramp_down", "learning_rate", "adam_betas", "consistency_weight"]


def _check_epoch(epoch: float) -> None:
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")


def ramp_up(epoch: float, length: float) -> float:
    """Gaussian ramp-up ``exp(−5 (1 − T)²)`` with ``T = clip(epoch / length, 0, 1)``.

    A ``length`` of 0 means no ramp-up (always 1).
    """
    _check_epoch(epoch)
    if length < 0:
        raise ValueError(f"ramp-up length must be >= 0, got {length}")
    if length == 0:
        return 1.0
    t = min(max(epoch / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def ramp_down(epoch: float, total_epochs: float, length: float, c: float = 12.5) -> float:
    """Gaussian ramp-down over the last ``length`` of ``total_epochs`` epochs.

    ``exp(−c (1 − T2)²)`` where ``T2`` goes linearly from 1 (at ``total_epochs − length``) to 0 (at
    ``total_epochs``); 1 before the ramp-down starts. ``c`` is 7.5 for CIFAR10-bags and 12.5 for
    image classification.
    """
    _check_epoch(epoch)
    if length < 0 or length > total_epochs:
        raise ValueError(f"ramp-down length must be in [0, total_epochs={total_epochs}], got {length}")
    if length == 0:
        return 1.0
    start = total_epochs - length
    if epoch < start:
        return 1.0
    t2 = max(1.0 - (epoch - start) / length, 0.0)
    return math.exp(-c * (1.0 - t2) ** 2)


def learning_rate(
    epoch: float,
    max_lr: float,
    total_epochs: float,
    rampup_length: float = 0.0,
    rampdown_length: float = 0.0,
    rampdown_c: float = 12.5,
) -> float:
    """``max_lr · ramp_up(epoch) · ramp_down(epoch)``."""
    return max_lr * ramp_up(epoch, rampup_length) * ramp_down(epoch, total_epochs, rampdown_length, rampdown_c)


def adam_betas(
    epoch: float,
    total_epochs: float,
    rampup_length: float = 0.0,
    rampdown_length: float = 0.0,
    rampdown_c: float = 12.5,
    beta1: tuple[float, float] = (0.9, 0.5),
    beta2: tuple[float, float] = (0.99, 0.999),
) -> tuple[float, float]:
    """Adam (β1, β2) for an epoch.

    β1 moves from ``beta1[0]`` to ``beta1[1]`` with the ramp-down
    (``β1 = r·beta1[0] + (1 − r)·beta1[1]``, ``r = ramp_down(epoch)``); β2 is ``beta2[0]`` during
    the ramp-up and ``beta2[1]`` after it. Without ramps both stay at their first value.
    """
    r = ramp_down(epoch, total_epochs, rampdown_length, rampdown_c)
    b1 = r * beta1[0] + (1.0 - r) * beta1[1]
    b2 = beta2[0] if (rampup_length == 0 or epoch < rampup_length) else beta2[1]
    return b1, b2


def consistency_weight(epoch: float, max_weight: float, rampup_length: float) -> float:
    """``ω(m) = max_weight · ramp_up(m)`` (0 when ``max_weight`` is 0)."""
    _check_epoch(epoch)
    if max_weight < 0:
        raise ValueError(f"max consistency weight must be >= 0, got {max_weight}")
    return 0.0 if max_weight == 0 else max_weight * ramp_up(epoch, rampup_length)
